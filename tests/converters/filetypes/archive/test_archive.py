"""Archive converter: every listed pair, options, progress, several inputs, mismatched input.

Inputs are generated here with writers the converter does not use to read them (libarchive
writes the 7z inputs; py7zr reads them), and every output is decoded with libarchive plus
the format's own reader, then compared byte for byte.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import libarchive
import pytest

from converters.base import ConversionError, RequestError, Task
from converters.filetypes.archive.converter import PLAIN_INPUTS, ArchiveConverter
from converters.filetypes.archive.rar4 import rar4
from converters.filetypes.archive.read_rar import rar_unavailable
from converters.registry import Registry

CONV = ArchiveConverter()
OUTPUTS = sorted(CONV.pairs()["zip"])
ARCHIVE_INPUTS = sorted(set(CONV.pairs()) - PLAIN_INPUTS)

TREE: dict[str, bytes] = {
    "hello.txt": b"hello, archive\n",
    "sub/data.bin": bytes(range(256)) * 12 + os.urandom(500),
    "sub/deeper/empty.txt": b"",
    "ünïcødé ñame.txt": "grüße\n".encode(),
}
SINGLE = b"line of text\n" * 300

MAGIC = {
    "zip": b"PK\x03\x04",
    "7z": b"7z\xbc\xaf\x27\x1c",
    "tar.gz": b"\x1f\x8b",
    "tgz": b"\x1f\x8b",
    "tar.bz2": b"BZh",
    "tbz2": b"BZh",
    "tar.xz": b"\xfd7zXZ\x00",
    "txz": b"\xfd7zXZ\x00",
}

TAR_WRITE = {
    "tar": "w:",
    "tar.gz": "w:gz",
    "tgz": "w:gz",
    "tar.bz2": "w:bz2",
    "tbz2": "w:bz2",
    "tar.xz": "w:xz",
    "txz": "w:xz",
}

# --- generators ------------------------------------------------------------------------------


def make_tar(path: Path, mode: str, tree: dict[str, bytes] = TREE) -> None:
    with tarfile.open(path, mode) as tar:
        for name, data in tree.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 1_700_000_000, 0o644
            tar.addfile(ti, io.BytesIO(data))


def make_input(fmt: str, folder: Path) -> tuple[Path, dict[str, bytes]]:
    """A small archive of `fmt` and the files it should yield."""
    path = folder / f"sample.{fmt}"
    if fmt == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in TREE.items():
                zf.writestr(name, data)
    elif fmt in TAR_WRITE:
        make_tar(path, TAR_WRITE[fmt])
    elif fmt == "7z":
        with libarchive.file_writer(str(path), "7zip") as w:
            for name, data in TREE.items():
                w.add_file_from_memory(name, len(data), data)
    elif fmt == "rar":
        path.write_bytes(rar4((n, d, stat.S_IFREG | 0o644) for n, d in TREE.items()))
    elif fmt in ("gz", "bz2", "xz"):
        path = folder / f"notes.txt.{fmt}"
        opener = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[fmt]
        path.write_bytes(opener(SINGLE))
        return path, {"notes.txt": SINGLE}
    else:
        raise AssertionError(fmt)
    return path, dict(TREE)


# --- independent readers ---------------------------------------------------------------------


def read_output(path: Path, fmt: str) -> dict[str, bytes]:
    """Files in an output archive, read by libarchive and checked by the format's own reader."""
    head = path.read_bytes()[:8]
    if fmt in MAGIC:
        assert head.startswith(MAGIC[fmt]), (fmt, head)
    files: dict[str, bytes] = {}
    with libarchive.file_reader(str(path)) as arc:
        for e in arc:
            assert not (e.issym or e.islnk or e.isdev or e.isfifo), e.pathname
            data = b"".join(e.get_blocks())
            if e.isfile:
                files[e.pathname] = data
    if fmt == "zip":
        with zipfile.ZipFile(path) as zf:
            assert zf.testzip() is None
            assert {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")} == files
    elif fmt != "7z":
        with tarfile.open(path, "r:*") as tar:
            native = {
                m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers()
                if m.isreg()
            }
            assert native == files
            assert all(m.uid == 0 and m.uname == "" for m in tar.getmembers())
    return files


def run(task: Task, conv: ArchiveConverter = CONV):
    conv.check(task)
    result = conv.convert(task)
    assert result.path.is_file()
    assert result.path.resolve().is_relative_to(task.workdir.resolve())
    return result


def task_for(paths: list[Path], in_fmt: str, out_fmt: str, workdir: Path, **options) -> Task:
    workdir.mkdir(parents=True, exist_ok=True)
    return Task(list(paths), in_fmt, out_fmt, {"compression_level": 6, **options}, workdir)


# --- the matrix ------------------------------------------------------------------------------


@pytest.mark.parametrize("in_fmt", ARCHIVE_INPUTS)
def test_archive_to_every_output(in_fmt: str, tmp_path: Path) -> None:
    """Repack (and extract, for zip): every archive input to every output format."""
    src, expected = make_input(in_fmt, tmp_path)
    for out_fmt in OUTPUTS:
        work = tmp_path / f"w-{out_fmt}"
        work.mkdir()
        result = run(task_for([src], in_fmt, out_fmt, work))
        assert read_output(result.path, out_fmt) == expected, (in_fmt, out_fmt)
        assert sorted(result.items) == sorted(expected)
        assert result.notes == []
        assert result.path.name.endswith("." + out_fmt)


@pytest.mark.parametrize("in_fmt", sorted(PLAIN_INPUTS))
def test_plain_file_to_every_output(in_fmt: str, tmp_path: Path) -> None:
    """Any common file type -> each archive format, stored byte for byte."""
    data = os.urandom(64) + in_fmt.encode() * 50
    src = tmp_path / f"report.{in_fmt}"
    src.write_bytes(data)
    for out_fmt in OUTPUTS:
        work = tmp_path / f"w-{out_fmt}"
        work.mkdir()
        result = run(task_for([src], in_fmt, out_fmt, work, compression_level=1))
        assert read_output(result.path, out_fmt) == {src.name: data}
        assert result.items == [src.name]
        assert result.path.name == f"report.{out_fmt}"


def test_every_listed_pair_is_covered() -> None:
    pairs = CONV.pairs()
    assert set(pairs) == set(ARCHIVE_INPUTS) | PLAIN_INPUTS
    assert all(set(outs) == set(OUTPUTS) for outs in pairs.values())
    assert set(OUTPUTS) == {"zip", "tar", "tar.gz", "tgz", "tar.bz2", "tbz2", "tar.xz", "txz", "7z"}
    for fmt in ("zip", "tar", "tar.gz", "tgz", "tar.bz2", "tar.xz", "7z", "rar", "gz", "bz2", "xz"):
        assert fmt in pairs, fmt


# --- several inputs --------------------------------------------------------------------------


def test_several_files_become_one_archive(tmp_path: Path) -> None:
    inner, _ = make_input("zip", tmp_path)  # an archive among the inputs is stored, not opened
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    other = tmp_path / "other"
    other.mkdir()
    twin = other / "photo.png"  # same name as another input
    twin.write_bytes(b"second photo")
    note = tmp_path / "note.txt"
    note.write_bytes(b"a note")
    inputs = [note, png, inner, twin]
    seen: list[float] = []
    for out_fmt in ("zip", "tar.xz", "7z"):
        work = tmp_path / f"w-{out_fmt}"
        work.mkdir()
        task = task_for(inputs, "txt", out_fmt, work)
        task.progress = seen.append
        result = run(task)
        files = read_output(result.path, out_fmt)
        assert files == {
            "note.txt": b"a note",
            "photo.png": png.read_bytes(),
            "sample.zip": inner.read_bytes(),
            "photo (2).png": b"second photo",
        }
        assert result.items == ["note.txt", "photo.png", "sample.zip", "photo (2).png"]
        assert result.path.name == f"archive.{out_fmt}"
    assert seen[-1] == 1.0


def test_several_archives_are_stored_not_merged(tmp_path: Path) -> None:
    a, _ = make_input("zip", tmp_path)
    b, _ = make_input("tar.gz", tmp_path)
    result = run(task_for([a, b], "zip", "zip", tmp_path / "w"))
    assert read_output(result.path, "zip") == {a.name: a.read_bytes(), b.name: b.read_bytes()}


# --- options ---------------------------------------------------------------------------------


def test_compression_level_option(tmp_path: Path) -> None:
    src = tmp_path / "big.txt"
    src.write_bytes(b"compressible text " * 20_000)
    sizes = {}
    for level in (0, 1, 9):
        work = tmp_path / f"w{level}"
        work.mkdir()
        result = run(task_for([src], "txt", "zip", work, compression_level=level))
        with zipfile.ZipFile(result.path) as zf:
            info = zf.getinfo("big.txt")
            assert info.compress_type == (zipfile.ZIP_STORED if level == 0 else zipfile.ZIP_DEFLATED)
            assert zf.read("big.txt") == src.read_bytes()
        sizes[level] = result.path.stat().st_size
    assert sizes[0] > sizes[1] >= sizes[9]
    for fmt in ("tar.gz", "tar.bz2", "tar.xz", "7z"):  # level 0 is legal everywhere
        work = tmp_path / f"w-{fmt}"
        work.mkdir()
        result = run(task_for([src], "txt", fmt, work, compression_level=0))
        assert read_output(result.path, fmt) == {"big.txt": src.read_bytes()}


def test_options_schema_and_validation() -> None:
    reg = Registry([ArchiveConverter()])
    schema = reg.options_schema("archive", "zip", "tar.gz")
    assert schema["properties"]["compression_level"] == {
        "type": "integer",
        "description": schema["properties"]["compression_level"]["description"],
        "default": 6,
        "minimum": 0,
        "maximum": 9,
    }
    assert reg.validate("archive", "pdf", "7z", {}) == {"compression_level": 6}
    assert reg.validate("archive", "tgz", "zip", {"compression_level": 9}) == {"compression_level": 9}
    with pytest.raises(RequestError) as err:
        reg.validate("archive", "zip", "zip", {"compression_level": 10})
    assert err.value.field == "compression_level"
    with pytest.raises(RequestError):
        reg.validate("archive", "zip", "tar", {"compression_level": 5})  # tar does not compress
    with pytest.raises(RequestError) as err:
        reg.find("archive", "zip", "rar")  # rar is read-only
    assert err.value.field == "output_format"


# --- progress --------------------------------------------------------------------------------


@pytest.mark.parametrize("in_fmt", ["zip", "tar.gz", "7z", "rar"])
def test_progress_rises_per_file(in_fmt: str, tmp_path: Path) -> None:
    tree = {f"f{i:02}.txt": f"file {i}\n".encode() * 2000 for i in range(20)}
    src = tmp_path / f"many.{in_fmt}"
    if in_fmt == "zip":
        with zipfile.ZipFile(src, "w") as zf:
            for n, d in tree.items():
                zf.writestr(n, d)
    elif in_fmt == "tar.gz":
        make_tar(src, "w:gz", tree)
    elif in_fmt == "7z":
        with libarchive.file_writer(str(src), "7zip") as w:
            for n, d in tree.items():
                w.add_file_from_memory(n, len(d), d)
    else:
        src.write_bytes(rar4((n, d, stat.S_IFREG | 0o644) for n, d in tree.items()))
    seen: list[float] = []
    task = task_for([src], in_fmt, "zip", tmp_path / "w")
    task.progress = seen.append
    result = run(task)
    assert read_output(result.path, "zip") == tree
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[-1] == 1.0
    assert len([f for f in seen if 0 < f < 0.5]) >= 5  # extraction reports as it goes
    assert len([f for f in seen if 0.5 < f < 1]) >= 10  # packing reports per file


# --- content must match the declared format --------------------------------------------------


def test_content_not_matching_the_format_is_refused(tmp_path: Path) -> None:
    sevenzip, _ = make_input("7z", tmp_path)
    fake = tmp_path / "fake.zip"
    fake.write_bytes(sevenzip.read_bytes())
    with pytest.raises(ConversionError) as err:
        CONV.check(task_for([fake], "zip", "tar", tmp_path))
    assert "7z" in err.value.message and "7z" in (err.value.hint or "")

    text = tmp_path / "notes.tar.gz"
    text.write_bytes(b"just some text, not an archive\n")
    with pytest.raises(ConversionError) as err:
        CONV.check(task_for([text], "tar.gz", "zip", tmp_path))
    assert "not a tar.gz archive" in err.value.message


def test_tar_gz_named_as_gz_is_read_as_tar(tmp_path: Path) -> None:
    """'x.tar.gz' reduced to format 'gz' by a naive name mapping still unpacks the tar."""
    src, expected = make_input("tar.gz", tmp_path)
    result = run(task_for([src], "gz", "zip", tmp_path / "w"))
    assert read_output(result.path, "zip") == expected
    plain = tmp_path / "x.gz"
    plain.write_bytes(gzip.compress(b"not a tar"))
    result = run(task_for([plain], "tar.gz", "zip", tmp_path / "w2"))
    assert read_output(result.path, "zip") == {"x": b"not a tar"}


def _corrupt_middle(data: bytes) -> bytes:
    return data[: len(data) // 2] + bytes(50) + data[len(data) // 2 + 50 :]


# libarchive 3.6 does not check the CRC of *stored* RAR entries (the only kind we can make
# without the proprietary rar tool), so RAR damage is a truncation or a broken header.
DAMAGE = [
    ("zip", _corrupt_middle),
    ("tar.xz", _corrupt_middle),
    ("7z", _corrupt_middle),
    ("tar", lambda d: d[:700]),
    ("rar", lambda d: d[: len(d) // 2]),
    ("rar", lambda d: d[:25] + b"\xff" + d[26:]),
]


@pytest.mark.parametrize(("fmt", "damage"), DAMAGE)
def test_damaged_archive_fails_cleanly(fmt: str, damage, tmp_path: Path) -> None:
    src, _ = make_input(fmt, tmp_path)
    src.write_bytes(damage(src.read_bytes()))
    work = tmp_path / "work"
    with pytest.raises(ConversionError) as err:
        run(task_for([src], fmt, "zip", work))
    assert "cannot be read" in err.value.message and "errno" not in err.value.message
    assert err.value.hint
    assert not [p for p in work.rglob("*") if p.is_file()]  # nothing left behind


# --- rar support is reported honestly --------------------------------------------------------


def test_rar_support_is_reported_honestly() -> None:
    reason = rar_unavailable()
    assert ("rar" in CONV.pairs()) == (reason is None)
    assert ("rar" in CONV.unavailable_formats()) == (reason is not None)
    assert CONV.unavailable() is None  # zip and tar never depend on an extra library
