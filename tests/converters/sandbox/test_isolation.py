"""Every isolation layer, proven from inside a real job.

The converter below is registered only by these tests. It runs in the real job process,
forked from the real fork server, and tries what a converter compromised by a hostile file
would try: read the server's secret, other jobs' and tenants' files, the stored upload and
the server's environment, write outside its directory, reach the network, fork without end,
make forbidden system calls. It reports what it saw; the tests check that every attempt
failed, and that the worker goes on converting afterwards.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from converters import registry as registry_module
from converters.base import Converter, Limits, Result, Task
from converters.filetypes.hash import HashConverter
from converters.registry import Registry
from converters.sandbox import parent as sandbox
from converters.sandbox import servers
from converters.sandbox.failures import SandboxError
from tests.helpers import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # fork bombs, disk fills, fork-server deaths

ATTEMPTS = frozenset({"report", "ptrace", "unshare", "mount", "forkbomb", "disk", "uid"})


def _try(fn: Any) -> str:
    """'ok: ...' when fn() worked, else the error it met."""
    try:
        return f"ok: {fn()!r}"[:200]
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:200]


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(64)


def _write(path: str) -> int:
    with open(path, "wb") as fh:
        return fh.write(b"intruder")


def _connect(port: int) -> None:
    socket.create_connection(("127.0.0.1", port), timeout=2).close()


class IntruderConverter(Converter):
    """Tries what its output format names from inside the job, and writes what happened."""

    filetype: ClassVar[str] = "intruder"
    engine: ClassVar[str] = "test"
    content_agnostic: ClassVar[bool] = True
    limits: ClassVar[Limits] = Limits(memory_bytes=1024**3, cpu_seconds=20, wall_seconds=60,
                                      output_bytes=4 * 1024**2)  # fmt: skip

    def pairs(self) -> Mapping[str, frozenset[str]]:
        return {"json": ATTEMPTS}

    def convert(self, task: Task) -> Result:
        targets = json.loads(task.inputs[0].read_text())
        out = task.workdir / "report.json"
        what = task.output_format
        libc = ctypes.CDLL(None, use_errno=True)
        if what == "report":
            report = {
                "uid": os.getuid(),
                "gid": os.getgid(),
                "euid": os.geteuid(),
                "read_secret": _try(lambda: _read(targets["secret"])),
                "list_data_dir": _try(lambda: os.listdir(targets["data_dir"])),
                "read_other_job": _try(lambda: _read(targets["other_job_file"])),
                "list_other_job": _try(lambda: os.listdir(targets["other_job_dir"])),
                "read_upload": _try(lambda: _read(targets["upload"])),
                "server_environ": _try(lambda: _read(f"/proc/{targets['server_pid']}/environ")),
                "server_proc": _try(lambda: os.readlink(f"/proc/{targets['server_pid']}/exe")),
                "host_pids": _try(lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit())),
                "write_input": _try(lambda: _write(str(task.inputs[0]))),
                "write_in_dir": _try(lambda: _write(str(task.inputs[0].parent / "new"))),
                "input_links": task.inputs[0].stat().st_nlink,
                "input_inode": task.inputs[0].stat().st_ino,
                "write_tmp": _try(lambda: _write("/tmp/intruder")),
                "write_etc": _try(lambda: _write("/etc/intruder")),
                "write_usr": _try(lambda: _write("/usr/intruder")),
                "write_root": _try(lambda: _write("/intruder")),
                "write_data_dir": _try(lambda: _write(os.path.join(targets["data_dir"], "intruder"))),
                "write_workdir": _try(lambda: _write(str(task.workdir / "mine.txt"))),
                "write_devnull": _try(lambda: _write("/dev/null")),
                "read_urandom": _try(lambda: len(_read("/dev/urandom"))),
                "connect_loopback": _try(lambda: _connect(targets["port"])),
                "interfaces_up": _try(lambda: Path("/proc/net/dev").read_text()),
                "visible_root": sorted(os.listdir("/")),
                "list_old_root": _try(lambda: os.listdir("/.old")),
                "read_old_secret": _try(lambda: _read("/.old" + targets["secret"])),
                "no_new_privs": Path("/proc/self/status").read_text().split("NoNewPrivs:")[1].split()[0],
                "seccomp": Path("/proc/self/status").read_text().split("Seccomp:")[1].split()[0],
                "nproc": __import__("resource").getrlimit(__import__("resource").RLIMIT_NPROC),
            }
            out.write_text(json.dumps(report))
        elif what == "ptrace":
            libc.ptrace(0, 0, None, None)  # PTRACE_TRACEME: the filter kills us here
            out.write_text("ptrace returned")
        elif what == "unshare":
            libc.unshare(0x40000000)  # CLONE_NEWNET
            out.write_text("unshare returned")
        elif what == "mount":
            libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None)
            out.write_text("mount returned")
        elif what == "forkbomb":
            started, error = 0, ""
            for _ in range(2000):
                try:
                    pid = os.fork()
                except OSError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    break
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                started += 1
            out.write_text(json.dumps({"started": started, "error": error}))
        elif what == "disk":
            for i in range(200):  # each file is within the file-size limit; together they are not
                (task.workdir / f"fill-{i}").write_bytes(b"\1" * 1024**2)
                time.sleep(0.02)
            out.write_text("wrote 200 MiB")
        elif what == "uid":
            out.write_text(json.dumps({"uid": os.getuid()}))
        return Result(out)


@pytest.fixture
def intruder_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(registry_module, "_registry", Registry([IntruderConverter(), HashConverter()]))
    yield


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A data directory laid out as the service keeps one, a listening port, and the targets."""
    data_dir = tmp_path / "data"
    (data_dir / "uploads" / "acct-2").mkdir(parents=True)
    (data_dir / "work" / "other-job").mkdir(parents=True)
    (data_dir / "secret").write_text("server-secret-value")
    (data_dir / "work" / "other-job" / "theirs.txt").write_text("another tenant's file")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        upload = data_dir / "uploads" / "acct-2" / "upload.json"
        targets = {
            "data_dir": str(data_dir),
            "secret": str(data_dir / "secret"),
            "other_job_dir": str(data_dir / "work" / "other-job"),
            "other_job_file": str(data_dir / "work" / "other-job" / "theirs.txt"),
            "upload": str(upload),
            "server_pid": os.getpid(),
            "port": listener.getsockname()[1],
        }
        upload.write_text(json.dumps(targets))
        yield {"targets": targets, "upload": upload, "workdir": data_dir / "work" / "this-job"}


async def _hash_ok(tmp_path: Path) -> None:
    """A real conversion after an attack: the worker goes on."""
    tmp_path.mkdir(exist_ok=True)
    sample = tmp_path / "after.bin"
    sample.write_bytes(os.urandom(10_000))
    options = {"algorithms": ["sha256"]}
    result = await sandbox.run("hash", "bin", "json", options, [sample], tmp_path / "after")
    assert json.loads(result.path.read_text())["sha256"] == hashlib.sha256(sample.read_bytes()).hexdigest()


def _failed(outcome: str) -> bool:
    return not outcome.startswith("ok")


async def test_every_layer_holds_from_inside_a_job(intruder_registry: None, server: dict[str, Any]) -> None:
    upload: Path = server["upload"]
    result = await sandbox.run("intruder", "json", "report", {}, [upload], server["workdir"])
    seen = json.loads(result.path.read_text())
    if not (servers.layers or {}).get("mount"):
        pytest.skip(f"this machine gives jobs no mount namespace: {servers.layers}")
    assert seen["uid"] != 0 and seen["euid"] != 0 and seen["gid"] != 0
    # only the path down to its own directory exists of the data directory
    assert "secret" not in seen["list_data_dir"] and "uploads" not in seen["list_data_dir"]
    for attempt in ("read_secret", "read_other_job", "list_other_job", "read_upload",
                    "server_environ", "server_proc", "write_input", "write_in_dir",
                    "write_etc", "write_usr", "write_root", "write_data_dir",
                    "connect_loopback", "list_old_root", "read_old_secret"):  # fmt: skip
        assert _failed(seen[attempt]), (attempt, seen[attempt])
    assert seen["write_workdir"] == "ok: 8"
    # its /tmp is a small tmpfs of its own (LibreOffice needs one): nothing reaches the host's
    assert not Path("/tmp/intruder").exists()
    # what tools need still works: /dev/null (subprocess opens it), /dev/urandom
    assert seen["write_devnull"] == "ok: 8" and seen["read_urandom"] == "ok: 64"
    # the staged input is a copy: not the upload's inode, no second name
    assert seen["input_links"] == 1
    assert seen["input_inode"] != upload.stat().st_ino
    assert upload.read_text() == json.dumps(server["targets"])  # unchanged
    assert "data" not in seen["visible_root"]
    assert seen["no_new_privs"] == "1"
    assert seen["seccomp"] == "2"  # filter mode
    assert seen["nproc"][0] <= 1024
    if servers.layers and servers.layers.get("pid"):
        # a pid namespace of its own: the server's pid is not there, its own few are
        assert seen["server_environ"].startswith("FileNotFoundError"), seen["server_environ"]
        assert len(json.loads(seen["host_pids"][4:])) < 10
    # no interface up, loopback included
    lines = seen["interfaces_up"].splitlines()[2:]
    assert all(int(line.split()[2]) == 0 for line in lines), lines  # nothing ever received


@pytest.mark.parametrize("call", ["ptrace", "unshare", "mount"])
async def test_a_forbidden_system_call_kills_the_job_cleanly(
    intruder_registry: None, server: dict[str, Any], tmp_path: Path, call: str
) -> None:
    if not (servers.layers or {}).get("seccomp", True):
        pytest.skip("no seccomp on this machine")
    with pytest.raises(SandboxError) as err:
        await sandbox.run("intruder", "json", call, {}, [server["upload"]], server["workdir"])
    assert err.value.kind == "crash"
    assert "forbids" in err.value.message, err.value.message
    assert not (server["workdir"] / "report.json").exists()
    await _hash_ok(tmp_path)


async def test_forking_past_the_limit_fails(intruder_registry: None, server: dict[str, Any]) -> None:
    result = await sandbox.run("intruder", "json", "forkbomb", {}, [server["upload"]], server["workdir"])
    seen = json.loads(result.path.read_text())
    assert seen["started"] < 300, seen
    assert "Resource temporarily unavailable" in seen["error"], seen


async def test_disk_cap_stops_a_job_that_fills_its_directory(
    intruder_registry: None, server: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sandbox.DISK_ENV, str(20 * 1024**2))
    with pytest.raises(SandboxError) as err:
        await sandbox.run("intruder", "json", "disk", {}, [server["upload"]], server["workdir"])
    assert err.value.kind == "output_size"
    assert "20 MiB to disk" in err.value.message
    written = sum(p.stat().st_size for p in server["workdir"].glob("fill-*"))
    assert written < 100 * 1024**2
    await _hash_ok(tmp_path)


async def test_jobs_run_under_distinct_unprivileged_uids(
    intruder_registry: None, server: dict[str, Any]
) -> None:
    uids = []
    for i in range(3):
        workdir = server["workdir"] / str(i)
        result = await sandbox.run("intruder", "json", "uid", {}, [server["upload"]], workdir)
        uids.append(json.loads(result.path.read_text())["uid"])
        assert result.path.stat().st_uid == os.getuid()  # handed back as the server's own
    assert 0 not in uids
    if os.getuid() == 0:
        assert len(set(uids)) == 3  # a uid per job: no job can signal or read another's files


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


def _children(parent: int, comm: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat.rpartition(")")[2].split()
            if name == comm and int(rest[1]) == parent:
                found.append(int(entry))
    return found


async def test_a_dead_fork_server_fails_its_job_and_is_replaced(
    intruder_registry: None, server: dict[str, Any], tmp_path: Path
) -> None:
    await _hash_ok(tmp_path / "first")
    job = asyncio.ensure_future(
        sandbox.run("intruder", "json", "disk", {}, [server["upload"]], server["workdir"])
    )
    await wait_until(lambda: (server["workdir"] / "fill-1").exists(), 60, "the job started writing")
    zygote = servers._zygotes[servers.ALL]  # the test's converter is in no smaller family
    old = zygote.popen.pid
    inits = _children(old, "cat")  # pid 1 of each job's namespace (as root)
    os.kill(old, 9)
    with pytest.raises(SandboxError) as err:
        await job
    assert err.value.kind == "crash"
    assert "lost" in err.value.message
    # they read a pipe only the fork server held: they end with it
    await wait_until(
        lambda: not [pid for pid in inits if _state(pid) not in ("Z", "gone")], 10, "the jobs' pid 1 ended"
    )
    await _hash_ok(tmp_path / "second")
    again = await sandbox.run("intruder", "json", "uid", {}, [server["upload"]], tmp_path / "third")
    assert again.path.is_file()
    assert servers._zygotes[servers.ALL].popen.pid != old


def test_jobs_from_other_loops_threads_and_a_forked_worker(tmp_path: Path) -> None:
    sample = tmp_path / "s.bin"
    sample.write_bytes(b"abc" * 1000)
    digest = hashlib.sha256(sample.read_bytes()).hexdigest()

    def convert(workdir: Path) -> str:
        async def go() -> str:
            result = await sandbox.run("hash", "bin", "json", {"algorithms": ["sha256"]}, [sample], workdir)
            return json.loads(result.path.read_text())["sha256"]

        return asyncio.run(go())

    assert convert(tmp_path / "a") == digest
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(convert(tmp_path / f"t{i}"))) for i in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [digest] * 3
    pid = os.fork()
    if pid == 0:  # a worker forked after its parent's zygote started gets its own
        code = 1
        try:
            code = 0 if convert(tmp_path / "forked") == digest else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert convert(tmp_path / "b") == digest  # and the parent's still works


async def test_a_fork_server_is_replaced_after_its_job_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every child shares its fork server's memory layout: a new one re-randomises it
    monkeypatch.setenv(servers.RECYCLE_ENV, "2")
    await _hash_ok(tmp_path / "a")  # may start a server (an earlier one had served more)
    family = servers.FAMILIES["converters.filetypes.hash"]
    first = servers._zygotes[family]
    while first.jobs < 2:
        await _hash_ok(tmp_path / f"fill{first.jobs}")
    await _hash_ok(tmp_path / "b")
    assert servers._zygotes[family] is not first
    # the retired one leaves once its jobs are done
    await wait_until(lambda: first.popen.poll() is not None, 10, "the retired fork server exited")


@pytest.mark.skipif(os.geteuid() != 0, reason="every layer needs root (no pid namespace otherwise)")
async def test_as_root_every_layer_is_active(tmp_path: Path) -> None:
    # a layer that silently failed to come up would leave every other test here green
    await _hash_ok(tmp_path)
    assert servers.layers is not None
    assert [name for name, on in servers.layers.items() if not on] == []
    await servers.prestart()  # every family's fork server probes its own layers
    assert {family: z.missing for family, z in servers._zygotes.items()} == {
        family: [] for family in {*servers.FAMILIES.values(), servers.ALL}
    }


async def test_concurrent_jobs_each_get_their_own_process(
    intruder_registry: None, server: dict[str, Any]
) -> None:
    jobs = [
        sandbox.run("intruder", "json", "uid", {}, [server["upload"]], server["workdir"] / f"c{i}")
        for i in range(4)
    ]
    results = await asyncio.gather(*jobs)
    uids = [json.loads(r.path.read_text())["uid"] for r in results]
    assert 0 not in uids
    if os.geteuid() == 0:
        assert len(set(uids)) == 4
