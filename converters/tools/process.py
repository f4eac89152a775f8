"""Running an external tool (LibreOffice, pandoc): its own process group, dying with us, and
isolated in user, mount, PID and network namespaces when the machine allows.

`run_isolated` is the one process helper of the tools: the tool runs in its own process
group (`kill_group` ends it and whatever it started) and dies with its parent
(`die_with_parent`, PR_SET_PDEATHSIG), so a sandbox that kills a conversion ends the tool too.
The sandbox (converters/sandbox/) uses the same two for its job processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from converters.base import ConversionError

ISOLATION_ENV = "CONVERTD_TOOL_ISOLATION"  # auto (default) | require | off

# The system part of a jail's root, run in the new root's directory (after its usr/, etc/,
# dev/ and proc/ are made and /usr is bound there): the library directories (a link stays
# a link), the few files of /etc that LibreOffice and fontconfig read, /dev's basics and a
# private /proc. Shared by `_ISOLATE_SH` and the office jail (`converters.tools.office.jail`).
SYSTEM_TREE_SH = r"""
for l in bin sbin lib lib64 lib32 libx32; do
  if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "$l"
  elif [ -d "/$l" ]; then mkdir "$l"; mount --rbind "/$l" "$l"; mount -o remount,bind,ro "$l"
  fi
done
for e in fonts libreoffice alternatives ld.so.cache localtime; do
  [ -e "/etc/$e" ] || continue
  if [ -d "/etc/$e" ]; then mkdir "etc/$e"; else : > "etc/$e"; fi
  mount --bind "/etc/$e" "etc/$e"
  mount -o remount,bind,ro "etc/$e"
done
for n in null zero urandom random; do : > "dev/$n"; mount --bind "/dev/$n" "dev/$n"; done
mount -t proc -o nosuid,nodev,noexec proc proc
"""

# Runs as "root" of a fresh user namespace: builds a root file system that holds /usr, a
# few files of /etc, /dev/null & co, a private /proc and the job's folder, then chroots
# into it. The network namespace has nothing but its own loopback, and that is down.
_ISOLATE_SH = (
    r"""
set -e
share="$1"; ro="$2"; shift 2
new="$share/.root"
mkdir -p "$new"
mount -t tmpfs -o size=8m,mode=755 none "$new"
cd "$new"
mkdir -p usr etc dev proc tmp
mount --rbind /usr usr
mount -o remount,bind,ro usr"""
    + SYSTEM_TREE_SH
    + r"""IFS=:
for p in $ro; do
  if [ -d "$p" ]; then mkdir -p "./$p"; else mkdir -p "./${p%/*}"; : > "./$p"; fi
  mount --bind "$p" "./$p"
  mount -o remount,bind,ro "./$p"
done
unset IFS
mkdir -p "./$share"
mount --bind "$share" "./$share"
exec chroot . "$@"
"""
)


def isolation_mode() -> str:
    mode = os.environ.get(ISOLATION_ENV, "auto").strip().lower()
    return mode if mode in ("auto", "require", "off") else "auto"


@functools.cache
def isolation_available() -> bool:
    """Whether this machine lets us create user, mount, PID and network namespaces."""
    if shutil.which("unshare") is None or not Path("/usr/sbin/chroot").exists():
        return False
    with tempfile.TemporaryDirectory(prefix="convertd-iso-") as tmp:
        try:
            proc = subprocess.run(
                [*_wrapper(Path(tmp).resolve(), ()), "/usr/bin/true"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=20,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
    return proc.returncode == 0


def isolation_missing_but_required() -> str | None:
    if isolation_mode() == "require" and not isolation_available():
        return (
            f"{ISOLATION_ENV}=require but this machine does not allow unprivileged user "
            "namespaces (unshare --user --mount --net --pid): LibreOffice and pandoc would "
            "run without file-system and network isolation"
        )
    return None


def isolation_used() -> bool:
    return isolation_mode() != "off" and isolation_available()


def _wrapper(share: Path, read_only: Sequence[Path]) -> list[str]:
    return [
        shutil.which("unshare") or "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "--net",
        "--pid",
        "--ipc",
        "--uts",
        "--fork",
        "--kill-child",
        "--",
        "/bin/sh",
        "-c",
        _ISOLATE_SH,
        "sh",
        str(share),
        ":".join(str(p) for p in read_only),
    ]


def run_isolated(
    cmd: list[str],
    *,
    share: Path,
    env: Mapping[str, str],
    timeout: float,
    what: str,
    read_only: Sequence[Path] = (),
    isolate: bool | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run cmd seeing only `share` (read-write) and `read_only`, when the machine allows.

    The tool runs in its own process group and dies with us (PR_SET_PDEATHSIG), so a
    sandbox that kills the conversion also ends LibreOffice; on timeout the group is killed.
    """
    if isolate is None:
        isolate = isolation_used()
    full = [*_wrapper(share, read_only), *cmd] if isolate else cmd
    run_env = dict(env)
    if isolate:
        # mount and chroot live in sbin; the tool's own PATH applies after chroot too
        run_env["PATH"] = "/usr/sbin:/sbin:" + run_env.get("PATH", "/usr/bin:/bin")
    with subprocess.Popen(
        full,
        cwd=share,
        env=run_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
        preexec_fn=die_with_parent,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            proc.communicate()
            raise ConversionError(
                f"{what} took longer than {timeout:g} seconds and was stopped.",
                hint="The document may be very large or built to hang the converter.",
            ) from None
        finally:
            # a helper process left behind must not outlive the job
            kill_group(proc)
    return subprocess.CompletedProcess(full, proc.returncode, stdout, stderr)


# loaded once: a preexec_fn, or a job's process the sandbox just forked, only makes the call
_libc = ctypes.CDLL(None)
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """The kernel kills this process when its parent dies (PR_SET_PDEATHSIG), whatever
    killed the parent: in a tool's child before exec, and in the sandbox's job process
    (again after each change of credentials, which clears it)."""
    with contextlib.suppress(OSError, AttributeError):
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def kill_group(proc: subprocess.Popen[Any] | int) -> None:
    """Kill the process group `proc` leads (a Popen started with start_new_session=True,
    or the pid of a process that called setsid): it and whatever it started."""
    pid = proc if isinstance(proc, int) else proc.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
