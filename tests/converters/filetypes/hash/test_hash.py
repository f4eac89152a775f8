"""converters.filetypes.hash: checksums of any file, checked against hashlib and coreutils."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from converters.base import RequestError, Task
from converters.filetypes.hash import ALGORITHMS, DEFAULT_ALGORITHMS, INPUT_FORMATS, HashConverter
from converters.registry import Registry
from converters.sandbox import parent as sandbox

CONV = HashConverter()
PAIRS = [(s, d) for s, ds in sorted(CONV.pairs().items()) for d in sorted(ds)]


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return os.urandom(70_000)


def run(src: Path, fmt: str, out_fmt: str, workdir: Path, **options: object) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    task = Task([src], fmt, out_fmt, dict(options), workdir)
    CONV.check(task)
    return CONV.convert(task).path


def test_accepts_every_format_the_others_read() -> None:
    assert {"bin", "pdf", "png", "jpg", "mp4", "zip", "docx", "txt", "heic", "xlsx"} <= set(INPUT_FORMATS)


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{s}-{d}" for s, d in PAIRS])
def test_matrix(src: str, dst: str, payload: bytes, tmp_path: Path) -> None:
    path = tmp_path / f"file.{src}"
    path.write_bytes(payload)
    out = run(path, src, dst, tmp_path / "out")
    want = {name: hashlib.new(name, payload).hexdigest() for name in DEFAULT_ALGORITHMS}
    if dst == "json":
        body = json.loads(out.read_text())
        assert body == {"file": path.name, "size": len(payload), **want}
    else:
        assert out.read_text().splitlines() == [
            f"{name.upper()} ({path.name}) = {digest}" for name, digest in want.items()
        ]


@pytest.mark.parametrize("tool", ["md5sum", "sha1sum", "sha256sum", "sha512sum"])
def test_text_output_verifies_with_coreutils(tool: str, tmp_path: Path) -> None:
    if not shutil.which(tool):
        pytest.skip(f"{tool} not installed")
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(5000))
    algorithm = tool.removesuffix("sum")
    out = run(src, "bin", "txt", tmp_path / "out", algorithms=[algorithm])
    check = subprocess.run([tool, "-c", str(out)], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0 and "data.bin: OK" in check.stdout, check.stdout + check.stderr
    src.write_bytes(b"tampered")
    check = subprocess.run([tool, "-c", str(out)], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode != 0


def test_algorithm_choice(tmp_path: Path) -> None:
    src = tmp_path / "x.txt"
    src.write_bytes(b"hello")
    out = run(src, "txt", "json", tmp_path / "o", algorithms=["sha3_256", "blake2b", "md5"])
    body = json.loads(out.read_text())
    assert list(body) == ["file", "size", "sha3_256", "blake2b", "md5"]
    assert body["sha3_256"] == hashlib.sha3_256(b"hello").hexdigest()
    assert body["blake2b"] == hashlib.blake2b(b"hello").hexdigest()


def test_empty_file(tmp_path: Path) -> None:
    src = tmp_path / "empty.bin"
    src.write_bytes(b"")
    body = json.loads(run(src, "bin", "json", tmp_path / "o").read_text())
    assert body["size"] == 0 and body["sha256"] == hashlib.sha256(b"").hexdigest()


def test_options_validated_by_the_registry() -> None:
    reg = Registry([CONV])
    assert reg.validate("hash", "pdf", "json", {}) == {"algorithms": list(DEFAULT_ALGORITHMS)}
    with pytest.raises(RequestError) as err:
        reg.validate("hash", "pdf", "json", {"algorithms": ["crc32"]})
    assert err.value.field == "algorithms"
    assert set(ALGORITHMS) >= {"md5", "sha1", "sha256", "sha512"}


def test_progress_follows_the_bytes(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(5 * 1024 * 1024 + 10))
    seen: list[float] = []
    task = Task([src], "bin", "json", {}, tmp_path, progress=seen.append)
    CONV.convert(task)
    assert len(seen) == 6 and seen == sorted(seen) and seen[-1] == 1.0


async def test_sandbox_hashes_any_content_whatever_its_declared_type(tmp_path: Path) -> None:
    # hashing never interprets the bytes: a "pdf" that is really a PNG is still hashed
    src = tmp_path / "report.pdf"
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(1000))
    result = await sandbox.run("hash", "pdf", "json", {"algorithms": ["sha256"]}, [src],
                               tmp_path / "job")  # fmt: skip
    body = json.loads(result.path.read_text())
    assert body["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
