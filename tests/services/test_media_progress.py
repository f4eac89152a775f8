"""A media job's progress reaches subscribers as it rises, not just pending -> finished."""

from __future__ import annotations

import subprocess
from pathlib import Path

import aiohttp
import imageio_ffmpeg

from tests.conftest import Account, GraphQL, operation
from tests.converters.samples_media import ffprobe
from tests.wsclient import connect, subscribe


def make_video(path: Path, seconds: int = 6) -> None:
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size=640x360:rate=25:duration={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
            "-y",
            str(path),
        ],
        check=True,
    )


async def test_video_progress_rises_over_the_subscription(
    gql: GraphQL, http: aiohttp.ClientSession, base_url: str, account: Account, tmp_path: Path
) -> None:
    source = tmp_path / "clip.mp4"
    make_video(source)
    status, body = await gql.multipart(
        operation("Convert"),
        {
            "input": {
                "file": None,
                "filetype": "video",
                "outputFormat": "webm",
                "options": {"codec": "vp9", "width": 320, "height": 180},
            }
        },
        {"variables.input.file": ("clip.mp4", source.read_bytes())},
        key=account.key,
    )
    assert status == 200, body
    sub, _ = await connect(http, base_url, payload={"apiKey": account.key})
    await subscribe(sub, operation("JobUpdates"), {"jobId": body["data"]["convert"]["id"]})
    updates = [p["data"]["jobUpdates"] for p in await sub.results(timeout=120)]
    assert updates[-1]["status"] == "FINISHED", updates[-1]
    partial = [u["progress"] for u in updates if u["status"] == "PROCESSING" and 0 < u["progress"] < 1]
    assert len(partial) >= 2, [u["progress"] for u in updates]
    assert partial == sorted(partial)

    async with http.get(updates[-1]["downloadUrl"]) as resp:
        (tmp_path / "out.webm").write_bytes(await resp.read())
    got = ffprobe(tmp_path / "out.webm", "-show_entries", "format=duration:stream=codec_name,width,height")
    video = got["streams"][0]
    assert (video["codec_name"], video["width"], video["height"]) == ("vp9", 320, 180)
    assert 5 < float(got["format"]["duration"]) < 7
