"""`convertd convert`, `convertd formats` and `convertd keys jwt`, run as a user runs them: the
real command in a child process against the live test server (its public API only)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pty
import stat
import sys
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from PIL import Image

from app.config import Settings
from tests.conftest import ROOT, Account, png_bytes

# each test runs `convertd` child processes: a Python start with every import, seconds each
pytestmark = pytest.mark.slow


class Ran(NamedTuple):
    code: int
    out: str
    err: str


async def convertd(*argv: str, env: dict[str, str] | None = None) -> Ran:
    """The `convertd` command line in its own process; no database settings unless given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVERTD_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *argv,
        cwd=ROOT,
        env={**clean, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


@pytest.fixture
def client_env(base_url: str, account: Account) -> dict[str, str]:
    return {"CONVERTD_SERVER": base_url, "CONVERTD_API_KEY": account.key}


def pngs(folder: Path, *names: str, size: tuple[int, int] = (64, 48)) -> list[str]:
    for name in names:
        (folder / name).write_bytes(png_bytes(size))
    return [str(folder / n) for n in names]


def webp_size(path: Path) -> tuple[int, int]:
    with Image.open(io.BytesIO(path.read_bytes())) as img:
        assert img.format == "WEBP"
        return img.size


async def test_several_files_convert_at_once_with_options(tmp_path: Path, client_env: dict[str, str]) -> None:
    files = pngs(tmp_path, "a.png", "b.png", "c.png")
    out = tmp_path / "out"
    ran = await convertd(
        "convert", *files, "--to", "webp", "--option", "width=32", "-o", str(out), env=client_env
    )
    assert ran.code == 0, ran
    for name in ("a", "b", "c"):
        assert webp_size(out / f"{name}.webp") == (32, 24)
        # not a terminal: plain lines, one per state change, and where the result went
        assert f"{name}.png: done -> {out / f'{name}.webp'}" in ran.out
    assert "b.png: uploading" in ran.out
    assert not list(tmp_path.glob("*.webp"))  # -o, not beside the inputs


async def test_default_destination_is_beside_the_input_and_options_json(
    tmp_path: Path, client_env: dict[str, str]
) -> None:
    (file,) = pngs(tmp_path, "photo.png")
    ran = await convertd("convert", file, "--to", "webp", "--options", '{"width": 16}', env=client_env)
    assert ran.code == 0, ran
    assert webp_size(tmp_path / "photo.webp") == (16, 12)


async def test_a_failing_file_exits_1_with_its_error_and_hint_and_json_lines(
    tmp_path: Path, client_env: dict[str, str]
) -> None:
    (good,) = pngs(tmp_path, "good.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(png_bytes((400, 300))[:80])  # a PNG's start: sniffs as PNG, cannot decode
    ran = await convertd("convert", good, str(broken), "--to", "webp", "--json", env=client_env)
    assert ran.code == 1, ran
    results = {Path(r["file"]).name: r for r in map(json.loads, ran.out.splitlines())}
    assert set(results) == {"good.png", "broken.png"}
    assert results["good.png"]["ok"] is True and results["good.png"]["status"] == "FINISHED"
    assert results["good.png"]["filetype"] == "image" and results["good.png"]["size"] > 0
    webp_size(Path(results["good.png"]["output"]))
    bad = results["broken.png"]
    assert bad["ok"] is False and bad["error"] and bad["hint"] and bad["job_id"]
    assert bad["status"] == "FAILED" and bad["error_code"] == "CONVERSION_FAILED"
    assert not (tmp_path / "broken.webp").exists()
    # the same run in plain lines prints the error and the hint
    ran = await convertd("convert", str(broken), "--to", "webp", env=client_env)
    assert ran.code == 1
    assert f"broken.png: failed: {bad['error']}" in ran.out and f"broken.png: hint: {bad['hint']}" in ran.out


async def test_what_an_output_lacks_is_told_beside_it(tmp_path: Path, client_env: dict[str, str]) -> None:
    link = zipfile.ZipInfo("passwd")
    link.create_system = 3  # unix: its mode says symbolic link
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "mixed.zip", "w") as zf:
        zf.writestr("kept.txt", b"kept")
        zf.writestr(link, b"/etc/passwd")
    ran = await convertd("convert", str(tmp_path / "mixed.zip"), "--to", "tar", env=client_env)
    assert ran.code == 0, ran
    assert "mixed.zip: note: passwd: symbolic link, not copied" in ran.out
    ran = await convertd("convert", str(tmp_path / "mixed.zip"), "--to", "7z", "--json", env=client_env)
    assert json.loads(ran.out)["notes"] == ["passwd: symbolic link, not copied"], ran


async def test_a_bad_key_exits_2_with_the_servers_message(tmp_path: Path, base_url: str) -> None:
    files = pngs(tmp_path, "a.png")
    ran = await convertd("convert", *files, "--to", "webp", "--server", base_url, "--key", "sk_live_bogus")
    assert ran.code == 2, ran
    assert "error: " in ran.err and "hint: " in ran.err and ran.out == ""
    assert not (tmp_path / "a.webp").exists()
    ran = await convertd("convert", *files, "--to", "webp", env={"CONVERTD_SERVER": base_url})
    assert ran.code == 2 and "No API key" in ran.err and "CONVERTD_API_KEY" in ran.err


async def test_unknown_and_unsupported_formats(tmp_path: Path, client_env: dict[str, str]) -> None:
    files = pngs(tmp_path, "a.png")
    ran = await convertd("convert", *files, "--to", "nosuchformat", env=client_env)
    assert ran.code == 2, ran
    assert "converts nothing to 'nosuchformat'" in ran.err and "convertd formats" in ran.err
    # a format the server knows, but not for this file: that file fails, the run says why
    ran = await convertd("convert", *files, "--to", "mp3", "--json", env=client_env)
    assert ran.code == 1, ran
    (result,) = map(json.loads, ran.out.splitlines())
    assert result["error_code"] == "UNSUPPORTED_CONVERSION" and "png to mp3" in result["error"]
    ran = await convertd("convert", *files, "--to", "webp", "--filetype", "nosuch", env=client_env)
    assert ran.code == 2 and "No filetype 'nosuch'" in ran.err


async def test_usage_and_connection_errors_exit_2(tmp_path: Path, client_env: dict[str, str]) -> None:
    files = pngs(tmp_path, "a.png")
    assert (await convertd("convert", *files, env=client_env)).code == 2  # no --to
    ran = await convertd("convert", str(tmp_path / "missing.png"), "--to", "webp", env=client_env)
    assert ran.code == 2 and "No such file" in ran.err
    ran = await convertd("convert", *files, "--to", "webp", "--options", "{bad", env=client_env)
    assert ran.code == 2 and "not valid JSON" in ran.err
    ran = await convertd("convert", *files, "--to", "webp", "--option", "novalue", env=client_env)
    assert ran.code == 2 and "KEY=VALUE" in ran.err
    unreachable = {**client_env, "CONVERTD_SERVER": "http://127.0.0.1:9"}
    ran = await convertd("convert", *files, "--to", "webp", env=unreachable)
    assert ran.code == 2 and "cannot reach http://127.0.0.1:9" in ran.err and "--server" in ran.err


async def test_no_overwrite_without_force(tmp_path: Path, client_env: dict[str, str]) -> None:
    (file,) = pngs(tmp_path, "a.png")
    first = await convertd("convert", file, "--to", "webp", "--option", "width=20", env=client_env)
    assert first.code == 0, first
    before = (tmp_path / "a.webp").read_bytes()
    again = await convertd("convert", file, "--to", "webp", "--option", "width=40", "--json", env=client_env)
    assert again.code == 1
    (result,) = map(json.loads, again.out.splitlines())
    assert result["error_code"] == "EXISTS" and "--force" in result["hint"] and result["job_id"] is None
    assert (tmp_path / "a.webp").read_bytes() == before
    forced = await convertd(
        "convert", file, "--to", "webp", "--option", "width=40", "--force", env=client_env
    )
    assert forced.code == 0, forced
    assert webp_size(tmp_path / "a.webp") == (40, 30)
    assert not list(tmp_path.glob(".*.part"))


async def test_two_inputs_with_one_result_name_do_not_overwrite_each_other(
    tmp_path: Path, client_env: dict[str, str]
) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a, b = pngs(tmp_path / "x", "same.png")[0], pngs(tmp_path / "y", "same.png")[0]
    out = tmp_path / "out"
    ran = await convertd("convert", a, b, "--to", "webp", "-o", str(out), "--json", env=client_env)
    assert ran.code == 1
    results = [json.loads(line) for line in ran.out.splitlines()]
    assert sorted(r["ok"] for r in results) == [False, True]
    assert [r["error_code"] for r in results if not r["ok"]] == ["EXISTS"]


async def test_progress_bars_on_a_terminal(tmp_path: Path, client_env: dict[str, str]) -> None:
    """A pseudo-terminal as stdout: rich draws a bar per file with its state and percent."""
    files = pngs(tmp_path, "tty-a.png", "tty-b.png")
    leader, follower = pty.openpty()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVERTD_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "convert", *files, "--to", "webp",
        cwd=ROOT, env={**clean, **client_env, "COLUMNS": "120", "TERM": "xterm"},
        stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    await asyncio.gather(asyncio.to_thread(drain), proc.wait())
    os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, screen
    assert "tty-a.png" in screen and "tty-b.png" in screen and "100%" in screen and "done" in screen
    assert "\x1b[" in screen  # drawn with terminal control codes, not plain lines
    assert (tmp_path / "tty-a.webp").exists() and (tmp_path / "tty-b.webp").exists()


async def test_formats_lists_pairs_with_their_options(client_env: dict[str, str]) -> None:
    ran = await convertd("formats", "--filetype", "image", env=client_env)
    assert ran.code == 0, ran
    assert ran.out.startswith("image:\n") and "\naudio:" not in ran.out
    png = next(line for line in ran.out.splitlines() if line.startswith("  png -> ") and "webp" in line)
    assert png
    assert "quality (integer 1..100, default 85)" in ran.out and "fit (inside|outside|" in ran.out
    assert "strip_metadata (boolean, default false)" in ran.out  # as typed: --option strip_metadata=true
    listed = json.loads((await convertd("formats", "--json", env=client_env)).out)
    image = next(g for g in listed if g["filetype"] == "image")
    png_conv = next(c for c in image["conversions"] if c["inputFormat"] == "png")
    assert "webp" in png_conv["outputFormats"]
    assert any(
        o["outputFormat"] == "webp" and "quality" in o["schema"]["properties"] for o in png_conv["options"]
    )
    bad = await convertd("formats", "--key", "sk_live_bogus", "--server", client_env["CONVERTD_SERVER"])
    assert bad.code == 2 and "error:" in bad.err


async def test_keys_jwt_mints_a_token_the_client_and_the_server_accept(
    tmp_path: Path, settings: Settings, base_url: str, account: Account
) -> None:
    operator = {
        "CONVERTD_DATABASE_URL": settings.database_url or "",
        "CONVERTD_REDIS_URL": settings.redis_url or "",
        "CONVERTD_SECRET": settings.secret,
        "CONVERTD_DATA_DIR": str(settings.data_dir),
    }
    minted = await convertd("keys", "jwt", str(account.key_id), "--ttl", "10m", "--json", env=operator)
    assert minted.code == 0, minted
    body: dict[str, Any] = json.loads(minted.out)
    assert body["kid"] == account.kid and body["token"].startswith("eyJ")
    plain = await convertd("keys", "jwt", str(account.key_id), env=operator)
    assert plain.out.strip().count(".") == 2
    (file,) = pngs(tmp_path, "jwt.png")
    ran = await convertd(
        "convert", file, "--to", "webp", env={"CONVERTD_SERVER": base_url, "CONVERTD_API_KEY": body["token"]}
    )
    assert ran.code == 0, ran
    webp_size(tmp_path / "jwt.webp")
    too_long = await convertd("keys", "jwt", str(account.key_id), "--ttl", "2d", env=operator)
    assert too_long.code == 2 and "24h" in too_long.err
    unknown = await convertd("keys", "jwt", "999999", env=operator)
    assert unknown.code == 1 and "Key not found" in unknown.err


async def test_a_reader_that_goes_away_ends_the_command_without_a_traceback(
    client_env: dict[str, str],
) -> None:
    """`convertd formats | head -1`: the whole listing is over 64 KiB, more than a pipe holds."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVERTD_")}
    read_end, write_end = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "formats",
        cwd=ROOT, env={**clean, **client_env}, stdout=write_end, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    os.close(write_end)
    with os.fdopen(read_end, "rb") as head:  # what `head -1` does: one line, then it exits
        assert await asyncio.to_thread(head.readline) == b"archive:\n"
    _, err = await proc.communicate()
    assert proc.returncode == 1
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()
