"""CPU one job costs the whole service, beside the CPU of the engine alone.

    .venv/bin/python -m bench.job_cpu [--jobs 40] [--compare /path/to/other/checkout] [--media] [--async]

Runs `convertd serve` (API, worker process, fork server, embedded PostgreSQL and Redis),
sends synchronous converts one at a time (with --async: convert, its events until it ends,
then the download, three requests a job), and adds up the CPU time every process of the
service's tree used meanwhile (`/proc/<pid>/stat`: user + system, with what exited children
used). CPU time, unlike wall time, does not grow when other programs share the machine,
so this figure holds on a busy machine. The raw engine (Pillow in this process) is
measured the same way. With --compare, the other checkout's service is measured in the same
run, case by case in turns (e.g. `git worktree add /tmp/before <commit>`).

The PostgreSQL server runs detached from the service's tree: its CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import tempfile
from pathlib import Path

import aiohttp
from PIL import Image

from bench.service import ROOT, Service, ffmpeg_file, photo, running, wav

TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """Seconds of CPU used by `root` and every process below it (dead ones included)."""
    children: dict[int, list[int]] = {}
    spent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        spent[int(entry)] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += spent.get(pid, 0)
        todo += children.get(pid, [])
    return total / TICKS


CASES = {  # name: (input bytes, file name, filetype, output, options, raw engine or None)
    "hash 1 KB": (os.urandom(1024), "a.bin", "hash", "json", {"algorithms": ["sha256"]}, None),
    "0.3 MP JPEG -> WebP": (photo(640, 480), "p.jpg", "image", "webp", {"quality": 80}, 0),
    "2 MP JPEG -> 800 px WebP": (
        photo(1732, 1155),
        "p.jpg",
        "image",
        "webp",
        {"quality": 80, "width": 800},
        800,
    ),
}


def media_cases(tmp: Path) -> dict[str, tuple]:
    """The audio and video families' jobs (their engine is the ffmpeg program: no raw column)."""
    clip = ffmpeg_file(
        tmp / "clip.mp4",
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10:duration=1",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
    )  # fmt: skip
    return {
        "30 s WAV -> MP3": (wav(tmp / "tone.wav").read_bytes(), "tone.wav", "audio", "mp3", {}, None),
        "1 s 320x240 MP4 -> WebM": (clip.read_bytes(), "clip.mp4", "video", "webm", {"preset": "fast"}, None),
    }


def raw_cpu(data: bytes, width: int, jobs: int) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(jobs):
        with Image.open(io.BytesIO(data)) as im:
            if width:
                im.draft("RGB", (width, width * im.height // im.width))  # shrink on load, as a job
                im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
            im.save(io.BytesIO(), "WEBP", quality=80)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / jobs


async def job_cpu(
    http: aiohttp.ClientSession, svc: Service, case: tuple, jobs: int, asynchronous: bool = False
) -> float:
    data, name, filetype, output, options, _ = case
    headers = {"X-API-Key": svc.key}

    async def one() -> None:
        form = aiohttp.FormData()
        form.add_field("file", data, filename=name)
        form.add_field("filetype", filetype)
        form.add_field("output_format", output)
        form.add_field("options", json.dumps(options))
        if not asynchronous:
            form.add_field("wait", "60")
        async with http.post(f"{svc.base}/v1/convert", data=form, headers=headers) as r:
            assert r.status == (202 if asynchronous else 200), await r.text()
            body = await r.read()
        if asynchronous:
            job = json.loads(body)["job_id"]
            async with http.get(f"{svc.base}/v1/events/{job}", headers=headers) as r:
                async for _ in r.content:  # the stream ends with the job
                    pass
            async with http.get(f"{svc.base}/v1/download/{job}", headers=headers) as r:
                assert r.status == 200, await r.text()
                await r.read()

    for _ in range(3):
        await one()  # warm: fork server spare, pools, caches
    before = tree_cpu(svc.pid)
    for _ in range(jobs):
        await one()
    return (tree_cpu(svc.pid) - before) / jobs


async def main(args: argparse.Namespace) -> None:
    cases = dict(CASES)
    if args.media:
        with tempfile.TemporaryDirectory(prefix="jobcpu") as tmp:
            cases.update(media_cases(Path(tmp)))  # (read into memory)
    roots = [("this", ROOT)] + ([("compared", Path(args.compare).resolve())] if args.compare else [])
    with running(roots[0][1]) as first, running(roots[1][1]) if args.compare else running() as second:
        services = [first, second][: len(roots)]
        await asyncio.sleep(20)  # let start-up work (LibreOffice pool, fork server) settle
        how = "asynchronous (convert, events, download)" if args.asynchronous else "synchronous"
        print(f"CPU ms per job, {args.jobs} sequential {how} converts each")
        head = f"{'case':26} {'engine':>7}" + "".join(f" {name:>9} {'-engine':>8}" for name, _ in roots)
        print(head + ("  this/compared" if args.compare else ""))
        async with aiohttp.ClientSession() as http:
            for label, case in cases.items():
                engine = raw_cpu(case[0], case[5], args.jobs) if case[5] is not None else 0.0
                costs = [await job_cpu(http, svc, case, args.jobs, args.asynchronous) for svc in services]
                row = f"{label:26} {1000 * engine:7.1f}"
                row += "".join(f" {1000 * c:9.1f} {1000 * (c - engine):8.1f}" for c in costs)
                if args.compare:
                    row += f"  {costs[0] / costs[1]:13.2f}"
                print(row, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--compare", help="another checkout to measure beside this one")
    parser.add_argument("--media", action="store_true", help="add a WAV -> MP3 and an MP4 -> WebM job")
    parser.add_argument("--async", dest="asynchronous", action="store_true", help="the asynchronous path")
    asyncio.run(main(parser.parse_args()))
