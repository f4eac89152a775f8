"""Worker processes started and supervised by `convertd serve`.

On a machine with more than one core, the event loop that answers HTTP and websockets must
never also do job bookkeeping (queue heartbeats, sweeps, progress writes, the sandbox's
pipes): `serve` runs its workers as `convertd worker` child processes against the same
servers, restarts one that dies, and stops them on its way out (SIGTERM first, so a running
job is handed back to the queue, then SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys

from app.config import Settings

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1
RESTART_DELAY = 1.0  # seconds before a dead worker is started again
STOP_MARGIN = 15.0  # seconds, beyond the drain time, a worker has to hand its jobs back


def default_count() -> int:
    """One worker process beside the API when there is a core for it; none (in-process) else."""
    return 1 if (os.cpu_count() or 1) > 1 else 0


def _die_with_parent() -> None:
    # a SIGKILLed `serve` must not leave workers converting for nobody
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class WorkerProcesses:
    def __init__(self, settings: Settings, count: int) -> None:
        self.env = {
            **os.environ,
            "CONVERTD_DATA_DIR": str(settings.data_dir),
            "CONVERTD_DATABASE_URL": settings.database_url or "",
            "CONVERTD_REDIS_URL": settings.redis_url or "",
        }
        self.count = count
        self.stop_grace = settings.queue.drain_seconds + STOP_MARGIN
        self.procs: list[asyncio.subprocess.Process | None] = [None] * count
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = False

    def _stopping(self) -> bool:
        return self.stopping

    async def start(self) -> None:
        self.tasks = [asyncio.create_task(self._keep(i)) for i in range(self.count)]

    async def _keep(self, slot: int) -> None:
        while not self._stopping():
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "app.cli", "worker", env=self.env, preexec_fn=_die_with_parent
            )
            self.procs[slot] = proc
            code = await proc.wait()
            if self._stopping():  # (read again: stop() ran while we waited)
                return
            log.error("worker process %s exited with %s; starting another", proc.pid, code)
            await asyncio.sleep(RESTART_DELAY)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p is not None and p.returncode is None]

    async def stop(self) -> None:
        self.stopping = True
        running = [p for p in self.procs if p is not None and p.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                await asyncio.wait_for(proc.wait(), self.stop_grace)
            except TimeoutError:
                log.warning("worker process %s did not stop in %s s; killing it", proc.pid, self.stop_grace)
                proc.kill()
                await proc.wait()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
