"""Hostile media: playlists that point ffmpeg at other files or URLs, bombs, damaged files.

Each attack file is generated here. Where the attack really works against a bare ffmpeg on
this machine, a control test proves it, so the refusals below are not refusals of a dud.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import ffmpeg
import pytest
from PIL import Image

from converters.base import ConversionError, Limits, Task
from converters.filetypes.audio import AudioConverter
from converters.filetypes.video import VideoConverter
from converters.tools import ffmpeg_run, media, media_probe
from tests.converters.samples_media import FFMPEG, decode, ffprobe, make
from tests.helpers import wait_until_sync

pytestmark = pytest.mark.slow  # ffmpeg attacks, deadlocks and kills

AUDIO, VIDEO = AudioConverter(), VideoConverter()
SECRET_SECONDS = 3.0


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A media file outside every workdir that no job may read."""
    path = tmp_path_factory.mktemp("outside") / "secret.ts"
    make("ts", path, seconds=SECRET_SECONDS, size=(96, 64))
    return path


def playlist(*urls: str) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:10", "#EXT-X-MEDIA-SEQUENCE:0"]
    for url in urls:
        lines += ["#EXTINF:3.0,", url]
    return ("\n".join([*lines, "#EXT-X-ENDLIST"]) + "\n").encode()


def hostile_task(tmp_path: Path, content: bytes, fmt: str, output: str, name: str | None = None) -> Task:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    inp = work / (name or f"input.{fmt}")
    inp.write_bytes(content)
    return Task([inp], fmt, output, {}, work)


def refused(conv, task: Task, match: str) -> ConversionError:
    """check() refuses, convert() alone refuses too, and nothing was written."""
    with pytest.raises(ConversionError, match=match) as first:
        conv.check(task)
    with pytest.raises(ConversionError, match=match):
        conv.convert(task)
    assert sorted(p.name for p in task.workdir.iterdir()) == [task.inputs[0].name]
    return first.value


def bare_ffmpeg(src: Path, out: Path) -> subprocess.CompletedProcess[bytes]:
    """ffmpeg as a naive converter runs it: no whitelists, the demuxer guessed."""
    return subprocess.run(
        [FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-i", str(src), "-map", "0:a:0", str(out)],
        capture_output=True,
        timeout=60,
    )


class Listener:
    """A local TCP port that records whether anything connected to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        self._probes: set[int] = set()  # our own settle() connections, by client port
        self._accepted: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except OSError:
                continue
            self._accepted.add(peer[1])
            if peer[1] not in self._probes:
                self.hits += 1
            conn.close()

    def settle(self) -> None:
        """Return once every connection already made has been counted: a probe of ours is
        accepted after all earlier ones (the backlog is first in, first out)."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            self._probes.add(port)
            probe.connect(("127.0.0.1", self.port))
            wait_until_sync(lambda: port in self._accepted, 10, "the listener took the probe")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


@pytest.fixture
def scan_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Turn off the byte scan, to show the demuxer whitelists hold on their own."""
    monkeypatch.setattr(media_probe, "scan_for_playlists", lambda path: None)


# ------------------------------------------------------------------------- HLS playlists


def test_control_bare_ffmpeg_follows_a_playlist_to_a_local_file(tmp_path, secret) -> None:
    attack = tmp_path / "attack.m3u8"
    attack.write_bytes(playlist(f"file://{secret}"))
    out = tmp_path / "leak.wav"
    assert bare_ffmpeg(attack, out).returncode == 0
    got = decode(out)
    assert abs(got.samples / got.sample_rate - SECRET_SECONDS) < 0.3  # the secret leaked


@pytest.mark.parametrize(
    ("fmt", "conv", "output"),
    [
        ("avi", VIDEO, "mp4"),
        ("mp4", VIDEO, "gif"),
        ("mkv", VIDEO, "mp3"),
        ("ts", AUDIO, "wav"),
        ("mp3", AUDIO, "wav"),
        ("wav", AUDIO, "flac"),
    ],
)
def test_playlist_disguised_as_media_is_refused(tmp_path, secret, fmt, conv, output) -> None:
    task = hostile_task(tmp_path, playlist(f"file://{secret}"), fmt, output)
    err = refused(conv, task, "playlist")
    assert "other files or URLs" in err.message


def test_playlist_named_m3u8_is_refused_even_without_the_scan(tmp_path, secret, scan_disabled) -> None:
    # the exact file the control test leaks with, only declared as what the user claims
    task = hostile_task(tmp_path, playlist(f"file://{secret}"), "mp4", "wav", name="attack.m3u8")
    refused(AUDIO, task, "could not be read as mp4")


@pytest.mark.parametrize(
    "url",
    [
        "concat:{s}|{s}",
        "subfile,,start,0,end,0,,:{s}",
        "file:{s}",
        "crypto+file://{s}",
        "{s}",
    ],
)
@pytest.mark.parametrize("scan", [True, False])
def test_protocol_tricks_inside_playlists(tmp_path, secret, monkeypatch, url, scan) -> None:
    if not scan:
        monkeypatch.setattr(media_probe, "scan_for_playlists", lambda path: None)
    task = hostile_task(tmp_path, playlist(url.format(s=secret)), "ts", "wav", name="attack.m3u8")
    refused(AUDIO, task, "playlist" if scan else "could not be read")


def test_listener_notices_a_connection(listener) -> None:
    # ffmpeg 9 already keeps local playlists to file,crypto,data; older builds fetched URLs.
    # This proves the detector used below would see a fetch.
    socket.create_connection(("127.0.0.1", listener.port)).close()
    listener.settle()
    assert listener.hits == 1


@pytest.mark.parametrize("scan", [True, False])
def test_playlist_urls_are_never_fetched(tmp_path, listener, monkeypatch, scan) -> None:
    if not scan:
        monkeypatch.setattr(media_probe, "scan_for_playlists", lambda path: None)
    task = hostile_task(
        tmp_path, playlist(f"http://127.0.0.1:{listener.port}/a.ts"), "mp4", "mp3", name="attack.m3u8"
    )
    with pytest.raises(ConversionError):
        AUDIO.check(task)
    with pytest.raises(ConversionError):
        AUDIO.convert(task)
    listener.settle()
    assert listener.hits == 0


def test_ffconcat_script_is_refused(tmp_path, secret, scan_disabled) -> None:
    script = f"ffconcat version 1.0\nfile '{secret}'\nfile 'input.mp4'\n".encode()
    refused(VIDEO, hostile_task(tmp_path, script, "mp4", "webm"), "could not be read")


def test_ffconcat_script_is_named_by_the_scan(tmp_path, secret) -> None:
    script = f"ffconcat version 1.0\nfile '{secret}'\n".encode()
    refused(VIDEO, hostile_task(tmp_path, script, "mp4", "webm"), "concat script")


def test_ffmpeg_input_is_pinned_to_one_file_and_demuxer(tmp_path) -> None:
    info = media.MediaInfo("avi", 1.0, None, None)
    stream = ffmpeg_run.input_stream(tmp_path / "concat:x|y.avi", info, media.Window(0, None, 1))
    args = ffmpeg.compile(ffmpeg.output(stream, "out.wav"), cmd="ffmpeg")
    before_input = args[: args.index("-i")]
    pairs = dict(zip(before_input[1::2], before_input[2::2], strict=False))
    assert pairs == {
        "-f": "avi",
        "-format_whitelist": "avi",
        "-protocol_whitelist": "file",
        "-max_pixels": str(media.MAX_PIXELS),
        "-t": f"{media.MAX_DURATION:.3f}",
    }
    assert args[args.index("-i") + 1] == f"file:{(tmp_path / 'concat:x|y.avi').resolve()}"


def test_file_names_that_look_like_protocols_are_plain_files(tmp_path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    inp = make("wav", work / "concat:subfile,,start,0,end,1,,:x.wav")
    task = Task([inp], "wav", "mp3", {}, work)
    AUDIO.check(task)
    assert decode(AUDIO.convert(task).path).audio_codec == "mp3"


# ------------------------------------------------------------------------- AVI GAB2 chunks


def _chunk(fourcc: bytes, data: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def _list(kind: bytes, *parts: bytes) -> bytes:
    body = kind + b"".join(parts)
    return b"LIST" + struct.pack("<I", len(body)) + body


def _gab2(payload: bytes) -> bytes:
    """A GAB2 subtitle packet: ffmpeg's AVI demuxer probes and opens its payload as a file."""
    title = "English".encode("utf-16-le") + b"\0\0"
    return (
        b"GAB2\0" + struct.pack("<HI", 2, len(title)) + title + struct.pack("<HI", 4, len(payload)) + payload
    )


def avi_file(subtitle: bytes | None = None, *, declared: tuple[int, int] = (32, 32)) -> bytes:
    """A raw-video AVI of ten 32x32 frames, optionally with a GAB2 subtitle stream and
    a frame size in its headers other than the real one."""
    w = h = 32
    dw, dh = declared
    frame = bytes((i * 7) % 256 for i in range(w * h * 3))
    n = 10
    streams = 2 if subtitle is not None else 1
    avih = struct.pack("<14I", 100000, 0, 0, 0x10, n, 0, streams, len(frame), dw, dh, 0, 0, 0, 0)
    strh = struct.pack(
        "<4s4sIHHIIIIIIII4h",
        b"vids",
        bytes(4),
        0,
        0,
        0,
        0,
        1,
        10,
        0,
        n,
        len(frame),
        0xFFFFFFFF,
        0,
        0,
        0,
        min(dw, 32767),
        min(dh, 32767),
    )
    strf = struct.pack("<IiiHHIIiiII", 40, dw, dh, 1, 24, 0, len(frame), 0, 0, 0, 0)
    strls = [_list(b"strl", _chunk(b"strh", strh), _chunk(b"strf", strf))]
    movi = [_chunk(b"00db", frame) for _ in range(n)]
    if subtitle is not None:
        strh_s = struct.pack(
            "<4s4sIHHIIIIIIII4h", b"txts", bytes(4), 0, 0, 0, 0, 1, 10, 0, 1, 0, 0xFFFFFFFF, 0, 0, 0, 0, 0
        )
        strls.append(_list(b"strl", _chunk(b"strh", strh_s), _chunk(b"strf", bytes(4))))
        movi.insert(0, _chunk(b"01tx", _gab2(subtitle)))
    body = b"AVI " + _list(b"hdrl", _chunk(b"avih", avih), *strls) + _list(b"movi", *movi)
    return b"RIFF" + struct.pack("<I", len(body)) + body


SRT = b"1\n00:00:00,000 --> 00:00:01,000\nhello from GAB2\n\n"


def test_control_gab2_payload_is_opened_as_a_nested_file(tmp_path) -> None:
    path = tmp_path / "sub.avi"
    path.write_bytes(avi_file(SRT))
    # ffprobe without the whitelists probed the chunk and opened a nested demuxer on it
    subtitles = ffprobe(path, "-select_streams", "s", "-show_entries", "stream=codec_name")["streams"]
    assert [s["codec_name"] for s in subtitles] == ["subrip"]


def test_benign_gab2_subtitles_still_convert(tmp_path) -> None:
    task = hostile_task(tmp_path, avi_file(SRT), "avi", "mp4")
    task.options = {"preset": "fast"}
    VIDEO.check(task)
    got = decode(VIDEO.convert(task).path)
    assert (got.video_codec, got.width, got.frames) == ("h264", 32, 10)


@pytest.mark.parametrize("target", ["file://{s}", "concat:{s}|{s}", "http://127.0.0.1:9/x.ts"])
def test_avi_with_playlist_in_gab2_chunk_is_refused(tmp_path, secret, target) -> None:
    task = hostile_task(tmp_path, avi_file(playlist(target.format(s=secret))), "avi", "mp4")
    refused(VIDEO, task, "playlist")


def test_avi_gab2_playlist_without_the_scan_does_not_leak(tmp_path, secret, scan_disabled) -> None:
    task = hostile_task(tmp_path, avi_file(playlist(f"file://{secret}")), "avi", "mkv")
    task.options = {"preset": "fast"}
    VIDEO.check(task)
    got = decode(VIDEO.convert(task).path)
    # only the AVI's own ten 32x32 frames: nothing of the 96x64, 3 s secret
    assert (got.width, got.height, got.frames, got.audio_codec) == (32, 32, 10, None)


# ------------------------------------------------------------------------- bombs


def _gif_declaring(width: int, height: int) -> bytes:
    frames = [Image.new("P", (4, 4), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", width, height)  # the logical screen size
    return bytes(data)


@pytest.mark.parametrize(
    ("content", "fmt"),
    [
        (_gif_declaring(16000, 16000), "gif"),
        (_gif_declaring(65535, 65535), "gif"),
        (avi_file(declared=(40000, 40000)), "avi"),
        (avi_file(declared=(9000, 9000)), "avi"),
    ],
)
def test_bomb_frame_sizes_are_refused_before_decoding(tmp_path, content, fmt) -> None:
    task = hostile_task(tmp_path, content, fmt, "mp4")
    started = time.monotonic()
    err = refused(VIDEO, task, "million pixel limit")
    assert time.monotonic() - started < 5
    assert err.hint


def test_large_but_allowed_declared_size_is_reported_as_declared(tmp_path) -> None:
    # under the pixel cap the decoder opens, and the size is passed through untouched
    info = media_probe.probe(_write(tmp_path / "big.avi", avi_file(declared=(7680, 4320))), "avi")
    assert info.video is not None and (info.video.width, info.video.height) == (7680, 4320)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------- damaged files


@pytest.fixture(scope="module")
def good_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make("mp4", tmp_path_factory.mktemp("good") / "good.mp4", seconds=2)


def test_truncated_file_fails_clearly(tmp_path, good_mp4) -> None:
    data = good_mp4.read_bytes()
    task = hostile_task(tmp_path, data[: len(data) // 2], "mp4", "mp3")
    err = refused(AUDIO, task, "could not be read as mp4")
    assert "truncated" in err.message


@pytest.mark.parametrize("fmt", ["mp4", "mp3", "wav", "mkv", "aac", "ts"])
def test_random_bytes_fail_clearly(tmp_path, fmt) -> None:
    task = hostile_task(tmp_path, os.urandom(1 << 16), fmt, "flac")
    with pytest.raises(
        ConversionError,
        match=r"could not be read|could not be decoded|"
        r"ffmpeg could not convert|no audio track",
    ):
        AUDIO.check(task)
        AUDIO.convert(task)
    assert not list(task.workdir.glob("converted*"))


def test_empty_file_fails_clearly(tmp_path) -> None:
    refused(AUDIO, hostile_task(tmp_path, b"", "mp3", "wav"), "empty")


def test_picture_declared_as_video_names_what_it_is(tmp_path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    err = refused(VIDEO, hostile_task(tmp_path, buf.getvalue(), "mp4", "webm"), "could not")
    assert "PNG" in (err.hint or "")


def test_container_other_than_declared_is_refused(tmp_path, good_mp4) -> None:
    err = refused(VIDEO, hostile_task(tmp_path, good_mp4.read_bytes(), "avi", "mkv"), "not avi")
    assert "mp4" in err.message and "mp4" in (err.hint or "")


# ------------------------------------------------------------------------- runaway jobs


class _Impatient(VideoConverter):
    limits = Limits(wall_seconds=1)


@pytest.fixture(scope="module")
def slow_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make("mp4", tmp_path_factory.mktemp("slow") / "hd.mp4", size=(1280, 720), seconds=4, audio=False)


def _ffmpeg_pids_in(workdir: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(workdir).encode() in cmd and b"ffmpeg" in cmd:
                pids.append(int(entry.name))
    return pids


def test_wall_time_limit_stops_ffmpeg(tmp_path, slow_input) -> None:
    work = tmp_path / "work"
    work.mkdir()
    inp = work / "input.mp4"
    shutil.copy(slow_input, inp)
    task = Task([inp], "mp4", "mp4", {"codec": "h265", "preset": "slow"}, work)
    started = time.monotonic()
    with pytest.raises(ConversionError, match="took longer than 1 s"):
        _Impatient().convert(task)
    assert time.monotonic() - started < 5
    assert _ffmpeg_pids_in(work) == []


_RUN_FOREVER = """
import sys
from pathlib import Path
from converters.base import Task
from converters.filetypes.video import VideoConverter
work = Path(sys.argv[1])
task = Task([work / "input.mp4"], "mp4", "mp4", {"codec": "h265", "preset": "slow"}, work)
VideoConverter().convert(task)
"""


def test_ffmpeg_dies_with_a_killed_converter(tmp_path, slow_input) -> None:
    # the broken progress pipe and PR_SET_PDEATHSIG both see to it
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(slow_input, work / "input.mp4")
    child = subprocess.Popen(
        [sys.executable, "-c", _RUN_FOREVER, str(work)], cwd=Path(__file__).resolve().parents[3]
    )
    try:
        deadline = time.monotonic() + 20
        while not _ffmpeg_pids_in(work) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _ffmpeg_pids_in(work), "ffmpeg never started"
        child.send_signal(signal.SIGKILL)  # what a sandbox limit does to the converter
        child.wait()
        deadline = time.monotonic() + 5
        while _ffmpeg_pids_in(work) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _ffmpeg_pids_in(work) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_ffmpeg_without_progress_is_stopped(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ffmpeg_run, "STALL_SECONDS", 1.0)
    work = tmp_path / "work"
    work.mkdir()
    fifo = work / "input.wav"
    os.mkfifo(fifo)  # nobody writes: ffmpeg blocks opening it and never reports progress
    info = media.MediaInfo("wav", 1.0, None, media.AudioTrack("pcm_s16le", 44100, 2))
    window = media.Window(0, None, 1.0)
    out = work / "out.mp3"
    stream = ffmpeg.output(ffmpeg_run.input_stream(fifo, info, window)["a:0"], f"file:{out}")
    started = time.monotonic()
    with pytest.raises(ConversionError, match="made no progress for 1 s"):
        ffmpeg_run.run(stream, out, window=window, progress=lambda f: None, limits=Limits())
    assert time.monotonic() - started < 5
    assert _ffmpeg_pids_in(work) == [] and not out.exists()


def test_deadlocked_ffmpeg_is_stopped(tmp_path, monkeypatch) -> None:
    """ffmpeg 9 deadlocks (printing "frame=0" forever) on an MPEG-PS input seeked with an
    input -ss and cut with an output -t. The converters avoid that shape; the watchdog
    catches such hangs anyway."""
    monkeypatch.setattr(ffmpeg_run, "STALL_SECONDS", 1.0)
    work = tmp_path / "work"
    work.mkdir()
    src = make("mpeg", work / "input.mpeg")
    out = work / "out.mkv"
    source = ffmpeg.input(f"file:{src}", ss=0.5)
    stream = ffmpeg.output(
        source["v:0"],
        source["a:0"],
        f"file:{out}",
        t=0.5,
        **{"c:v": "libx264", "c:a": "aac", "preset": "ultrafast"},
    )
    window = media.Window(0.5, 0.5, 0.5)
    # the deadlock is a race inside ffmpeg: some runs end at once with no frame instead
    for _ in range(5):
        try:
            limits = Limits(wall_seconds=30)
            ffmpeg_run.run(stream, out, window=window, progress=lambda f: None, limits=limits, video=True)
        except ConversionError as err:
            if "Nothing could be decoded" in err.message:
                continue  # it did not hang this time (and nothing was kept): try again
            assert "made no progress" in err.message
            assert _ffmpeg_pids_in(work) == [] and not out.exists()
            return
        else:
            break
    pytest.skip("this ffmpeg build did not deadlock on that input")


# ------------------------------------------------------------------------- through the sandbox


async def test_sandbox_refuses_a_playlist_disguised_as_video(tmp_path, secret) -> None:
    from converters.sandbox import parent as sandbox
    from converters.sandbox.failures import SandboxError

    attack = tmp_path / "movie.avi"
    attack.write_bytes(playlist(f"file://{secret}"))
    with pytest.raises(SandboxError) as err:
        await sandbox.run("video", "avi", "mp4", {}, [attack], tmp_path / "job")
    # the service's type sniffing sees text before the converter does
    assert err.value.kind == "converter" and "not an avi" in err.value.message
    assert not list((tmp_path / "job").glob("converted*"))


async def test_sandbox_refuses_a_playlist_hidden_in_an_avi(tmp_path, secret) -> None:
    from converters.sandbox import parent as sandbox
    from converters.sandbox.failures import SandboxError

    attack = tmp_path / "movie.avi"
    attack.write_bytes(avi_file(playlist(f"file://{secret}")))
    with pytest.raises(SandboxError) as err:
        await sandbox.run("video", "avi", "gif", {}, [attack], tmp_path / "job")
    assert err.value.kind == "converter" and "playlist" in err.value.message
    assert not list((tmp_path / "job").glob("converted*"))


async def test_sandbox_refuses_a_bomb(tmp_path) -> None:
    from converters.sandbox import parent as sandbox
    from converters.sandbox.failures import SandboxError

    bomb = tmp_path / "bomb.gif"
    bomb.write_bytes(_gif_declaring(16000, 16000))
    with pytest.raises(SandboxError) as err:
        await sandbox.run("video", "gif", "mp4", {}, [bomb], tmp_path / "job")
    assert err.value.kind == "converter" and "pixel limit" in err.value.message
