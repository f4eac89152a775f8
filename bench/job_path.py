"""What a whole job costs beside the engine alone: the issue's five cases, side by side.

For each case, in turns within one run: the raw engine (Pillow in this process, or the same
ffmpeg with the same arguments), the asynchronous job (POST /v1/convert, then
GET /v1/events/{id} until it ends, then the download) and the synchronous job (POST
/v1/convert with wait, the file in the answer), against `convertd serve` as the README
starts it. Prints medians and the ratio whole job / raw engine (absolute times drift on a
shared machine; ratios measured in one run do not).

    .venv/bin/python -m bench.job_path [--rounds 7] [--case image-2mp ...] [--compare DIR]

--compare DIR also starts the service of another checkout (e.g. `git worktree add
/tmp/before <commit>`) and times its jobs in the same rounds, in turns with this one's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from PIL import Image

from bench.service import FFMPEG, Service, photo, running, video, wav


def pillow(data: bytes, width: int | None) -> Callable[[Path], None]:
    def run(out: Path) -> None:
        with Image.open(io.BytesIO(data)) as im:
            if width:
                im.draft("RGB", (width, width * im.height // im.width))
                im = im.resize((width, round(width * im.height / im.width)), Image.Resampling.LANCZOS)
            im.save(out / "raw.webp", "WEBP", quality=80)

    return run


def ffmpeg_cli(src: Path, name: str, *args: str) -> Callable[[Path], None]:
    def run(out: Path) -> None:
        cmd = [FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-i", str(src), *args, str(out / name)]
        subprocess.run(cmd, check=True)

    return run


@dataclass
class Case:
    name: str
    file_name: str
    data: bytes
    filetype: str
    output_format: str
    options: dict[str, object]
    raw: Callable[[Path], None]

    def job(self, service: Service, *, wait: bool) -> bytes:
        headers = {"X-API-Key": service.key}
        fields = {
            "filetype": self.filetype,
            "output_format": self.output_format,
            "options": json.dumps(self.options),
        }
        if wait:
            fields["wait"] = "60"
        files = {"file": (self.file_name, self.data)}
        r = requests.post(f"{service.base}/v1/convert", headers=headers, files=files, data=fields)
        if wait:
            assert r.status_code == 200, r.text
            return r.content
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        with requests.get(f"{service.base}/v1/events/{job_id}", headers=headers, stream=True) as events:
            for line in events.iter_lines():
                if line.startswith(b"data: ") and json.loads(line[6:])["status"] == "failed":
                    raise RuntimeError(line.decode())
        r = requests.get(f"{service.base}/v1/download/{job_id}", headers=headers)
        assert r.status_code == 200, r.text
        return r.content


def cases(tmp: Path) -> list[Case]:
    big, small = photo(1732, 1155), photo(640, 480)
    audio, clip = wav(tmp / "tone.wav"), video(tmp / "clip.mp4")
    vp9 = ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-crf", "31", "-b:v", "0", "-row-mt", "1",
           "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus", "-f", "webm"]  # fmt: skip
    return [
        Case("image-2mp", "photo.jpg", big, "image", "webp", {"quality": 80}, pillow(big, None)),
        Case(
            "image-2mp-800",
            "photo.jpg",
            big,
            "image",
            "webp",
            {"quality": 80, "width": 800},
            pillow(big, 800),
        ),
        Case("image-0.3mp", "small.jpg", small, "image", "webp", {"quality": 80}, pillow(small, None)),
        Case(
            "wav-mp3",
            "tone.wav",
            audio.read_bytes(),
            "audio",
            "mp3",
            {"bitrate": 192},
            ffmpeg_cli(audio, "raw.mp3", "-b:a", "192k", "-f", "mp3"),
        ),
        Case(
            "720p-vp9",
            "clip.mp4",
            clip.read_bytes(),
            "video",
            "webm",
            {"codec": "vp9", "preset": "fast"},
            ffmpeg_cli(clip, "raw.webm", *vp9),
        ),
    ]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--case", action="append", help="only these cases (repeatable)")
    parser.add_argument("--compare", help="another checkout, its whole jobs timed in the same rounds")
    args = parser.parse_args()
    other = contextlib.nullcontext(None) if not args.compare else running(Path(args.compare).resolve())
    with tempfile.TemporaryDirectory(prefix="cdjp") as tmp_dir, running() as service, other as compared:
        tmp = Path(tmp_dir)
        services = {"": service} | ({"compared ": compared} if compared else {})
        head = f"{'case':16} {'raw ms':>8}"
        for name in services:
            head += f" {name + 'async ms':>18} {'ratio':>6} {name + 'sync ms':>17} {'ratio':>6}"
        print(head)
        for case in cases(tmp):
            if args.case and case.name not in args.case:
                continue
            times: dict[str, list[float]] = {}
            for r in range(args.rounds + 1):  # the first round warms every path up
                # in turns within each round: a drift of the machine's load hits every column
                t = {"raw": timed(lambda c=case: c.raw(tmp))}
                for name, svc in services.items():
                    t[name + "async"] = timed(lambda c=case, s=svc: c.job(s, wait=False))
                    t[name + "sync"] = timed(lambda c=case, s=svc: c.job(s, wait=True))
                if r:
                    for k, v in t.items():
                        times.setdefault(k, []).append(v)
            med = {k: statistics.median(v) * 1000 for k, v in times.items()}
            row = f"{case.name:16} {med['raw']:8.0f}"
            for name in services:
                a, s = med[name + "async"], med[name + "sync"]
                row += f" {a:18.0f} {a / med['raw']:6.2f} {s:17.0f} {s / med['raw']:6.2f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
