"""The jail one warm LibreOffice instance lives in, and how it is started.

Layers, from the outside in (each reported by `convertd doctor` from what the agent reads
back from the kernel, not from what we asked for):

- own mount namespace with a fresh root: /usr, the few files of /etc LibreOffice and
  fontconfig read, /dev/null & co., a private /proc, the agent and the link guard's source
  (read-only, /agent), and the instance's spool directory as /spool (with /tmp inside it).
  Nothing else of the host, and nothing of the data directory but that spool, exists in
  there; only /spool is writable;
- own PID, IPC and UTS namespaces: it cannot see or signal the worker or other instances;
- own network namespace with nothing up (not even loopback): the UNO acceptor is a pipe
  (a Unix socket in the jail's private /tmp), and the worker talks to the agent over
  inherited stdin/stdout pipes, so no TCP port exists anywhere;
- an unprivileged uid of its own per instance slot (when the worker is root; otherwise
  the worker's own uid mapped through a user namespace), all capabilities dropped,
  no_new_privs, a seccomp deny-list (loaded by the agent), RLIMIT_AS/NPROC/CORE;
- a cgroup with a memory ceiling and a one-CPU quota, where the kernel offers one.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import defusedxml

import converters
from converters.tools import fonts, process
from converters.tools.office import soffice as office

AGENT = Path(__file__).resolve().with_name("agent.py")
# What the agent imports besides the standard library and uno: the link guard
# (converters.tools.office.links, which a job's document passes before LibreOffice reads it)
# and defusedxml, its XML parser. Bound read-only as /agent/lib/converters and
# /agent/lib/defusedxml: source code only, nothing of the data directory.
GUARD_LIBRARY = (
    Path(converters.__file__).resolve().parent,
    Path(defusedxml.__file__).resolve().parent,
)
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: python3-uno is built for it
UID_BASE_ENV = "CONVERTD_OFFICE_UID_BASE"
UID_BASE_DEFAULT = 64100  # instance slot n runs as uid/gid base + n (no /etc/passwd entry needed)
NPROC_LIMIT = 512  # per instance uid: LibreOffice runs a handful of threads' worth of tasks

# Runs as root of the new mount namespace (real root, or root of a new user namespace):
# builds the jail's root on a tmpfs and chroots into it; the rest of argv is then run
# through setpriv (uid drop, no capabilities, no_new_privs).
_JAIL_SH = (
    r"""
set -e
spool="$1"; agent="$2"; fonts="$3"; lib="$4"; shift 4
new="$spool/../root"
mkdir -p "$new"
mount --make-rprivate /
mount -t tmpfs -o size=4m,mode=755 none "$new"
cd "$new"
mkdir -p usr etc dev proc spool tmp agent
mount --rbind /usr usr
mount -o remount,bind,ro,nosuid,nodev usr"""
    + process.SYSTEM_TREE_SH
    + r""": > agent/office_agent.py
mount --bind "$agent" agent/office_agent.py
mount -o remount,bind,ro agent/office_agent.py
set -f; IFS=:
for p in $lib; do
  mkdir -p "agent/lib/${p##*/}"
  mount --bind "$p" "agent/lib/${p##*/}"
  mount -o remount,bind,ro,nosuid,nodev "agent/lib/${p##*/}"
done
set +f; unset IFS
mount --bind "$spool" spool
mount -o remount,bind,nosuid,nodev spool
mount --bind "$spool/tmp" tmp
mount -o remount,bind,nosuid,nodev tmp
set -f; IFS=:
for p in $fonts; do
  mkdir -p "./$p"
  mount --bind "$p" "./$p"
  mount -o remount,bind,ro,nosuid,nodev "./$p"
done
set +f; unset IFS
mount -o remount,ro,bind .
exec chroot . "$@"
"""
)


def uid_base() -> int:
    try:
        return int(os.environ.get(UID_BASE_ENV, "") or UID_BASE_DEFAULT)
    except ValueError:
        return UID_BASE_DEFAULT


def as_root() -> bool:
    return os.geteuid() == 0


@functools.cache
def tools_missing() -> str | None:
    for tool in ("unshare", "setpriv", "chroot"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"{tool} (util-linux / coreutils) is not installed"
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing"
    return None


def soffice_bin() -> str | None:
    soffice = office.soffice_path()
    if soffice is None:
        return None
    real = Path(soffice).resolve()
    binary = real.with_name("soffice.bin")
    return str(binary if binary.exists() else real)


def command(spool: Path, slot: int, agent_config: str) -> list[str]:
    """The argv that starts the agent (and through it soffice) inside a new jail."""
    uid = uid_base() + slot if as_root() else 0
    unshare = ["unshare", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child"]
    if not as_root():
        # only a user namespace lets us build mounts; its root maps to our own uid
        unshare.insert(1, "--user")
        unshare.insert(2, "--map-root-user")
    privs = [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
    ]
    return [
        *unshare, "--", "/bin/sh", "-c", _JAIL_SH, "sh", str(spool), str(AGENT), _font_paths(),
        ":".join(str(p) for p in GUARD_LIBRARY),
        *privs, "--", SYSTEM_PYTHON, "-I", "/agent/office_agent.py", agent_config,
    ]  # fmt: skip


def _font_paths() -> str:
    """fontconfig's cache and the deployment's font folders, bound read-only at their own
    paths (converters.tools.fonts); ':' separated, as the jail script reads them."""
    return ":".join(str(p) for p in fonts.read_only_paths() if ":" not in str(p))


def environment() -> dict[str, str]:
    return {
        **({"FONTCONFIG_FILE": f"/spool/{fonts.CONF_NAME}"} if fonts.extra_dirs() else {}),
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/spool",
        "TMPDIR": "/tmp",
        "SAL_USE_VCLPLUGIN": "svp",
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "ftp_proxy": "http://127.0.0.1:9",
    }


def prepare_spool(spool: Path, slot: int) -> None:
    """A clean spool, owned by the instance's uid: the only place it may write."""
    if spool.exists():
        shutil.rmtree(spool)
    for sub in ("", "tmp", "job"):
        (spool / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    fonts.fontconfig_env(spool)  # the deployment's fonts, when it has some (read by fontconfig)
    if as_root():
        uid = uid_base() + slot
        for sub in ("", "tmp", "job"):
            os.chown(spool / sub, uid, uid)


def give(path: Path, slot: int) -> None:
    """Hand a file or folder we made in the spool to the instance's uid."""
    if as_root():
        uid = uid_base() + slot
        os.chown(path, uid, uid)


# ------------------------------------------------------------------------------ cgroups

CGROUP_NAME = "convertd-office"


@functools.cache
def cgroup_kind() -> str | None:
    """'v2' or 'v1' when we may create cgroups with memory and cpu control, else None."""
    if not as_root():
        return None
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        controllers = (root / "cgroup.controllers").read_text().split()
        return "v2" if {"memory", "cpu"} <= set(controllers) else None
    if (root / "memory" / "cgroup.procs").exists() and (root / "cpu" / "cgroup.procs").exists():
        return "v1"
    return None


def cgroup_dirs(slot: int) -> list[Path]:
    kind = cgroup_kind()
    name = f"{CGROUP_NAME}/{os.getpid()}-{slot}"
    if kind == "v2":
        return [Path("/sys/fs/cgroup") / name]
    if kind == "v1":
        return [Path("/sys/fs/cgroup/memory") / name, Path("/sys/fs/cgroup/cpu") / name]
    return []


def make_cgroup(slot: int, memory: int) -> list[Path]:
    """Create the slot's cgroup(s) with a memory ceiling and one CPU; [] when impossible."""
    dirs = cgroup_dirs(slot)
    made: list[Path] = []
    try:
        for d in dirs:
            if cgroup_kind() == "v2":
                parent = d.parent
                parent.mkdir(exist_ok=True)
                with contextlib.suppress(OSError):
                    (parent / "cgroup.subtree_control").write_text("+memory +cpu")
            d.mkdir(parents=True, exist_ok=True)
            made.append(d)
            if cgroup_kind() == "v2":
                (d / "memory.max").write_text(str(memory))
                (d / "memory.swap.max").write_text("0")
                (d / "cpu.max").write_text("100000 100000")
            elif d.parts[4] == "memory":
                (d / "memory.limit_in_bytes").write_text(str(memory))
            else:
                (d / "cpu.cfs_period_us").write_text("100000")
                (d / "cpu.cfs_quota_us").write_text("100000")
    except OSError:
        remove_cgroup(made)
        return []
    return made


def remove_cgroup(dirs: list[Path]) -> None:
    for d in dirs:
        with contextlib.suppress(OSError):
            d.rmdir()


def preexec(cgroups: list[Path]) -> None:
    """In the forked child before exec: join the cgroups, die with the worker."""
    for d in cgroups:
        with contextlib.suppress(OSError), open(d / "cgroup.procs", "w") as fh:
            fh.write("0")
    process.die_with_parent()


def kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the whole jail: unshare's group (its child is the PID namespace's init, whose
    death takes every process of the namespace with it)."""
    process.kill_group(proc)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


# ------------------------------------------------------------------------------ report


def describe(memory: int, layers: dict[str, Any]) -> list[tuple[bool, str]]:
    """(ok, sentence) per isolation layer, from what a running instance reported."""
    gib = memory / 1024**3
    uid = layers.get("uid")
    return [
        (
            bool(uid),
            f"runs as uid {uid}" + (" (its own per instance slot)" if uid else " (root of a user namespace)"),
        ),
        (
            True,
            "own mount, PID, IPC and UTS namespaces: only /usr, fonts and its spool exist, "
            "only the spool is writable",
        )
        if layers.get("writable") == ["/spool", "/tmp"] and layers.get("pid") == 1
        else (False, f"file system not confined as intended (writable: {layers.get('writable')})"),
        (
            not layers.get("interfaces_up"),
            "own network namespace, no interface up; UNO over a pipe inside the jail, no TCP port",
        )
        if layers.get("interfaces") is not None
        else (False, "network namespace unknown"),
        (
            bool(layers.get("no_new_privs")),
            "no_new_privs" if layers.get("no_new_privs") else "no_new_privs NOT set",
        ),
        (
            bool(layers.get("seccomp")),
            "seccomp filter" if layers.get("seccomp") else "no seccomp filter (libseccomp missing?)",
        ),
        (True, f"RLIMIT_AS {gib:g} GiB per process")
        if layers.get("memory_limit") == memory
        else (False, "no memory rlimit"),
        (
            bool(layers.get("cgroup")),
            f"cgroup: memory {gib:g} GiB, 1 CPU"
            if layers.get("cgroup")
            else "no cgroup (memory and CPU only bounded by rlimits and the job timeout)",
        ),
    ]
