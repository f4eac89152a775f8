"""A pool of warm, jailed LibreOffice instances, owned by the worker process.

A cold `soffice --convert-to` costs more than a second of CPU before the first page; a
warm instance converts a one-page document in a tenth of that. The worker process keeps
CONVERTD_OFFICE_INSTANCES instances (default: its job concurrency), each in its own jail
(converters/tools/office/jail.py) and driven by a small UNO agent (converters/tools/office/agent.py)
over inherited pipes. The per-job sandbox child never talks to an instance: it asks the
worker through a one-job socket (converters/tools/office/broker.py), and the worker, which
knows the job's account, picks the instance.

Accounts (CONVERTD_OFFICE_REUSE):
- account (default): an instance serves one account; before it serves another it is
  restarted (a fresh jail, spool and profile). A job prefers an idle instance already
  serving its account, then a fresh one, then waits for one being started, and only then
  restarts an instance of another account in front of itself.
- none: every instance is replaced after every job: a fresh jail per conversion.
- all: any instance serves any account (single-tenant deployments only).

Recycling: after CONVERTD_OFFICE_RESTART_AFTER conversions, after any failed, timed-out or
abandoned conversion, when the jail's resident memory passes CONVERTD_OFFICE_RECYCLE_MEMORY,
and when it dies. The replacement is started in the background after the job, so the next
job finds it warm. Everything here is blocking code run in threads: the pool serves
whatever event loop (or none) the worker and the tests use.

Beside it: settings.py (CONVERTD_OFFICE_*), instance.py (one jail, its agent and its
requests), conversion.py (what a job does with the instance it was given).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from converters.base import ConversionError
from converters.tools.office import conversion
from converters.tools.office import jail as office_jail
from converters.tools.office import soffice as office
from converters.tools.office.instance import FRESH, START_TIMEOUT, Abandoned, Instance, Job, TimedOut
from converters.tools.office.settings import PoolSettings

log = logging.getLogger(__name__)


class Pool:
    def __init__(self, settings: PoolSettings, root_dir: str | None = None) -> None:
        self.settings = settings
        self.root = Path(tempfile.mkdtemp(prefix="convertd-office-", dir=root_dir))
        os.chmod(self.root, 0o700)  # only the worker opens the jails' spools from outside
        self.template: Path | None = None  # a prepared profile each start copies (_keep_template)
        self._template_taken = False
        self.instances = [Instance(self, slot) for slot in range(settings.instances)]
        self.lock = threading.Condition()
        self.waiting = 0
        self.closed = False
        self.conversions = 0
        # PR_SET_PDEATHSIG fires when the *thread* that forked a child ends: jails are
        # forked by this one thread, which lives as long as the pool, so that they die
        # with the worker but not with the short-lived thread that asked for them
        self._spawns: queue.SimpleQueue[tuple[list[str], dict[str, Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._spawner = threading.Thread(target=self._spawn_loop, name="office-spawner", daemon=True)
        self._spawner.start()
        # (account, slot, generation, jail pid) of every conversion attempt, oldest first
        self.history: list[tuple[object, int, int, int]] = []

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start every instance in the background; returns at once."""
        for inst in self.instances:
            self._restart(inst, None)

    def spawn(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """subprocess.Popen(argv, **kwargs), forked by the pool's spawner thread."""
        done: Future[Any] = Future()
        self._spawns.put((argv, kwargs, done))
        if self.closed:
            raise RuntimeError("the pool closed")
        proc: subprocess.Popen[bytes] = done.result(60)
        return proc

    def _spawn_loop(self) -> None:
        while (item := self._spawns.get()) is not None:
            argv, kwargs, done = item
            try:
                done.set_result(subprocess.Popen(argv, **kwargs))
            except BaseException as exc:
                done.set_exception(exc)

    def wait_ready(self, timeout: float = 120) -> bool:
        """Block until every instance is ready or broken (tests, doctor, benchmarks)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while any(i.state == "starting" for i in self.instances):
                if not self.lock.wait(max(0.0, deadline - time.monotonic())):
                    return False
        return True

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify_all()
        for inst in self.instances:
            inst.shutdown()
            inst.state = "stopped"
        self._spawns.put(None)
        self._spawner.join(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def _restart(self, inst: Instance, reason: str | None) -> None:
        """Replace the instance's jail in a thread (caller may hold the lock)."""
        inst.state = "starting"
        inst.account = FRESH
        inst.jobs = 0
        if reason:
            inst.recycled[reason] = inst.recycled.get(reason, 0) + 1
        threading.Thread(target=self._launch, args=(inst,), name=f"office-{inst.slot}", daemon=True).start()

    def _launch(self, inst: Instance) -> None:
        error = ""
        for attempt in range(3):
            if self.closed:
                return
            template = self.template
            try:
                inst.launch()
                error = ""
                break
            except (RuntimeError, OSError) as exc:
                error = str(exc)
                log.warning("LibreOffice instance %s: %s (attempt %s)", inst.slot, exc, attempt + 1)
                if template is not None:
                    self.template = None  # the next attempts and starts write a new profile
                time.sleep(0.5 * (attempt + 1))
        if not error:
            self._keep_template(inst)
        with self.lock:
            if self.closed:
                inst.shutdown()
                return
            inst.generation += 1
            inst.error = error
            inst.state = "broken" if error else "ready"
            self.lock.notify_all()

    def _keep_template(self, inst: Instance) -> None:
        """Keep the first profile LibreOffice set up, for every later start of this pool.

        A new profile costs soffice a start of its own (it prepares the profile, exits and
        is started again): ~0.2 s of CPU and ~0.5 s of each start, saved by copying this one
        (Instance.launch). Taken once, from an instance that has just warmed up and served
        no job: it holds our settings and LibreOffice's first-start state, nothing of any
        account. A start from it that fails drops it (see _launch)."""
        with self.lock:
            if self._template_taken or self.closed:
                return
            self._template_taken = True
        dest = self.root / "template"
        try:
            shutil.copytree(
                inst.spool / "profile", dest, symlinks=True, ignore=shutil.ignore_patterns(".lock")
            )
        except (OSError, shutil.Error) as exc:
            log.warning("LibreOffice profile template not kept: %s", exc)
            shutil.rmtree(dest, ignore_errors=True)
            return
        self.template = dest

    # -------------------------------------------------------------------- choosing

    def _pick(self, account: object) -> Instance | None:
        ready = [i for i in self.instances if i.state == "ready"]
        reuse = self.settings.reuse
        if reuse == "all":
            return ready[0] if ready else None
        fresh = [i for i in ready if i.account is FRESH]
        if reuse == "none":
            return fresh[0] if fresh else None
        mine = [i for i in ready if i.account is not FRESH and i.account == account]
        found = mine or fresh
        return found[0] if found else None

    def acquire(self, account: object, deadline: float, abandoned: Callable[[], bool]) -> Instance:
        with self.lock:
            if self.waiting >= self.settings.queue:
                raise ConversionError(
                    "Too many document conversions are waiting for LibreOffice.",
                    hint="Try again in a minute.",
                )
            self.waiting += 1
            try:
                while True:
                    if self.closed:
                        raise ConversionError("The worker is shutting down.", hint="Try again.")
                    inst = self._pick(account)
                    if inst is not None:
                        inst.state = "busy"
                        if self.settings.reuse == "account":
                            inst.account = account
                        return inst
                    states = [i.state for i in self.instances]
                    if all(s == "broken" for s in states):
                        errors = "; ".join(sorted({i.error for i in self.instances}))
                        raise ConversionError(
                            "LibreOffice could not be started on this server.",
                            hint=f"The operator should run `convertd doctor`. ({errors})"[:400],
                        )
                    if "starting" not in states:
                        # only instances of other accounts are free: restart the one idle
                        # longest, in front of this job (the one case we cannot avoid)
                        others = [i for i in self.instances if i.state in ("ready", "broken")]
                        if others:
                            self._restart(others[0], "account")
                            self.instances.append(self.instances.pop(self.instances.index(others[0])))
                    if time.monotonic() >= deadline:
                        raise TimedOut
                    if abandoned():
                        raise Abandoned
                    self.lock.wait(0.2)
            finally:
                self.waiting -= 1

    def release(self, inst: Instance, recycle: str | None) -> None:
        with self.lock:
            if self.closed:
                return
            if recycle is None and self.settings.reuse == "none":
                recycle = "reuse-none"
            if recycle is not None:
                self._restart(inst, recycle)
            else:
                inst.state = "ready"
            self.lock.notify_all()

    def convert(self, account: object, job: Job, abandoned: Callable[[], bool]) -> None:
        """Convert job.input_fd into job.output_fd on a warm instance (blocking; see
        converters/tools/office/conversion.py). Raises ConversionError."""
        conversion.convert(self, account, job, abandoned)

    # -------------------------------------------------------------------- reporting

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                "instances": len(self.instances),
                "reuse": self.settings.reuse,
                "restart_after": self.settings.restart_after,
                "conversions": self.conversions,
                "slots": [
                    {
                        "slot": i.slot,
                        "state": i.state,
                        "generation": i.generation,
                        "jobs": i.jobs,
                        "recycled": dict(i.recycled),
                        "error": i.error,
                    }
                    for i in sorted(self.instances, key=lambda i: i.slot)
                ],
            }

    def layers(self) -> dict[str, Any]:
        """The isolation one running instance reports about itself ({} if none ever ran).

        While every instance is being replaced, the last report stands for them: each
        generation is the same jail, started the same way (a job that asks meanwhile must
        not take another route only because instances are restarting)."""
        with self.lock:
            known = [i for i in self.instances if i.layers]
            known.sort(key=lambda i: i.state not in ("ready", "busy"))
            return dict(known[0].layers) if known else {}


# -------------------------------------------------------------- the process's pool

_pool: Pool | None = None
_users = 0  # workers of this process that started the pool (it closes with the last one)
_pool_lock = threading.Lock()


def start(default_instances: int = 2) -> Pool | None:
    """Start this process's pool (the worker's startup hook). None when LibreOffice or its
    jail is unavailable here, or CONVERTD_OFFICE_INSTANCES=0: office jobs then run cold."""
    global _pool, _users
    with _pool_lock:
        _users += 1
        if _pool is not None:
            return _pool
        reason = unavailable()
        if reason is not None:
            log.warning("LibreOffice pool off: %s", reason)
            return None
        settings = PoolSettings.from_env(default_instances)
        if settings.instances == 0:
            return None
        _pool = Pool(settings, os.environ.get("CONVERTD_OFFICE_DIR") or None)
        _pool.start()
        return _pool


def stop(force: bool = False) -> None:
    """The worker's shutdown hook: the last worker of the process closes the pool."""
    global _pool, _users
    with _pool_lock:
        _users = 0 if force else max(0, _users - 1)
        if _users:
            return
        pool, _pool = _pool, None
    if pool is not None:
        pool.close()


def current() -> Pool | None:
    return _pool


def unavailable() -> str | None:
    if office.soffice_path() is None:
        return office.unavailable()
    return office_jail.tools_missing()


def probe(default_instances: int) -> tuple[PoolSettings, dict[str, Any], str]:
    """Start one instance as the pool would, read back its isolation, stop it (doctor)."""
    settings = PoolSettings.from_env(default_instances)
    if (reason := unavailable()) is not None:
        return settings, {}, reason
    pool = Pool(dataclasses.replace(settings, instances=1))
    try:
        pool.start()
        pool.wait_ready(START_TIMEOUT + 10)
        layers = pool.layers()
        return settings, layers, "" if layers else pool.instances[0].error or "did not start"
    finally:
        pool.close()
