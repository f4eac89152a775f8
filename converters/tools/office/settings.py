"""The warm LibreOffice pool's settings (CONVERTD_OFFICE_*), read once when the pool starts."""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

from converters.tools.office import soffice as office

Reuse = Literal["account", "none", "all"]


@dataclasses.dataclass(frozen=True)
class PoolSettings:
    instances: int = 2
    reuse: Reuse = "account"
    # JODConverter's maxTasksPerProcess: a restart costs ~1.7 s of CPU (a new soffice and its
    # warm-up), 17 ms a job at 100; leaks are caught by recycle_memory meanwhile
    restart_after: int = 200
    timeout: float = office.TIMEOUT_SECONDS
    memory: int = office.MEMORY_BYTES  # RLIMIT_AS of each process and the cgroup's ceiling
    recycle_memory: int = office.MEMORY_BYTES // 2  # resident memory that retires an instance
    queue: int = 64  # jobs that may wait for an instance at once; more are refused

    @classmethod
    def from_env(cls, default_instances: int) -> PoolSettings:
        def num(name: str, default: float) -> float:
            try:
                return float(os.environ.get(f"CONVERTD_OFFICE_{name}", "") or default)
            except ValueError:
                return default

        reuse = os.environ.get("CONVERTD_OFFICE_REUSE", "account").strip().lower() or "account"
        if reuse not in ("account", "none", "all"):
            raise ValueError(f"CONVERTD_OFFICE_REUSE must be account, none or all, not {reuse!r}")
        instances = int(num("INSTANCES", default_instances))
        return cls(
            instances=max(0, instances),
            reuse=reuse,  # type: ignore[arg-type]  # one of the three literals: checked just above
            restart_after=max(1, int(num("RESTART_AFTER", cls.restart_after))),
            timeout=num("TIMEOUT", cls.timeout),
            memory=int(num("MEMORY", cls.memory)),
            recycle_memory=int(num("RECYCLE_MEMORY", cls.recycle_memory)),
            queue=max(1, int(num("QUEUE", cls.queue))),
        )
