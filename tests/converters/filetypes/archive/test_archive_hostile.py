"""Hostile archives are ordinary input: each attack file is generated here.

Policy under test (see converters/filetypes/archive/safety.py): names that escape the folder, bombs
and lying sizes fail the job with a clear error; links, devices and FIFOs are skipped and
listed in `result.notes`; duplicates, odd unicode and over-long names are repaired. In
every case nothing is written outside the job's folder.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import struct
import tarfile
import time
import uuid
import zipfile
from pathlib import Path

import libarchive
import py7zr
import pytest

from converters.base import ConversionError, Result, Task
from converters.filetypes.archive import readers
from converters.filetypes.archive.converter import ArchiveConverter
from converters.filetypes.archive.rar4 import rar4
from converters.filetypes.archive.safety import Audit, Bounds, GiB, MiB, Staging

CONV = ArchiveConverter()


# --- helpers ---------------------------------------------------------------------------------


class Job:
    """A work folder nested deep inside tmp_path, so '../..' lands somewhere we can watch."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "jobs" / "one" / "work"
        self.work.mkdir(parents=True)
        self.victim = root / "victim"
        self.victim.mkdir()
        (self.victim / "secret.txt").write_bytes(b"secret")
        self.inputs = root / "inputs"
        self.inputs.mkdir()
        self.before: dict[str, int] = {}

    def input(self, name: str, data: bytes) -> Path:
        path = self.inputs / name
        path.write_bytes(data)
        self.before = self._outside()
        return path

    def _outside(self) -> dict[str, int]:
        return {str(p): p.lstat().st_size for p in self.root.rglob("*") if not p.is_relative_to(self.work)}

    def assert_nothing_outside(self) -> None:
        assert self._outside() == self.before
        for p in self.work.rglob("*"):
            st = p.lstat()
            assert stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode), p

    def run(self, path: Path, fmt: str, out: str = "zip", conv: ArchiveConverter = CONV) -> Result:
        task = Task([path], fmt, out, {"compression_level": 1}, self.work)
        conv.check(task)
        result = conv.convert(task)
        self.assert_nothing_outside()
        return result

    def refused(
        self, path: Path, fmt: str, conv: ArchiveConverter = CONV, *, via_check: bool = True
    ) -> ConversionError:
        """The job fails, with check() and with convert() alone; nothing is left anywhere."""
        task = Task([path], fmt, "zip", {"compression_level": 1}, self.work)
        if via_check:
            with pytest.raises(ConversionError) as first:
                conv.check(task)
        with pytest.raises(ConversionError) as err:
            ArchiveConverter(conv.bounds).convert(task)  # fresh: no cached check
        if via_check:
            assert first.value.message == err.value.message
        assert err.value.hint
        self.assert_nothing_outside()
        assert not [p for p in self.work.rglob("*") if p.is_file()]
        return err.value


def read_files(path: Path) -> dict[str, bytes]:
    """Files in an output archive, by libarchive; links or devices in the output fail."""
    files: dict[str, bytes] = {}
    with libarchive.file_reader(str(path)) as arc:
        for e in arc:
            assert e.isfile or e.isdir, e.pathname
            data = b"".join(e.get_blocks())
            if e.isfile:
                files[e.pathname] = data
    return files


def zip_bytes(entries: list[tuple[str | zipfile.ZipInfo, bytes]], method: int = 8) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def zip_link(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def patch_zip(data: bytes, *, size: int | None = None, flags: int | None = None) -> bytes:
    """Forge every entry's declared uncompressed size and/or flag bits, in both headers."""
    out = bytearray(data)
    for sig, size_at, flag_at in ((b"PK\x03\x04", 22, 6), (b"PK\x01\x02", 24, 8)):
        pos = out.find(sig)
        while pos != -1:
            if size is not None:
                out[pos + size_at : pos + size_at + 4] = struct.pack("<I", size)
            if flags is not None:
                old = struct.unpack_from("<H", out, pos + flag_at)[0]
                out[pos + flag_at : pos + flag_at + 2] = struct.pack("<H", old | flags)
            pos = out.find(sig, pos + 4)
    return bytes(out)


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tar:
        for ti, data in members:
            if data is not None:
                ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def ti(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


def sevenzip(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    with libarchive.file_writer(str(path), "7zip") as w:
        for name, data in entries:
            w.add_file_from_memory(name, len(data), data)
    return path


# --- names that leave the folder -------------------------------------------------------------

ESCAPES = [
    "../../evil.txt",
    "a/../../../evil.txt",
    "..\\..\\evil.txt",
    "C:/evil.txt",
    "C:\\Windows\\evil.txt",
    "\\\\server\\share\\evil.txt",
    "/tmp/convertd-evil-{uid}.txt",
]


@pytest.mark.parametrize("name", ESCAPES)
@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.gz", "7z", "rar"])
def test_names_leaving_the_folder_are_refused(fmt: str, name: str, tmp_path: Path) -> None:
    job = Job(tmp_path)
    name = name.format(uid=uuid.uuid4().hex)
    entries = [("fine.txt", b"fine"), (name, b"evil")]
    if fmt == "zip":
        data = zip_bytes(entries)
    elif fmt.startswith("tar"):
        data = tar_bytes([(ti(n), d) for n, d in entries], "w:gz" if fmt == "tar.gz" else "w")
    elif fmt == "7z":
        data = sevenzip(tmp_path / "x.7z", entries).read_bytes()
    else:
        data = rar4((n, d, stat.S_IFREG | 0o644) for n, d in entries)
    err = job.refused(job.input(f"x.{fmt}", data), fmt)
    assert "outside the archive folder" in err.message or "refused" in err.message
    assert not list(tmp_path.rglob("*evil*"))
    if name.startswith("/tmp/"):
        assert not os.path.lexists(name)


# --- links, devices, FIFOs: skipped and listed -----------------------------------------------


def test_zip_symlinks_are_skipped_and_never_followed(tmp_path: Path) -> None:
    job = Job(tmp_path)
    data = zip_bytes(
        [
            (zip_link("to-victim", str(job.victim)), str(job.victim).encode()),
            ("to-victim/evil.txt", b"written through the link?"),  # classic follow-up write
            (zip_link("up", "../../.."), b"../../.."),
            ("ok.txt", b"ok"),
        ]
    )
    result = job.run(job.input("links.zip", data), "zip", "tar")
    assert read_files(result.path) == {
        "to-victim/evil.txt": b"written through the link?",
        "ok.txt": b"ok",
    }
    assert [s.split(":")[0] for s in result.notes] == ["to-victim", "up"]
    assert all("symbolic link" in s for s in result.notes)
    assert sorted(p.name for p in job.victim.iterdir()) == ["secret.txt"]


def test_tar_links_devices_and_fifos_are_skipped(tmp_path: Path) -> None:
    job = Job(tmp_path)
    secret = str(job.victim / "secret.txt")
    dev = ti("dev/null-ish", tarfile.CHRTYPE)
    dev.devmajor, dev.devminor = 1, 3
    blk = ti("dev/disk", tarfile.BLKTYPE)
    data = tar_bytes(
        [
            (ti("real.txt"), b"real content"),
            (ti("sym-out", tarfile.SYMTYPE, str(job.victim)), None),
            (ti("sym-out/evil.txt"), b"through the link?"),
            (ti("hard-abs", tarfile.LNKTYPE, secret), None),
            (ti("hard-up", tarfile.LNKTYPE, "../../victim/secret.txt"), None),
            (ti("hard-later", tarfile.LNKTYPE, "later.txt"), None),
            (ti("copy.txt", tarfile.LNKTYPE, "real.txt"), None),  # inside: becomes a copy
            (dev, None),
            (blk, None),
            (ti("pipe", tarfile.FIFOTYPE), None),
            (ti("later.txt"), b"later"),
        ],
        "w:bz2",
    )
    result = job.run(job.input("links.tar.bz2", data), "tar.bz2", "7z")
    assert read_files(result.path) == {
        "real.txt": b"real content",
        "sym-out/evil.txt": b"through the link?",
        "copy.txt": b"real content",
        "later.txt": b"later",
    }
    skipped = {s.split(":")[0]: s for s in result.notes}
    assert set(skipped) == {
        "sym-out",
        "hard-abs",
        "hard-up",
        "hard-later",
        "dev/null-ish",
        "dev/disk",
        "pipe",
    }
    assert "device" in skipped["dev/disk"] and "FIFO" in skipped["pipe"]
    assert "outside the archive" in skipped["hard-abs"]
    assert sorted(p.name for p in job.victim.iterdir()) == ["secret.txt"]
    assert (job.victim / "secret.txt").read_bytes() == b"secret"


def test_7z_and_rar_symlinks_are_skipped(tmp_path: Path) -> None:
    job = Job(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_bytes(b"ok")
    (src / "link").symlink_to("/etc/passwd")
    seven = tmp_path / "l.7z"
    with py7zr.SevenZipFile(seven, "w") as z:  # py7zr stores a real symlink as a link
        z.write(src / "ok.txt", "ok.txt")
        z.write(src / "link", "link")
    result = job.run(job.input("l.7z", seven.read_bytes()), "7z")
    assert read_files(result.path) == {"ok.txt": b"ok"}
    assert [s.split(":")[0] for s in result.notes] == ["link"]

    rar = rar4([("ok.txt", b"ok", stat.S_IFREG | 0o644), ("link", b"/etc/passwd", stat.S_IFLNK | 0o777)])
    result = job.run(job.input("l.rar", rar), "rar")
    assert read_files(result.path) == {"ok.txt": b"ok"}
    assert [s.split(":")[0] for s in result.notes] == ["link"]


# --- bombs: refused by declared size before extraction ---------------------------------------


@pytest.fixture(scope="module")
def gigabyte_of_zeros(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real zip bomb: 1 GiB of zeros deflated to about 1 MiB (built by streaming, ~2 s)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    zero = bytes(MiB)
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        zf.open("zeros.bin", "w", force_zip64=True) as f,
    ):
        for _ in range(1024):
            f.write(zero)
    return path.read_bytes()


@pytest.mark.slow  # builds and reads a gigabyte of zeros
def test_real_zip_bomb_is_refused_before_extraction(gigabyte_of_zeros: bytes, tmp_path: Path) -> None:
    job = Job(tmp_path)
    start = time.monotonic()
    err = job.refused(job.input("bomb.zip", gigabyte_of_zeros), "zip")
    assert time.monotonic() - start < 2  # refused from the headers, not by inflating 1 GiB
    assert "compression bomb" in err.message and "1.0 GiB" in err.message


NO_RATIO = Bounds(max_ratio=1e12)  # to reach the size rules behind the ratio rule


@pytest.mark.parametrize(
    ("count", "size", "bounds", "expected"),
    [
        (3, GiB, Bounds(), "looks like a compression bomb"),  # 3 GiB from 300 bytes
        (3, GiB, NO_RATIO, "more than 2.0 GiB"),  # each under the per-file limit, too much together
        (1, 0xFFFFFF00, NO_RATIO, "limit per file"),
    ],
)
def test_forged_zip_sizes_are_refused(
    count: int, size: int, bounds: Bounds, expected: str, tmp_path: Path
) -> None:
    job = Job(tmp_path)
    data = patch_zip(zip_bytes([(f"f{i}.bin", b"x" * 100) for i in range(count)]), size=size)
    err = job.refused(job.input("forged.zip", data), "zip", ArchiveConverter(bounds))
    assert expected in err.message


def test_tar_header_declaring_5_gib_is_refused_at_the_header(tmp_path: Path) -> None:
    job = Job(tmp_path)
    big = ti("huge.bin")
    big.size = 5 * GiB
    first = ti("first.txt")
    first.size = 5
    raw = first.tobuf(tarfile.PAX_FORMAT) + b"first".ljust(512, b"\0")
    raw += big.tobuf(tarfile.PAX_FORMAT) + bytes(4096)  # the 5 GiB are not even there
    data = gzip.compress(raw)
    err = job.refused(job.input("huge.tar.gz", data), "tar.gz")
    assert "huge.bin" in err.message and "5.0 GiB" in err.message


def test_too_many_entries_are_refused(tmp_path: Path) -> None:
    job = Job(tmp_path)
    data = zip_bytes([(f"e{i}", b"") for i in range(10_001)], method=zipfile.ZIP_STORED)
    err = job.refused(job.input("many.zip", data), "zip")
    assert "10001 entries, more than the 10000 allowed" in err.message  # from the end record
    # the end record lies low: the entries are still counted one by one
    forged = bytearray(zip_bytes([("1", b"1"), ("2", b"2"), ("3", b"3")]))
    struct.pack_into("<HH", forged, forged.rfind(b"PK\x05\x06") + 8, 0, 0)
    with pytest.raises(ConversionError, match="more than 2 entries"):
        ArchiveConverter(Bounds(max_members=2)).check(
            Task([job.input("f.zip", bytes(forged))], "zip", "zip", {}, job.work)
        )


def test_7z_and_rar_declared_sizes_are_checked(tmp_path: Path) -> None:
    job = Job(tmp_path)
    small = ArchiveConverter(Bounds(max_total_bytes=100_000))
    seven = sevenzip(tmp_path / "s.7z", [(f"f{i}", os.urandom(40_000)) for i in range(3)])
    err = job.refused(job.input("s.7z", seven.read_bytes()), "7z", small)
    assert "declares more than" in err.message
    rar = rar4([("a.bin", b"tiny", stat.S_IFREG | 0o644)], declared=2 * GiB)
    err = job.refused(job.input("r.rar", rar), "rar")
    assert "limit per file" in err.message


# --- sizes that lie: the limits hold while bytes are written ---------------------------------


def staged_bytes(staging: Staging) -> int:
    return sum(p.stat().st_size for p in staging.root.rglob("*") if p.is_file())


def test_gzip_bomb_stops_while_decompressing(tmp_path: Path) -> None:
    """A single .gz declares nothing: the ratio check stops it as the bytes come out."""
    src = tmp_path / "zeros.bin.gz"
    src.write_bytes(gzip.compress(bytes(64 * MiB), 9))  # ~64 KiB
    size = src.stat().st_size
    bounds = Bounds(ratio_floor=MiB, max_ratio=10)
    staging = Staging(tmp_path / "stage", bounds, size)
    with pytest.raises(ConversionError) as err:
        readers.extract_single(src, "gz", staging, Audit(bounds, size), lambda f: None)
    assert "expands to" in err.value.message and "compression bomb" in err.value.message
    # stopped within one read (1 MiB) of the point where the ratio was passed
    assert staged_bytes(staging) <= max(MiB, 10 * size) + MiB
    job = Job(tmp_path / "job")  # and through the converter, with the default limits
    err2 = job.refused(job.input("zeros.bin.gz", src.read_bytes()), "gz", via_check=False)
    assert "compression bomb" in err2.message


@pytest.mark.slow  # writes up to the total limit
def test_total_limit_holds_while_writing(tmp_path: Path) -> None:
    src = tmp_path / "noise.xz"
    import lzma

    src.write_bytes(lzma.compress(os.urandom(3 * MiB)))
    bounds = Bounds(max_total_bytes=MiB)
    staging = Staging(tmp_path / "stage", bounds, src.stat().st_size)
    with pytest.raises(ConversionError) as err:
        readers.extract_single(src, "xz", staging, Audit(bounds, 1), lambda f: None)
    assert "more than 1.0 MiB" in err.value.message
    assert staged_bytes(staging) <= 2 * MiB


def test_zip_entry_larger_than_declared_is_cut_and_refused(tmp_path: Path) -> None:
    payload = bytes(10 * MiB)
    data = patch_zip(zip_bytes([("liar.bin", payload)]), size=100)
    src = tmp_path / "liar.zip"
    src.write_bytes(data)
    staging = Staging(tmp_path / "stage", Bounds(), len(data))
    with pytest.raises(ConversionError) as err:
        readers.extract_zip(src, staging, Audit(Bounds(), len(data)), lambda f: None)
    assert "cannot be read" in err.value.message  # zipfile stops at 100 bytes: bad CRC
    assert staged_bytes(staging) <= 100
    job = Job(tmp_path / "job")  # headers look fine: only extraction can tell
    job.refused(job.input("liar.zip", data), "zip", via_check=False)


def test_rar_entry_larger_than_declared_is_refused(tmp_path: Path) -> None:
    job = Job(tmp_path)
    data = rar4([("liar.bin", bytes(100_000), stat.S_IFREG | 0o644)], declared=10)
    err = job.refused(job.input("liar.rar", data), "rar", via_check=False)
    assert "more data than the 10 bytes its header declares" in err.message


# --- encrypted -------------------------------------------------------------------------------


def test_encrypted_zip_is_refused(tmp_path: Path) -> None:
    job = Job(tmp_path)
    data = patch_zip(zip_bytes([("s.txt", b"secret")]), flags=0x1)
    err = job.refused(job.input("enc.zip", data), "zip")
    assert "password-protected" in err.message


# --- names repaired sanely -------------------------------------------------------------------


def test_duplicate_names_are_kept_apart(tmp_path: Path) -> None:
    job = Job(tmp_path)
    with pytest.warns(UserWarning):  # zipfile itself frowns on duplicates
        data = zip_bytes(
            [
                ("a.txt", b"first"),
                ("a.txt", b"second"),
                ("e\u0301.txt", b"nfd"),
                ("\u00e9.txt", b"nfc"),
            ]
        )
    result = job.run(job.input("dup.zip", data), "zip")
    assert read_files(result.path) == {
        "a.txt": b"first",
        "a (2).txt": b"second",
        "\u00e9.txt": b"nfd",
        "\u00e9 (2).txt": b"nfc",
    }
    seven = sevenzip(tmp_path / "d.7z", [("dup.txt", b"one"), ("dup.txt", b"two"), ("dup.txt", b"three")])
    result = job.run(job.input("d.7z", seven.read_bytes()), "7z")
    assert read_files(result.path) == {
        "dup.txt": b"one",
        "dup (2).txt": b"two",
        "dup (3).txt": b"three",
    }


def test_unicode_tricks_are_neutralised(tmp_path: Path) -> None:
    job = Job(tmp_path)
    bad_utf8 = b"caf\xff.txt".decode("utf-8", "surrogateescape")
    data = tar_bytes(
        [
            (ti("invoice\u202etxt.exe"), b"rtlo"),
            (ti("bell\x07.txt"), b"bell"),
            (ti(bad_utf8), b"bytes"),
        ]
    )
    result = job.run(job.input("u.tar", data), "tar", "zip")
    assert read_files(result.path) == {
        "invoice_txt.exe": b"rtlo",
        "bell_.txt": b"bell",
        "caf\ufffd.txt": b"bytes",
    }


def test_long_and_deep_names(tmp_path: Path) -> None:
    job = Job(tmp_path)
    long_name = "x" * 1000 + ".txt"
    deep = "/".join(["d"] * 100) + "/deep.txt"
    wide = "/".join(["w" * 200] * 20) + "/wide.txt"
    data = zip_bytes([(long_name, b"long"), (deep, b"deep"), (wide, b"wide"), ("ok", b"ok")])
    result = job.run(job.input("names.zip", data), "zip", "tar.gz")
    files = read_files(result.path)
    assert files.pop("ok") == b"ok"
    ((short, content),) = files.items()
    assert content == b"long" and short.endswith(".txt") and len(short.encode()) <= 255
    assert short.startswith("x" * 200)
    assert [s.split(":")[0] for s in result.notes] == [deep[:200], wide[:200]]
    assert all("too long or too deep" in s for s in result.notes)


def test_file_and_folder_of_the_same_name(tmp_path: Path) -> None:
    job = Job(tmp_path)
    data = zip_bytes([("a", b"file a"), ("a/b.txt", b"under a file"), ("d/x.txt", b"x"), ("d/", b"")])
    result = job.run(job.input("clash.zip", data), "zip")
    assert read_files(result.path) == {"a": b"file a", "d/x.txt": b"x"}
    assert [s.split(":")[0] for s in result.notes] == ["a/b.txt"]


def test_nested_archives_are_not_opened(tmp_path: Path) -> None:
    job = Job(tmp_path)
    inner = zip_bytes([("../../evil.txt", b"evil"), (zip_link("l", "/etc"), b"/etc")])
    outer = zip_bytes([("inner.zip", inner), ("readme.txt", b"hi")])
    result = job.run(job.input("outer.zip", outer), "zip", "tar.xz")
    assert read_files(result.path) == {"inner.zip": inner, "readme.txt": b"hi"}
    assert result.notes == []


def test_input_that_is_a_link_is_refused(tmp_path: Path) -> None:
    job = Job(tmp_path)
    link = job.inputs / "passwd.txt"
    link.symlink_to(job.victim / "secret.txt")
    task = Task([link], "txt", "zip", {"compression_level": 1}, job.work)
    for step in (CONV.check, CONV.convert):
        with pytest.raises(ConversionError, match="not a regular file"):
            step(task)
