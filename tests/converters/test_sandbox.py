"""converters.sandbox: a conversion runs in a limited child; its failures stay its own.

The misbehaving converters below are real code run in the real child process (the child
imports this module by name, as it imports any converter): they really allocate, spin,
sleep, crash or spawn helpers, and the sandbox must stop them and explain why.

Every test runs twice: with a warm child (started before its job, CONVERTD_SANDBOX_WARM=1)
and with a fresh one per job (CONVERTD_SANDBOX_WARM=0).
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
from converters import sandbox
from converters.base import ConversionError, Converter, Limits, Result, Task
from converters.hash import HashConverter
from converters.registry import Registry
from converters.sandbox import SandboxError

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


@pytest.fixture(autouse=True, params=["warm", "cold"])
def sandbox_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(sandbox.WARM_ENV, "1" if request.param == "warm" else "0")
    sandbox.close_warm()
    yield request.param
    sandbox.close_warm()


@pytest.fixture
def probe_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(registry_module, "_registry", Registry([MisbehavingConverter(), HashConverter()]))
    yield


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.bin"
    path.write_bytes(os.urandom(300_000))
    return path


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
    assert len(values) <= span / sandbox.PROGRESS_INTERVAL + 3


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
    with pytest.raises(SandboxError) as err:
        await sandbox.run("probe", "bin", "spawn", {}, [sample], workdir,
                          limits=Limits(wall_seconds=2))  # fmt: skip
    assert time.monotonic() - started < 10
    assert err.value.kind == "timeout"
    assert err.value.message == "The conversion took longer than 2 s and was stopped."
    child, helper = json.loads((workdir / "pids.json").read_text())
    await asyncio.sleep(0.2)
    assert not _alive(child)
    assert not _alive(helper)  # the grandchild (a `sleep 300`) went with it
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
    pids = workdir / "pids.json"
    for _ in range(100):
        if pids.exists() and pids.read_text():
            break
        await asyncio.sleep(0.05)
    child, helper = json.loads(pids.read_text())
    assert _alive(child) and _alive(helper)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    assert not _alive(child)
    assert not _alive(helper)


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
    assert not {k for k in seen["env"] if "proxy" in k.lower() or k.startswith("CONVERTD")}


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
    names = sandbox._stage_inputs([first, second, dash], tmp_path / "job")
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


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_no_network_without_root_either(tmp_path: Path) -> None:
    # As an unprivileged user the child falls back to a user namespace for its netns.
    script = (
        "import socket, sys\n"
        "from converters.child import isolate_network\n"
        "isolated = isolate_network()\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2).close()\n"
        "    print(isolated, 'reached')\n"
        "except OSError:\n"
        "    print(isolated, 'blocked')\n"
    )
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        done = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
             "-c", script, str(server.getsockname()[1])],
            capture_output=True, text=True, cwd="/", timeout=30,
            env={"PYTHONPATH": str(Path(sandbox.__file__).parent.parent), "PATH": "/usr/bin"},
        )  # fmt: skip
    if done.stdout.startswith("False"):
        pytest.skip("this kernel allows no unprivileged user namespaces")
    assert done.stdout.split() == ["True", "blocked"], done.stdout + done.stderr


# --- warm children: started before their job, still one job each --------------------------


def _ready_warm_pids(timeout: float = 20) -> list[int]:
    """The pool's children once each is past its imports and waiting for a spec on stdin."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [child.pid for child in sandbox._warm]
        waiting = []
        for pid in pids:
            with contextlib.suppress(OSError), open(f"/proc/{pid}/wchan") as fh:
                waiting.append("pipe_read" in fh.read())
        if pids and all(waiting):
            return pids
        time.sleep(0.02)
    raise AssertionError("no warm child became ready")


async def _state(workdir: Path, sample: Path, limits: Limits | None = None) -> dict:
    result = await sandbox.run("probe", "bin", "state", {}, [sample], workdir, limits=limits)
    return json.loads(result.path.read_text())


@pytest.mark.parametrize("sandbox_mode", ["warm"], indirect=True)
async def test_a_warm_child_serves_exactly_one_job(
    probe_registry: None, sample: Path, tmp_path: Path
) -> None:
    await _state(tmp_path / "first", sample)  # the pool fills lazily, on first use
    [ready] = _ready_warm_pids()
    second = await _state(tmp_path / "second", sample)
    assert second["pid"] == ready  # served by the child that was waiting
    assert "--warm" in second["cmdline"]
    await asyncio.sleep(0.1)
    assert not _alive(ready)  # one job, then gone
    [replacement] = _ready_warm_pids()
    assert replacement != ready
    third = await _state(tmp_path / "third", sample)
    assert third["pid"] == replacement
    assert len({second["pid"], third["pid"]}) == 2


@pytest.mark.parametrize("sandbox_mode", ["warm", "cold"], indirect=True)
async def test_consecutive_jobs_get_different_processes(
    probe_registry: None, sample: Path, tmp_path: Path
) -> None:
    pids = [(await _state(tmp_path / f"job{i}", sample))["pid"] for i in range(3)]
    assert len(set(pids)) == 3
    assert not any(_alive(pid) for pid in pids)


@pytest.mark.parametrize("sandbox_mode", ["warm"], indirect=True)
async def test_a_warm_child_takes_on_its_job_before_touching_input(
    probe_registry: None, sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("CONVERTD_DATABASE_URL", "postgresql://secret@db/convertd")
    await _state(tmp_path / "first", sample)
    [ready] = _ready_warm_pids()  # started, imports done, well before this job existed
    workdir = tmp_path / "job"
    limits = Limits(memory_bytes=700 * 1024**2, cpu_seconds=7, wall_seconds=20, output_bytes=3 * 1024**2)
    state = await _state(workdir, sample, limits)
    assert state["pid"] == ready
    assert state["cwd"] == str(workdir)
    assert state["env"]["HOME"] == str(workdir)
    assert state["env"]["TMPDIR"] == state["tempdir"] == str(workdir / "tmp")
    assert not {k for k in state["env"] if "proxy" in k.lower() or k.startswith("CONVERTD")}
    assert state["limits"] == {"AS": [700 * 1024**2] * 2, "CPU": [7, 12], "FSIZE": [3 * 1024**2] * 2,
                               "CORE": [0, 0]}  # fmt: skip
    assert state["sid"] == state["pid"]  # its own session: the whole group can be killed
    assert state["pdeathsig"] == 9  # SIGKILL when the worker dies
    if sandbox.network_isolated:
        assert state["netns"] != os.readlink("/proc/self/ns/net")


@pytest.mark.parametrize("sandbox_mode", ["warm"], indirect=True)
async def test_a_warm_child_started_during_another_job_holds_none_of_its_files(
    probe_registry: None, sample: Path, tmp_path: Path
) -> None:
    other = asyncio.ensure_future(sandbox.run("probe", "bin", "spawn", {}, [sample], tmp_path / "other"))
    try:
        for _ in range(200):  # the other job runs; the pool's replacement starts meanwhile
            if (tmp_path / "other" / "pids.json").exists() and sandbox._warm:
                break
            await asyncio.sleep(0.05)
        [ready] = _ready_warm_pids()
        workdir = tmp_path / "job"
        state = await _state(workdir, sample)
    finally:
        other.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await other
    assert state["pid"] == ready
    extra = {fd: target for fd, target in state["fds"].items() if fd not in ("0", "1", "2")}
    pipes = [target for target in extra.values() if target.startswith("pipe:")]
    files = [target for target in extra.values() if not target.startswith("pipe:")]
    assert len(pipes) == 1, state["fds"]  # its own message channel, nothing of the other job
    assert all(Path(f).is_relative_to(workdir) for f in files), state["fds"]
    assert state["fds"]["1"] == state["fds"]["2"] != state["fds"]["0"]


@pytest.mark.parametrize("sandbox_mode", ["warm"], indirect=True)
async def test_warm_limits_still_stop_a_job(probe_registry: None, sample: Path, tmp_path: Path) -> None:
    # the limit tests above run in both modes; this one makes sure a child that waited does
    await _state(tmp_path / "first", sample)
    _ready_warm_pids()
    with pytest.raises(SandboxError) as err:
        await sandbox.run("probe", "bin", "mem", {}, [sample], tmp_path / "mem")
    assert err.value.kind == "memory"
    _ready_warm_pids()
    with pytest.raises(SandboxError) as err:
        await sandbox.run(
            "probe", "bin", "sleep", {}, [sample], tmp_path / "sleep", limits=Limits(wall_seconds=1)
        )
    assert err.value.kind == "timeout"
    await _hash_ok(sample, tmp_path / "after")


@pytest.mark.parametrize("sandbox_mode", ["warm"], indirect=True)
async def test_dead_warm_child_is_replaced(probe_registry: None, sample: Path, tmp_path: Path) -> None:
    await _state(tmp_path / "first", sample)
    [ready] = _ready_warm_pids()
    os.kill(ready, 9)
    await asyncio.sleep(0.1)
    state = await _state(tmp_path / "job", sample)
    assert state["pid"] != ready


async def test_warm_off_starts_a_fresh_interpreter_per_job(
    probe_registry: None, sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sandbox.WARM_ENV, "1")
    await _state(tmp_path / "first", sample)
    [ready] = _ready_warm_pids()
    monkeypatch.setenv(sandbox.WARM_ENV, "0")
    workdir = tmp_path / "job"
    state = await _state(workdir, sample)
    assert "--warm" not in state["cmdline"]
    assert state["pid"] != ready
    assert state["cwd"] == state["env"]["HOME"] == str(workdir)
    assert sandbox._warm == []
    await asyncio.sleep(0.1)
    assert not _alive(ready)  # the waiting child was let go
