"""The layers a job's process enters before it touches input (run inside the job's child).

Order matters and is fixed here: namespaces and mounts while we still hold the privileges
to make them, then the unprivileged uid/gid, then resource limits, then no_new_privs and
the seccomp filter (which forbids any later mount or namespace change). Only then does the
converter open its input.

Layers (names reported to `convertd doctor` and checked by CONVERTD_SANDBOX=strict):

- ``uid``: a uid/gid of its own, never 0 (as root: ``UID_BASE`` + the child's pid, so two
  jobs never share a uid; as a normal user: that user inside a user namespace).
- ``mount``: its own mount namespace whose root is a read-only tmpfs holding /usr, the
  library links, a few files of /etc, the Python install and site-packages, /dev basics,
  and the job's directory, the only writable place (its ``in/`` is read-only).
- ``pid``: its own pid namespace and a /proc of that namespace only (the zygote creates the
  namespace; see `converters.sandbox.forkserver`).
- ``net``: a network namespace in which no interface is up, not even loopback.
- ``nnp``: no_new_privs (no setuid binary can give privileges back).
- ``seccomp``: `converters.sandbox.seccomp`'s filter.
- ``limits``: rlimits on memory, CPU, file size, core dumps and processes.

The system calls are in `converters.sandbox.kernel`, the file tree in `converters.sandbox.tree`.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from converters.sandbox.kernel import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    MS_PRIVATE,
    MS_REC,
    PR_SET_NO_NEW_PRIVS,
    LayerError,
    check,
    drop_capabilities,
    libc,
    mount,
    unshare,
)
from converters.sandbox.tree import bind_job, build_skeleton, pivot_into, tree_paths
from converters.tools.process import die_with_parent

LAYERS: tuple[str, ...] = ("uid", "mount", "pid", "net", "nnp", "seccomp", "limits", "disk")

LAYER_DESCRIPTIONS: dict[str, str] = {
    "uid": "jobs run under an unprivileged uid of their own, never root",
    "mount": "jobs see only /usr, Python and their own directory (no data dir, secret, other jobs)",
    "pid": "jobs have their own pid namespace and /proc (the server's processes are invisible)",
    "net": "jobs have a network namespace with no interface up (no network, no loopback)",
    "nnp": "no_new_privs: no setuid program can raise a job's privileges",
    "seccomp": "a seccomp filter kills a job that calls ptrace, mount, unshare, bpf, keyctl...",
    "limits": "rlimits on memory, CPU time, file size, core dumps and processes",
    "disk": "the fork server stops a job whose directory outgrows its disk cap",
}

UID_BASE = 1_900_000_000  # + the job's pid (< 2**22): a uid no account on the host uses
MAX_PROCESSES = 256  # RLIMIT_NPROC counts threads too: ffmpeg and LibreOffice use dozens


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


@dataclasses.dataclass
class Prepared:
    """What `prepare` achieved: the layers that do not depend on the job."""

    mount_point: str
    root: bool
    uid: int
    gid: int
    active: dict[str, bool]
    errors: dict[str, str]


def prepare(mount_point: str, *, in_pid_ns: bool, uid: int | None = None) -> Prepared:
    """Namespaces and the job-independent tree: done ahead, before any job exists.

    Never raises: what failed is recorded, and `finish` decides (strict or not)."""
    root = os.geteuid() == 0
    real_uid, real_gid = os.getuid(), os.getgid()
    if root:
        # unique while the job lives (a pid in the host's namespace): no two jobs share a uid
        uid = gid = uid or UID_BASE + os.getpid()
    else:
        uid, gid = real_uid, real_gid
    prep = Prepared(mount_point, root, uid, gid, dict.fromkeys(LAYERS, False), {})
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    try:
        unshare(flags if root else flags | CLONE_NEWUSER)
        if not root:
            # map ourselves to ourselves: files keep their owner, and we are no one's root
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{real_uid} {real_uid} 1")
            _write("/proc/self/gid_map", f"{real_gid} {real_gid} 1")
        prep.active["net"] = True  # a fresh network namespace: its loopback stays down
    except OSError as exc:
        prep.errors["net"] = prep.errors["mount"] = str(exc)
        return prep
    try:
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        # fonts: fontconfig's cache and CONVERTD_FONTS_DIR, read-only (converters.tools.fonts)
        build_skeleton(mount_point, tree_paths(), uid, gid, with_proc=in_pid_ns)
        prep.active["mount"] = True
        prep.active["pid"] = in_pid_ns
    except OSError as exc:
        prep.errors["mount"] = str(exc)
    return prep


def finish(
    prep: Prepared, workdir: Path, limits: dict[str, int], *, strict: bool, parent: int | None = None
) -> dict[str, bool]:
    """The job's part, in order: its directory into the tree and pivot, limits, drop to the
    job's uid, no_new_privs, seccomp. Returns which layers are active.

    With strict, the first missing layer raises LayerError (the job is refused); otherwise
    the job goes on with what worked, and the caller reports what did not.

    Long on purpose: the layers must go up in exactly this order in one process (each one
    takes away what the next would need), and reading them top to bottom is the audit.
    """
    active = dict(prep.active)
    uid, gid = prep.uid, prep.gid

    def attempt(layer: str, fn: Callable[[], object]) -> bool:
        try:
            fn()
            return True
        except OSError as exc:
            prep.errors[layer] = str(exc)
            return False

    if prep.root:
        # the job's uid must own its directory; inputs and in/ stay ours, read-only to it
        for path in (workdir, workdir / "tmp"):
            if path.exists():
                os.chown(path, uid, gid)
        # and the doors the worker opened for this job alone (the office pool's socket,
        # mode 0600: only this uid may connect)
        for entry in os.scandir(workdir):
            if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                os.chown(entry.path, uid, gid)

    def tree() -> None:
        bind_job(prep.mount_point, workdir)
        pivot_into(prep.mount_point)

    if active["mount"]:
        active["mount"] = attempt("mount", tree)
    if not active["mount"]:
        active["pid"] = False  # the host's /proc is still in view

    def drop() -> None:
        if prep.root:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        # a user namespace gave us every capability in it: give them all back
        drop_capabilities()
        if os.getuid() == 0 or os.geteuid() == 0:
            raise LayerError("uid", "still uid 0")

    # limits first: as root we may set any, after the drop only lower them
    active["limits"] = attempt("limits", lambda: apply_limits(limits))
    active["uid"] = attempt("uid", drop)
    # a change of credentials clears the parent-death signal: arm it again, then make sure
    # the zygote did not die in between (in a pid namespace its pid 1 covers that case)
    die_with_parent()
    if parent is not None and os.getppid() != parent:
        os._exit(1)
    if os.getuid() == 0 or os.geteuid() == 0:
        # never run a converter as root, whatever else failed
        raise LayerError("uid", "could not leave uid 0")
    try:
        os.chdir(workdir)
    except PermissionError:
        # no mount namespace (a container without CAP_SYS_ADMIN): the job's uid meets the
        # data directory's own permissions on the way to its directory
        raise LayerError(
            "mount",
            "no mount namespace, and the job's uid cannot reach its directory: allow "
            "namespaces (CAP_SYS_ADMIN) or let others search (o+x) the directories above it",
        ) from None

    def nnp() -> None:
        check("nnp", "prctl(PR_SET_NO_NEW_PRIVS)", libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))

    active["nnp"] = attempt("nnp", nnp)

    def filter_() -> None:
        from converters.sandbox import seccomp

        seccomp.install()

    active["seccomp"] = attempt("seccomp", filter_)
    active["disk"] = True  # the zygote watches the directory's size from outside
    missing = [layer for layer in LAYERS if not active[layer]]
    if missing:
        detail = "; ".join(f"{layer}: {prep.errors.get(layer, 'not available')}" for layer in missing)
        if strict:
            raise LayerError(missing[0], detail)
        print(f"convertd sandbox: layers not entered: {detail}", file=sys.stderr)
    return active


def enter(
    workdir: Path,
    limits: dict[str, int],
    mount_point: str,
    *,
    in_pid_ns: bool,
    strict: bool,
    uid: int | None = None,
    parent: int | None = None,
) -> dict[str, bool]:
    """`prepare` then `finish`, in one go (the probe job; tests)."""
    prep = prepare(mount_point, in_pid_ns=in_pid_ns, uid=uid)
    return finish(prep, workdir, limits, strict=strict, parent=parent)


def _limit(which: int, soft: int, hard: int | None = None) -> None:
    hard = soft if hard is None else hard
    try:
        resource.setrlimit(which, (soft, hard))
    except (ValueError, OSError):
        # Never raise a limit above what we were given: keep the tighter inherited one.
        _soft, cur_hard = resource.getrlimit(which)
        if cur_hard != resource.RLIM_INFINITY:
            resource.setrlimit(which, (min(soft, cur_hard), cur_hard))


def apply_limits(limits: dict[str, int]) -> None:
    _limit(resource.RLIMIT_AS, int(limits["memory_bytes"]))
    cpu = int(limits["cpu_seconds"])
    # the soft limit sends SIGXCPU (reported as "CPU time"), the hard one SIGKILLs
    _limit(resource.RLIMIT_CPU, cpu, cpu + 5)
    _limit(resource.RLIMIT_FSIZE, int(limits["output_bytes"]))
    _limit(resource.RLIMIT_CORE, 0)
    # per uid: with a uid per job (as root) or a user namespace per job, this job's alone
    _limit(resource.RLIMIT_NPROC, int(limits.get("processes", MAX_PROCESSES)))
