"""The warm LibreOffice pool, against real LibreOffice.

Jobs go through the real path: the worker's door (office_broker.serve_job) opened in the
job's folder, `sandbox.run` starting the sandbox child, the child's converter asking the
door, the pool's jailed instance converting. `pool.history` records which instance (slot,
generation, jail pid) served which account; every test that expects the pool to have
converted checks that it did, so no test passes through the cold fallback by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import psutil
import pytest

from converters.base import ConversionError, Limits
from converters.filetypes.document import LibreOfficeConverter
from converters.sandbox import parent as sandbox
from converters.sandbox.failures import SandboxError
from converters.tools.office import broker as office_broker
from converters.tools.office import jail as office_jail
from converters.tools.office import pool as office_pool
from converters.tools.office import soffice as office
from tests.converters.filetypes.document.test_document import (
    ALL_PAIRS,
    CONVERTER,
    WORDS,
    make_task,
    read_text,
    run,
    samples,  # noqa: F401  (a fixture)
)
from tests.converters.filetypes.document.test_document_hostile import OFFICE_ATTACKS, World, attempt, world  # noqa: F401  (a fixture)
from tests.helpers import wait_until
from tests.office_samples import odf_bytes
from tests.pdf_samples import make_pdf, page_texts

pytestmark = [
    pytest.mark.slow,  # LibreOffice pool: instances started, killed, attacked
    pytest.mark.skipif(office_pool.unavailable() is not None, reason="no LibreOffice or no jail tools"),
]


@contextlib.contextmanager
def running_pool(**settings: object) -> Iterator[office_pool.Pool]:
    pool = office_pool.Pool(office_pool.PoolSettings(**settings))  # type: ignore[arg-type]
    pool.start()
    try:
        assert pool.wait_ready(180)
        assert all(s["state"] == "ready" for s in pool.status()["slots"]), pool.status()
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def shared_pool() -> Iterator[office_pool.Pool]:
    with running_pool(instances=2) as pool:
        yield pool


def long_odt(path: Path, paragraphs: int = 2000) -> Path:
    """A document LibreOffice needs seconds for (thousands of paragraphs to lay out)."""
    body = "".join(
        f"<text:p>Quokka {i} " + "lorem ipsum dolor sit amet " * 20 + "</text:p>" for i in range(paragraphs)
    )
    path.write_bytes(odf_bytes("text", body))
    return path


def short_odt(path: Path) -> Path:
    path.write_bytes(odf_bytes("text", "<text:p>Quokka Zephyr</text:p>"))
    return path


async def job(
    pool: office_pool.Pool, account: object, src: Path, workdir: Path, out_fmt: str = "pdf", **options: object
) -> Path:
    """One job as the worker runs it: door bound to the account, then the sandbox."""
    workdir.mkdir(parents=True)
    in_fmt = src.suffix[1:]
    async with office_broker.serve_job(workdir, account, pool=pool):
        result = await sandbox.run("document", in_fmt, out_fmt, dict(options), [src], workdir)
    return result.path


def served(pool: office_pool.Pool) -> list[tuple[object, int, int]]:
    """(account, slot, generation) of each conversion attempt."""
    return [(account, slot, gen) for account, slot, gen, _pid in pool.history]


def registry_items(xcu: Path) -> set[tuple[str, str, str]]:
    """(path, name, value) of every setting in a profile's registrymodifications.xcu."""
    oor = "{http://openoffice.org/2001/registry}"
    found = set()
    for item in ElementTree.parse(xcu).getroot().iter("item"):
        for prop in item.iter("prop"):
            value = prop.find("value")
            text = value.text if value is not None and value.text is not None else ""
            found.add((item.get(f"{oor}path", ""), prop.get(f"{oor}name", ""), text))
    return found


def instance_accounts(pool: office_pool.Pool) -> dict[tuple[int, int, int], set[object]]:
    """Every jail that ever ran (slot, generation, pid) and the accounts it served."""
    seen: dict[tuple[int, int, int], set[object]] = {}
    for account, slot, gen, pid in pool.history:
        seen.setdefault((slot, gen, pid), set()).add(account)
    return seen


def soffice_pids(inst: office_pool.Instance) -> list[int]:
    pids = []
    for pid in inst.host_pids():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "soffice.bin":
                pids.append(pid)
    return pids


def busy_instance(pool: office_pool.Pool, timeout: float = 60) -> office_pool.Instance:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for inst in pool.instances:
            if inst.state == "busy":
                return inst
        time.sleep(0.02)
    raise AssertionError("no instance became busy")


def pdf_text(path: Path) -> str:
    return " ".join(page_texts(path))


# ------------------------------------------------------------------------- accounts


async def test_one_account_reuses_one_warm_instance(tmp_path: Path) -> None:
    with running_pool(instances=1) as pool:
        for n in range(3):
            out = await job(pool, 7, short_odt(tmp_path / f"s{n}.odt"), tmp_path / f"job{n}")
            assert "Quokka" in pdf_text(out)
        assert len(pool.history) == 3
        assert len(set(pool.history)) == 1  # one slot, one generation, one jail process
        assert pool.instances[0].recycled == {}


async def test_two_accounts_never_share_an_instance(tmp_path: Path) -> None:
    src = short_odt(tmp_path / "s.odt")
    with running_pool(instances=2) as pool:
        for n, account in enumerate([1, 2, 1, 2, 3, 1]):
            await job(pool, account, src, tmp_path / f"seq{n}")
        # and at once: two accounts in flight together
        await asyncio.gather(
            *(job(pool, account, src, tmp_path / f"par{n}") for n, account in enumerate([1, 2, 3, 1]))
        )
        seen = instance_accounts(pool)
        assert len(pool.history) == 10
        assert all(len(accounts) == 1 for accounts in seen.values()), seen
        # three accounts on two instances: someone's instance had to be restarted for another
        restarts = sum(inst.recycled.get("account", 0) for inst in pool.instances)
        assert restarts >= 1
        # and an account whose instance stayed warm was served by it again
        assert any(n > 1 for n in [served(pool).count(entry) for entry in set(served(pool))])


async def test_reuse_none_gives_every_job_a_fresh_instance(tmp_path: Path) -> None:
    src = short_odt(tmp_path / "s.odt")
    with running_pool(instances=1, reuse="none") as pool:
        for n in range(3):
            await job(pool, 1, src, tmp_path / f"job{n}")
        jails = [(slot, gen, pid) for _a, slot, gen, pid in pool.history]
        assert len(jails) == 3 and len(set(jails)) == 3
        assert pool.instances[0].recycled["reuse-none"] >= 2


async def test_reuse_all_shares_instances_across_accounts(tmp_path: Path) -> None:
    src = short_odt(tmp_path / "s.odt")
    with running_pool(instances=1, reuse="all") as pool:
        for n, account in enumerate([1, 2, 3]):
            await job(pool, account, src, tmp_path / f"job{n}")
        assert [a for a, _s, _g, _p in pool.history] == [1, 2, 3]
        assert len({(s, g, p) for _a, s, g, p in pool.history}) == 1  # one jail served all three
        assert pool.instances[0].recycled == {}


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INSTANCES", "REUSE", "RESTART_AFTER"):
        monkeypatch.delenv(f"CONVERTD_OFFICE_{name}", raising=False)
    default = office_pool.PoolSettings.from_env(3)
    assert (default.instances, default.reuse) == (3, "account")
    monkeypatch.setenv("CONVERTD_OFFICE_INSTANCES", "1")
    monkeypatch.setenv("CONVERTD_OFFICE_REUSE", "none")
    monkeypatch.setenv("CONVERTD_OFFICE_RESTART_AFTER", "5")
    chosen = office_pool.PoolSettings.from_env(3)
    assert (chosen.instances, chosen.reuse, chosen.restart_after) == (1, "none", 5)
    monkeypatch.setenv("CONVERTD_OFFICE_REUSE", "everyone")
    with pytest.raises(ValueError, match="account, none or all"):
        office_pool.PoolSettings.from_env(3)


# ------------------------------------------------------------------------ recycling


async def test_restart_after_n_conversions(tmp_path: Path) -> None:
    src = short_odt(tmp_path / "s.odt")
    with running_pool(instances=1, restart_after=2) as pool:
        for n in range(3):
            await job(pool, 1, src, tmp_path / f"job{n}")
        gens = [gen for _a, _s, gen, _p in pool.history]
        assert gens[0] == gens[1] != gens[2]
        assert pool.instances[0].recycled == {"restart-after": 1}


async def test_later_starts_copy_the_first_prepared_profile(tmp_path: Path) -> None:
    src = short_odt(tmp_path / "s.odt")
    with running_pool(instances=1, restart_after=1) as pool:
        # kept from the first start, before any job: our safety settings are in it
        assert pool.template is not None
        saved = registry_items(pool.template / "user" / "registrymodifications.xcu")
        assert set(office.SAFE_SETTINGS) <= saved
        (pool.template / "user" / "marker").write_text("from the template")
        await job(pool, 1, src, tmp_path / "job0")  # restart_after=1: replaced after it
        assert pool.wait_ready(120)
        profile = pool.instances[0].spool / "profile" / "user"
        assert (profile / "marker").read_text() == "from the template"
        out = await job(pool, 1, src, tmp_path / "job1")  # and the copy converts
        assert "Quokka" in pdf_text(out)
        assert pool.instances[0].recycled == {"restart-after": 2}


async def test_memory_over_the_limit_recycles(tmp_path: Path) -> None:
    # any real instance holds more than one megabyte resident
    with running_pool(instances=1, recycle_memory=1024**2) as pool:
        await job(pool, 1, short_odt(tmp_path / "s.odt"), tmp_path / "job")
        assert pool.wait_ready(120)
        assert pool.instances[0].recycled == {"memory": 1}


async def test_failed_conversion_recycles_and_the_next_job_works(
    samples: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    with running_pool(instances=1) as pool:
        with pytest.raises(ConversionError, match="could not convert"):
            await job(pool, 1, samples["xlsx"], tmp_path / "bad", "csv", sheet=9)
        assert pool.instances[0].recycled == {"failed": 1}
        out = await job(pool, 1, short_odt(tmp_path / "s.odt"), tmp_path / "good")
        assert "Quokka" in pdf_text(out)


# --------------------------------------------------------------------------- faults


async def test_instance_killed_mid_job_is_retried_on_a_fresh_one(tmp_path: Path) -> None:
    src = long_odt(tmp_path / "long.odt")
    with running_pool(instances=2) as pool:
        task = asyncio.ensure_future(job(pool, 1, src, tmp_path / "job"))
        inst = await asyncio.to_thread(busy_instance, pool)
        victims = await wait_until(lambda: soffice_pids(inst), 30, "the busy instance's LibreOffice")
        assert not task.done()
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        out = await task
        assert "Quokka 1999" in pdf_text(out)
        assert sum(i.recycled.get("died", 0) for i in pool.instances) == 1
        assert len(pool.history) == 2 and pool.history[0] != pool.history[1]
        # the worker and the pool go on
        assert "Quokka" in pdf_text(await job(pool, 1, short_odt(tmp_path / "s.odt"), tmp_path / "next"))


async def test_a_jail_that_swaps_its_job_folder_for_a_link_leads_the_worker_nowhere(tmp_path: Path) -> None:
    src = short_odt(tmp_path / "s.odt")
    outside = tmp_path / "outside"  # a host folder the worker (root) could write to
    outside.mkdir()
    (outside / "document.pdf").write_bytes(b"%PDF- not what LibreOffice wrote")
    with running_pool(instances=1) as pool:
        await job(pool, 1, src, tmp_path / "first")  # the instance's job folders now exist
        jobdir = pool.instances[0].spool / "job"
        assert sorted(p.name for p in jobdir.iterdir()) == ["in", "out"]
        assert not any((jobdir / "in").iterdir()) and not any((jobdir / "out").iterdir())
        # what a compromised LibreOffice (the spool's owner) may do between two jobs
        for name in ("in", "out"):
            (jobdir / name).rmdir()
            (jobdir / name).symlink_to(outside)
        out = await job(pool, 1, src, tmp_path / "second")
        assert "Quokka" in pdf_text(out)  # converted on the instance started in its place
        assert pool.instances[0].recycled == {"died": 1}
        assert sorted(p.name for p in outside.iterdir()) == ["document.pdf"]  # nothing staged there
        assert (outside / "document.pdf").read_bytes() == b"%PDF- not what LibreOffice wrote"


async def test_instance_dying_twice_fails_the_job_clearly(tmp_path: Path) -> None:
    src = long_odt(tmp_path / "long.odt")
    stop = threading.Event()

    def killer(pool: office_pool.Pool) -> None:
        while not stop.is_set():
            for inst in pool.instances:
                if inst.state == "busy":
                    time.sleep(0.3)
                    for pid in soffice_pids(inst):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    with running_pool(instances=2) as pool:
        thread = threading.Thread(target=killer, args=(pool,), daemon=True)
        thread.start()
        try:
            with pytest.raises(ConversionError, match="stopped unexpectedly twice"):
                await job(pool, 1, src, tmp_path / "job")
        finally:
            stop.set()
            thread.join()
        assert sum(i.recycled.get("died", 0) for i in pool.instances) == 2
        assert "Quokka" in pdf_text(await job(pool, 1, short_odt(tmp_path / "s.odt"), tmp_path / "next"))


async def test_hanging_document_is_stopped_at_the_timeout(tmp_path: Path) -> None:
    # far more than 3 s of layout work for LibreOffice: to the pool, a hanging document
    src = long_odt(tmp_path / "long.odt", paragraphs=6000)
    with running_pool(instances=2, timeout=3.0) as pool:
        started = time.monotonic()
        with pytest.raises(ConversionError, match="longer than 3 seconds"):
            await job(pool, 1, src, tmp_path / "job")
        assert time.monotonic() - started < 30  # stopped, not waited out
        assert sum(i.recycled.get("timeout", 0) for i in pool.instances) == 1
        # the other instance (or the replacement) serves the next job
        assert "Quokka" in pdf_text(await job(pool, 1, short_odt(tmp_path / "s.odt"), tmp_path / "next"))


async def test_job_killed_by_the_sandbox_frees_its_instance(tmp_path: Path) -> None:
    src = long_odt(tmp_path / "long.odt")
    with running_pool(instances=1) as pool:
        workdir = tmp_path / "job"
        workdir.mkdir()
        async with office_broker.serve_job(workdir, 1, pool=pool):
            with pytest.raises(SandboxError, match="longer than"):
                await sandbox.run(
                    "document", "odt", "pdf", {}, [src], workdir,
                    limits=Limits(memory_bytes=office.MEMORY_BYTES, cpu_seconds=60, wall_seconds=1),
                )  # fmt: skip
        # the door closed with the job: the conversion was abandoned and the jail replaced
        assert pool.instances[0].recycled == {"abandoned": 1}
        assert not (workdir / office_broker.SOCKET_NAME).exists()


# ------------------------------------------------------------------------ isolation


def _listening_inodes(table: str) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError), open(table) as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                inodes.add(fields[9])
    return inodes


async def test_no_tcp_listener_and_the_jail_is_locked(shared_pool: office_pool.Pool, tmp_path: Path) -> None:
    out = await job(shared_pool, 1, short_odt(tmp_path / "s.odt"), tmp_path / "job")
    assert "Quokka" in pdf_text(out)
    host_listeners = _listening_inodes("/proc/net/tcp") | _listening_inodes("/proc/net/tcp6")
    for inst in shared_pool.instances:
        pids = inst.host_pids()
        assert soffice_pids(inst), "no soffice.bin in the jail"
        for pid in pids:
            proc = psutil.Process(pid)
            assert proc.net_connections(kind="inet") == [], proc.cmdline()
            sockets = set()
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        sockets.add(target[8:-1])
            assert not sockets & host_listeners
            # nothing of the jail listens on TCP even inside its own namespace
            assert (
                _listening_inodes(f"/proc/{pid}/net/tcp") | _listening_inodes(f"/proc/{pid}/net/tcp6")
                == set()
            )
        # the UNO acceptor is a Unix socket in the jail's /tmp, under a folder only we open
        pipes = list((inst.spool / "tmp").glob("OSL_PIPE_*"))
        assert pipes and all(p.is_socket() for p in pipes)
        assert (shared_pool.root.stat().st_mode & 0o777) == 0o700
        # the kernel's view of the jail's processes: uid, no_new_privs, seccomp
        for pid in soffice_pids(inst):
            status = Path(f"/proc/{pid}/status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            assert fields["NoNewPrivs"].strip() == "1"
            assert fields["Seccomp"].strip() == "2"
            assert fields["CapEff"].strip() == "0000000000000000"
            if office_jail.as_root():
                assert fields["Uid"].split()[0] == str(office_jail.uid_base() + inst.slot)
            assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
            assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
            assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
        layers = inst.layers
        assert layers["interfaces_up"] == [] and layers["writable"] == ["/spool", "/tmp"]


def test_doctor_sees_every_layer() -> None:
    settings, layers, error = office_pool.probe(1)
    assert error == ""
    report = office_jail.describe(settings.memory, layers)
    failing = [text for ok, text in report if not ok]
    if office_jail.as_root() and office_jail.cgroup_kind():
        assert failing == []
    else:  # without root: no uid of its own and no cgroup, said plainly
        assert all("uid" in t or "cgroup" in t for t in failing)


# ------------------------------------------------------- formats and hostile files

OFFICE_PAIRS = [
    (src, dst)
    for src, dst in ALL_PAIRS
    if isinstance(CONVERTER.engine_for(src, dst), LibreOfficeConverter) or dst == "pdf"
]


@pytest.mark.parametrize(("src", "dst"), OFFICE_PAIRS, ids=[f"{s}-{d}" for s, d in OFFICE_PAIRS])
def test_every_office_pair_through_the_pool(
    src: str,
    dst: str,
    samples: dict[str, Path],  # noqa: F811
    shared_pool: office_pool.Pool,
    tmp_path: Path,
) -> None:
    task = make_task(samples[src], src, dst, tmp_path)
    before = shared_pool.conversions
    with contextlib.closing(office_broker.JobBroker(shared_pool, tmp_path, account=src)):
        out = run(task)
    assert shared_pool.conversions == before + 1  # the pool converted, not a cold soffice
    text = read_text(out, dst)
    for word in WORDS:
        assert word in text, f"{word!r} missing from {src}->{dst}: {text[:300]!r}"


@pytest.mark.parametrize("name", sorted(OFFICE_ATTACKS))
def test_hostile_office_files_through_the_pool(
    name: str,
    world: World,  # noqa: F811
    shared_pool: office_pool.Pool,
    tmp_path: Path,
) -> None:
    in_fmt, out_fmt, build = OFFICE_ATTACKS[name]
    (tmp_path / "job").mkdir()
    before = shared_pool.conversions
    with contextlib.closing(office_broker.JobBroker(shared_pool, tmp_path / "job", account="attacker")):
        outcome = attempt(build(world), in_fmt, out_fmt, tmp_path, world)
    if outcome == "converted":
        assert shared_pool.conversions == before + 1
    if name.endswith("that-is-html"):
        assert outcome == "refused"  # the declared format's filter, not LibreOffice's guess


def test_empty_pdf_is_still_refused(tmp_path: Path) -> None:
    """_check_pdf skips PyMuPDF when a page object is there, and still refuses a PDF without pages."""
    from converters.filetypes.document import _check_pdf
    from converters.tools.office.pages import has_page_object as _has_page_object

    empty = tmp_path / "empty.pdf"
    empty.write_bytes(
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )
    assert not _has_page_object(empty)
    with pytest.raises(ConversionError, match="came out empty"):
        _check_pdf(empty, "")
    one = tmp_path / "one.pdf"
    make_pdf(one, pages=1)
    assert _has_page_object(one)
    _check_pdf(one, "")
