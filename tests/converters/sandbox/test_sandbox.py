"""converters.sandbox.parent: a conversion runs in a limited child; its failures stay its own.

The misbehaving converters below are real code run in the real child process (the child
imports this module by name, as it imports any converter): they really allocate, spin,
sleep, crash or spawn helpers, and the sandbox must stop them and explain why.

Every job's process is forked from the fork server (`converters.sandbox.forkserver`); the tests that
prove the isolation layers from inside a job are in test_isolation.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import pytest

from converters import registry as registry_module
from converters.base import ConversionError, Converter, Limits, Result, Task
from converters.filetypes.hash import HashConverter
from converters.registry import Registry
from converters.sandbox import channels
from converters.sandbox import parent as sandbox
from converters.sandbox.failures import SandboxError
from converters.sandbox.inputs import stage_inputs
from tests.helpers import wait_until

BEHAVIOURS = frozenset(
    {"ok", "chatty", "mem", "cpu", "sleep", "segv", "error", "bigout", "spawn", "net", "env",
     "boom", "escape", "rust_oom", "state"}
)  # fmt: skip


class MisbehavingConverter(Converter):
    """Does what its output format says: 'mem' allocates 2 GiB, 'segv' reads address 0..."""

    filetype: ClassVar[str] = "probe"
    engine: ClassVar[str] = "test"
    limits: ClassVar[Limits] = Limits(memory_bytes=512 * 1024**2, cpu_seconds=2,
                                      wall_seconds=20, output_bytes=1024**2)  # fmt: skip

    def pairs(self) -> Mapping[str, frozenset[str]]:
        return {"bin": BEHAVIOURS}

    def convert(self, task: Task) -> Result:
        out = task.workdir / "out.txt"
        what = task.output_format
        if what == "ok":
            out.write_bytes(hashlib.sha256(task.inputs[0].read_bytes()).digest())
        elif what == "chatty":
            for i in range(1, 201):
                task.progress(i / 200)
                time.sleep(0.005)
            out.write_text("done")
        elif what == "mem":
            blob = bytearray(2 * 1024**3)
            out.write_bytes(blob[:10])
        elif what == "cpu":
            while True:
                pass
        elif what in ("sleep", "spawn"):
            if what == "spawn":
                helper = subprocess.Popen(["sleep", "300"])
                (task.workdir / "pids.json").write_text(json.dumps([os.getpid(), helper.pid]))
            time.sleep(300)
        elif what == "segv":
            ctypes.string_at(0)
        elif what == "error":
            raise ConversionError("The probe refuses this file.", hint="Send another one.")
        elif what == "bigout":
            with out.open("wb") as fh:
                for _ in range(20):
                    fh.write(b"\0" * 100_000)
        elif what == "net":
            port = int(task.inputs[0].read_text())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                out.write_text("reached")
            except OSError as exc:
                out.write_text(f"blocked: {exc}")
        elif what == "env":
            out.write_text(json.dumps({"env": dict(os.environ), "cwd": os.getcwd()}))
        elif what == "state":
            out.write_text(json.dumps(_process_state()))
        elif what == "boom":
            raise RuntimeError("internal detail /secret/path")
        elif what == "escape":
            return Result(Path("/etc/passwd"))
        elif what == "rust_oom":
            # calamine (Rust) allocates a sheet's whole cell rectangle and aborts if it can't
            from python_calamine import CalamineWorkbook

            CalamineWorkbook.from_path(str(task.inputs[0])).get_sheet_by_index(0)
        return Result(out)


def _process_state() -> dict[str, object]:
    """What a job's process looks like from inside."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
    with open("/proc/self/cmdline", "rb") as fh:
        cmdline = fh.read().split(b"\0")
    return {
        "pid": os.getpid(),
        "sid": os.getsid(0),
        "cmdline": [arg.decode() for arg in cmdline],
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "tempdir": tempfile.gettempdir(),
        "limits": {
            name: resource.getrlimit(getattr(resource, f"RLIMIT_{name}"))
            for name in ("AS", "CPU", "FSIZE", "CORE")
        },
        "netns": os.readlink("/proc/self/ns/net"),
        "pdeathsig": _pdeathsig(),
        "fds": fds,
    }


def _pdeathsig() -> int:
    sig = ctypes.c_int()
    ctypes.CDLL(None).prctl(2, ctypes.byref(sig))  # PR_GET_PDEATHSIG
    return sig.value


@pytest.fixture
def probe_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(registry_module, "_registry", Registry([MisbehavingConverter(), HashConverter()]))
    yield


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.bin"
    path.write_bytes(os.urandom(300_000))
    return path


def _job_pids(workdir: Path, count: int) -> list[int]:
    """The host's pids of the processes working inside workdir (a job sees only its own
    pid namespace, so it cannot tell us these), once `count` of them are there."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if Path(os.readlink(f"/proc/{entry}/cwd")).is_relative_to(workdir):
                        found.append(int(entry))
        if len(found) >= count and (workdir / "pids.json").exists():
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {count} processes working in {workdir}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _hash_ok(sample: Path, workdir: Path) -> None:
    """A real conversion after a failure: the service goes on."""
    result = await sandbox.run("hash", "bin", "json", {"algorithms": ["sha256"]}, [sample],
                               workdir)  # fmt: skip
    body = json.loads(result.path.read_text())
    assert body["sha256"] == hashlib.sha256(sample.read_bytes()).hexdigest()


async def test_result_is_absolute_inside_workdir_and_inputs_staged(
    probe_registry: None, sample: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "job"
    result = await sandbox.run("probe", "bin", "ok", {}, [sample], workdir)
    assert result.path == workdir / "out.txt"
    assert result.path.read_bytes() == hashlib.sha256(sample.read_bytes()).digest()
    assert (workdir / "in" / "sample.bin").read_bytes() == sample.read_bytes()


async def test_progress_is_forwarded_rising_and_throttled(
    probe_registry: None, sample: Path, tmp_path: Path
) -> None:
    seen: list[tuple[float, float]] = []

    async def on_progress(value: float) -> None:
        seen.append((time.monotonic(), value))

    await sandbox.run("probe", "bin", "chatty", {}, [sample], tmp_path / "job", on_progress)
    values = [v for _, v in seen]
    assert len(values) >= 3
    assert values == sorted(set(values))  # strictly rising
    assert values[-1] == 1.0
    # 200 updates over ~1 s arrive as about 10 per second
    span = seen[-1][0] - seen[0][0]
    assert len(values) <= span / channels.PROGRESS_INTERVAL + 3


async def test_converter_error_passes_message_and_hint(
    probe_registry: None, sample: Path, tmp_path: Path
) -> None:
    with pytest.raises(SandboxError) as err:
        await sandbox.run("probe", "bin", "error", {}, [sample], tmp_path / "job")
    assert err.value.kind == "converter"
    assert err.value.message == "The probe refuses this file."
    assert err.value.hint == "Send another one."
    assert isinstance(err.value, ConversionError)


async def test_memory_limit(probe_registry: None, sample: Path, tmp_path: Path) -> None:
    with pytest.raises(SandboxError) as err:
        await sandbox.run("probe", "bin", "mem", {}, [sample], tmp_path / "job")
    assert err.value.kind == "memory"
    assert "512 MiB of memory" in err.value.message
    await _hash_ok(sample, tmp_path / "after")


async def test_cpu_limit(probe_registry: None, sample: Path, tmp_path: Path) -> None:
    with pytest.raises(SandboxError) as err:
        await sandbox.run("probe", "bin", "cpu", {}, [sample], tmp_path / "job",
                          limits=Limits(cpu_seconds=1, wall_seconds=20))  # fmt: skip
    assert err.value.kind == "cpu"
    assert "more than 1 s of CPU time" in err.value.message
    await _hash_ok(sample, tmp_path / "after")


async def test_wall_timeout_kills_the_whole_group(probe_registry: None, sample: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "job"
    started = time.monotonic()
    job = asyncio.ensure_future(
        sandbox.run("probe", "bin", "spawn", {}, [sample], workdir, limits=Limits(wall_seconds=3))
    )
    pids = await asyncio.to_thread(_job_pids, workdir, 2)  # the child and its `sleep 300`
    with pytest.raises(SandboxError) as err:
        await job
    assert time.monotonic() - started < 10
    assert err.value.kind == "timeout"
    assert err.value.message == "The conversion took longer than 3 s and was stopped."
    # the grandchild went with it
    await wait_until(lambda: not any(_alive(pid) for pid in pids), 10, "the job's processes ended")
    await _hash_ok(sample, tmp_path / "after")


async def test_segfault_is_a_crash(probe_registry: None, sample: Path, tmp_path: Path) -> None:
    with pytest.raises(SandboxError) as err:
        await sandbox.run("probe", "bin", "segv", {}, [sample], tmp_path / "job")
    assert err.value.kind == "crash"
    assert err.value.message == "The converter crashed (signal 11)."
    await _hash_ok(sample, tmp_path / "after")


async def test_output_size_limit(probe_registry: None, sample: Path, tmp_path: Path) -> None:
    with pytest.raises(SandboxError) as err:
        await sandbox.run("probe", "bin", "bigout", {}, [sample], tmp_path / "job")
    assert err.value.kind == "output_size"
    assert "larger than 1 MiB" in err.value.message


async def test_unexpected_error_leaks_no_detail_to_the_message(
    probe_registry: None, sample: Path, tmp_path: Path
) -> None:
    with pytest.raises(SandboxError) as err:
        await sandbox.run("probe", "bin", "boom", {}, [sample], tmp_path / "job")
    assert err.value.kind == "internal"
    assert "secret" not in err.value.message and "secret" not in (err.value.hint or "")
    assert "RuntimeError: internal detail /secret/path" in err.value.detail  # for the logs


async def test_output_outside_workdir_is_refused(probe_registry: None, sample: Path, tmp_path: Path) -> None:
    with pytest.raises(SandboxError) as err:
        await sandbox.run("probe", "bin", "escape", {}, [sample], tmp_path / "job")
    assert err.value.kind == "internal"


async def test_cancel_kills_child_and_helpers(probe_registry: None, sample: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "job"
    task = asyncio.ensure_future(sandbox.run("probe", "bin", "spawn", {}, [sample], workdir))
    pids = await asyncio.to_thread(_job_pids, workdir, 2)
    assert all(_alive(pid) for pid in pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: not any(_alive(pid) for pid in pids), 10, "the job's processes ended")


async def test_environment_is_minimal(
    probe_registry: None, sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("CONVERTD_DATABASE_URL", "postgresql://secret@db/convertd")
    workdir = tmp_path / "job"
    result = await sandbox.run("probe", "bin", "env", {}, [sample], workdir)
    seen = json.loads(result.path.read_text())
    assert seen["cwd"] == str(workdir)
    assert seen["env"]["HOME"] == str(workdir)
    # the one setting a job gets: LibreOffice and pandoc must not nest namespaces again
    leaked = {k for k in seen["env"] if "proxy" in k.lower() or k.startswith("CONVERTD")}
    assert leaked <= {"CONVERTD_TOOL_ISOLATION"}
    assert seen["env"].get("CONVERTD_TOOL_ISOLATION", "off") == "off"


async def test_no_network(probe_registry: None, tmp_path: Path) -> None:
    # A server listening on the host's loopback: a child in its own namespace can't see it.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port_file = tmp_path / "port.bin"
        port_file.write_text(str(server.getsockname()[1]))
        result = await sandbox.run("probe", "bin", "net", {}, [port_file], tmp_path / "job")
    outcome = result.path.read_text()
    if not sandbox.network_isolated:
        pytest.skip(f"this machine does not allow network namespaces ({outcome})")
    assert outcome.startswith("blocked"), outcome


async def test_input_names_are_kept_and_deduplicated(probe_registry: None, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second, dash = tmp_path / "a" / "x.bin", tmp_path / "b" / "x.bin", tmp_path / "-o.bin"
    for path in (first, second, dash):
        path.write_bytes(b"data")
    names = stage_inputs([first, second, dash], tmp_path / "job")
    assert names == ["x.bin", "x-2.bin", "_-o.bin"]


def _sparse_xlsx(path: Path) -> Path:
    ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    pkg_rels = "http://schemas.openxmlformats.org/package/2006/relationships"
    link = '<Relationships xmlns="{}"><Relationship Id="rId1" Type="{}/{}" Target="{}"/>'
    members = {
        "[Content_Types].xml": "<Types/>",
        "_rels/.rels": link.format(pkg_rels, rel, "officeDocument", "xl/workbook.xml")
        + "</Relationships>",
        "xl/workbook.xml": f'<workbook xmlns="{ns}" xmlns:r="{rel}"><sheets>'
        '<sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": link.format(pkg_rels, rel, "worksheet",
                                                  "worksheets/sheet1.xml") + "</Relationships>",
        "xl/worksheets/sheet1.xml": f'<worksheet xmlns="{ns}"><sheetData>'
        '<row r="1"><c r="A1"><v>1</v></c></row>'
        '<row r="1048576"><c r="XFD1048576"><v>2</v></c></row></sheetData></worksheet>',
    }  # fmt: skip
    with zipfile.ZipFile(path, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return path


async def test_native_allocation_failure_is_reported_as_memory(probe_registry: None, tmp_path: Path) -> None:
    src = _sparse_xlsx(tmp_path / "sparse.bin")
    with pytest.raises(SandboxError) as err:
        await sandbox.run("probe", "bin", "rust_oom", {}, [src], tmp_path / "job")
    assert err.value.kind == "memory", err.value.detail
    assert "memory allocation of" in err.value.detail


async def test_mismatched_content_refused_in_the_child(tmp_path: Path) -> None:
    from PIL import Image

    fake = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(fake, "JPEG")
    with pytest.raises(SandboxError) as err:
        await sandbox.run("image", "png", "webp", {}, [fake], tmp_path / "job")
    assert err.value.kind == "converter"
    assert err.value.message == "The file is not a png: its content is a jpg file."


_UNPRIVILEGED_JOB = """
import json, os, socket, sys, tempfile
from pathlib import Path
from converters.sandbox import isolation
from converters.sandbox.kernel import LayerError
workdir = Path(tempfile.mkdtemp()) / "job"
(workdir / "tmp").mkdir(parents=True)
read_fd, write_fd = os.pipe()
pid = os.fork()
if pid == 0:
    layers = isolation.enter(workdir, {"memory_bytes": 2**31, "cpu_seconds": 10, "output_bytes": 2**20},
                             tempfile.mkdtemp(), in_pid_ns=False, strict=False)
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
        layers["reached"] = True
    except OSError:
        layers["reached"] = False
    layers["uid_now"] = os.getuid()
    layers["visible"] = sorted(os.listdir("/"))
    os.write(write_fd, json.dumps(layers).encode())
    os._exit(0)
os.close(write_fd)
report = json.loads(os.read(read_fd, 65536).decode())
os.waitpid(pid, 0)
# strict: the same job is refused, naming the first missing layer (no pid namespace here)
read_fd, write_fd = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        isolation.enter(workdir, {"memory_bytes": 2**31, "cpu_seconds": 10, "output_bytes": 2**20},
                        tempfile.mkdtemp(), in_pid_ns=False, strict=True)
        os.write(write_fd, b"converted")
    except LayerError as exc:
        os.write(write_fd, f"refused: {exc.layer}".encode())
    os._exit(0)
os.close(write_fd)
report["strict"] = os.read(read_fd, 65536).decode()
print(json.dumps(report))
"""


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_layers_without_root(tmp_path: Path) -> None:
    # As an unprivileged user the job's namespaces come from a user namespace of its own.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        done = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
             "-c", _UNPRIVILEGED_JOB, str(server.getsockname()[1])],
            capture_output=True, text=True, cwd="/", timeout=30,
            env={"PYTHONPATH": str(Path(sandbox.__file__).parents[2]), "PATH": "/usr/bin"},
        )  # fmt: skip
    layers = json.loads(done.stdout or "{}")
    if not layers.get("net"):
        pytest.skip(f"this kernel allows no unprivileged user namespaces: {done.stderr}")
    assert layers["reached"] is False
    assert layers["uid_now"] == 65534
    assert layers["mount"] and layers["nnp"] and layers["seccomp"], layers
    assert "work" not in layers["visible"] or "wt-engine" not in str(layers["visible"])
    assert layers["pid"] is False  # only root gets a pid namespace per job
    assert layers["strict"] == "refused: pid"


def test_inputs_are_private_read_only_copies_and_sparse_stays_sparse(tmp_path: Path) -> None:
    src = tmp_path / "upload.bin"
    with open(src, "wb") as fh:  # 1 GiB apparent, a few bytes of data: an upload can be sparse
        fh.write(b"head")
        fh.truncate(1024**3)
        fh.seek(512 * 1024**2)
        fh.write(b"middle")
    [name] = stage_inputs([src], tmp_path / "job")
    staged = tmp_path / "job" / "in" / name
    assert staged.stat().st_ino != src.stat().st_ino and staged.stat().st_nlink == 1
    assert staged.stat().st_mode & 0o777 == 0o444
    assert staged.stat().st_size == 1024**3
    assert staged.stat().st_blocks * 512 < 64 * 1024**2  # the holes were not written out
    with open(staged, "rb") as fh:
        assert fh.read(4) == b"head"
        fh.seek(512 * 1024**2)
        assert fh.read(6) == b"middle"
