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
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import functools
import os
import resource
import stat
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from converters.tools import fonts

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
ROOT_TMPFS_BYTES = 1024 * 1024  # the read-only skeleton: directories and a few small files
TMP_TMPFS_BYTES = 16 * 1024 * 1024
OLD_ROOT = "/.old"  # /tmp: pipes and lock files, not the job's real work

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
SYS_PIVOT_ROOT = 155  # x86_64
SYS_SETNS = 308

# files of /etc a converter or its helpers read (dynamic loader, fonts, LibreOffice, time zone)
ETC_ENTRIES: tuple[str, ...] = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "fonts", "libreoffice", "alternatives",
    "localtime", "timezone", "mime.types", "magic", "nsswitch.conf", "ImageMagick-6",
)  # fmt: skip
DEVICES: tuple[str, ...] = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long


class LayerError(OSError):
    """A layer could not be entered; `layer` names it."""

    def __init__(self, layer: str, what: str, err: int = 0) -> None:
        super().__init__(err, f"{layer}: {what}: {os.strerror(err) if err else 'failed'}")
        self.layer = layer


def _check(layer: str, what: str, rc: int) -> None:
    if rc != 0:
        raise LayerError(layer, what, ctypes.get_errno())


def unshare(flags: int) -> None:
    _check("namespaces", f"unshare({flags:#x})", _libc.unshare(flags))


def setns(fd: int, nstype: int) -> None:
    _check("namespaces", "setns", _libc.setns(fd, nstype))


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [s.encode() if s is not None else None for s in (source, target, fstype)]
    rc = _libc.mount(enc[0], enc[1], enc[2], flags, data.encode() if data else None)
    _check("mount", f"mount {source} on {target}", rc)


def die_with_parent() -> None:
    """The kernel kills us when our parent (the zygote) dies, whatever killed it."""
    _libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)


# ------------------------------------------------------------------------ the file tree


@functools.cache  # computed once in the fork server: its children inherit the answer
def python_paths() -> list[Path]:
    """What the interpreter needs to go on importing inside the tree (read-only).

    The standard library and the installation's prefix, the venv and every site-packages
    directory on the path, and each package directory we import from outside those (our own
    `converters`, which lives beside the data directory in a source checkout: bind the
    package, never the checkout). Imports made before isolation need nothing here.
    """
    import converters

    paths = {Path(sys.base_prefix), Path(sys.prefix), Path(sys.executable).resolve().parent}
    for entry in sys.path:
        if entry and ("site-packages" in entry or "dist-packages" in entry) and os.path.isdir(entry):
            paths.add(Path(entry))
    paths.update(Path(p) for p in converters.__path__)
    return sorted(paths)


@functools.cache  # like python_paths: the fork server's environment does not change
def tree_paths() -> tuple[Path, ...]:
    """Every extra path a job's tree binds read-only: Python, and the fonts
    (fontconfig's cache and CONVERTD_FONTS_DIR, `converters.tools.fonts`)."""
    return tuple(python_paths() + fonts.read_only_paths())


def _below(root: str, path: Path) -> str:
    return root + str(path)


def _mkdirs(root: str, path: Path) -> str:
    target = _below(root, path)
    os.makedirs(target, mode=0o755, exist_ok=True)
    return target


def _bind(
    root: str, src: Path, *, writable: bool = False, dest: Path | None = None, device: bool = False
) -> None:
    """Bind src at the same path in the tree (read-only unless writable)."""
    if src.is_symlink() and dest is None:
        # a symlinked top-level directory (/lib -> usr/lib on merged-/usr systems)
        os.makedirs(_below(root, src.parent), mode=0o755, exist_ok=True)
        link = _below(root, src)
        if not os.path.lexists(link):
            os.symlink(os.readlink(src), link)
        return
    dest = dest or src
    if src.is_dir():
        target = _mkdirs(root, dest)
    else:
        _mkdirs(root, dest.parent)
        target = _below(root, dest)
        if not os.path.exists(target):
            with open(target, "w"):
                pass
    mount(str(src), target, None, MS_BIND | MS_REC)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (0 if device else MS_NODEV) | (0 if writable else MS_RDONLY)
    mount(None, target, None, flags)


def _skeleton_files(root: str, uid: int, gid: int) -> None:
    # getpwuid() must answer for the job's uid (fontconfig, LibreOffice and ssh-style tools
    # ask); nothing else of the host's accounts is shown
    nologin = "/usr/sbin/nologin"
    for name, text in (
        ("passwd", f"root:x:0:0::/:{nologin}\nconvertd:x:{uid}:{gid}::/nonexistent:{nologin}\n"),
        ("group", f"root:x:0:\nconvertd:x:{gid}:\n"),
        ("hosts", "127.0.0.1 localhost\n"),
    ):
        fd = os.open(f"{root}/etc/{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode())
            os.fchmod(fd, 0o644)  # whatever our umask
        finally:
            os.close(fd)


# One step of building the skeleton: (kind, path in the tree, argument, flags), paths as
# bytes with the mount point in front. Made once per fork server (`skeleton_plan`), so a
# job's process only makes the system calls: every stat, access check and path join done
# in a freshly forked child also copies the pages of the objects it touches.
_Step = tuple[str, bytes, bytes | None, int]


class _Planner:
    """Works out, once, the steps `build_skeleton` takes in a fresh tmpfs at root."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.steps: list[_Step] = []
        self.made: set[str] = set()  # paths the steps create in the tree
        self.bound: list[str] = []  # host directories bound at their own path
        self.links: list[str] = []  # symlinks made in the tree (to host paths)

    def _add(self, kind: str, path: str, arg: bytes | None = None, flags: int = 0) -> None:
        self.steps.append((kind, os.fsencode(self.root + path), arg, flags))

    def _exists(self, path: str) -> bool:
        if path in self.made:
            return True
        for top in self.bound + self.links:
            if path == top or path.startswith(top + "/"):
                # inside a bind (or through a link into one): the host's own path
                return os.path.lexists(path)
        return False

    def mkdirs(self, path: str, mode: int = 0o755) -> None:
        parts = [p for p in path.split("/") if p]
        for n in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:n])
            if not self._exists(sub):
                self._add("mkdir", sub, None, mode)
                self.made.add(sub)

    def file(self, path: str) -> None:
        if not self._exists(path):
            self._add("file", path)
            self.made.add(path)

    def symlink(self, target: str, path: str) -> None:
        self._add("symlink", path, os.fsencode(target))
        self.made.add(path)

    def tmpfs(self, path: str, flags: int, options: str) -> None:
        self._add("tmpfs", path, options.encode(), flags)

    def bind(self, src: Path, *, device: bool = False) -> None:
        """As `_bind(root, src)`: at the same path, read-only."""
        path = str(src)
        if src.is_symlink():
            # a symlinked top-level directory (/lib -> usr/lib on merged-/usr systems)
            self.mkdirs(str(src.parent))
            if not self._exists(path):
                self.symlink(os.readlink(src), path)
                self.links.append(path)
            return
        if src.is_dir():
            self.mkdirs(path)
        else:
            self.mkdirs(str(src.parent))
            self.file(path)
        flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (0 if device else MS_NODEV) | (0 if device else MS_RDONLY)
        self._add("bind", path, os.fsencode(path), flags)
        if src.is_dir():
            self.bound.append(path)


@functools.cache
def skeleton_plan(root: str, extra_ro: tuple[Path, ...]) -> tuple[_Step, ...]:
    """The steps that build the job-independent tree at root (see `build_skeleton`).

    Called once in the fork server: its children inherit the answer. What it reads of
    the host (which top-level directories are links, which files exist) holds for the fork
    server's life, like `python_paths`."""
    plan = _Planner(root)
    plan.tmpfs("", MS_NOSUID | MS_NODEV, f"size={ROOT_TMPFS_BYTES},mode=755")
    plan.mkdirs(OLD_ROOT, mode=0)  # where pivot_root puts the host's tree, to be covered
    for top in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/" + top)
        if os.path.lexists(path):
            plan.bind(path)
    plan.mkdirs("/etc")
    plan._add("accounts", "/etc")  # /etc/passwd, group, hosts: they name the job's uid
    for name in ETC_ENTRIES:
        path = Path("/etc") / name
        if path.exists():
            plan.bind(path)
    plan.mkdirs("/dev/shm")
    for dev in DEVICES:
        if stat.S_ISCHR(os.stat(f"/dev/{dev}").st_mode):
            plan.bind(Path("/dev") / dev, device=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        plan.symlink(target, f"/dev/{name}")
    # tools insist on a writable /tmp (LibreOffice puts its pipe there, whatever TMPDIR
    # says): a small one of its own; TMPDIR points into the job directory for real work
    plan.mkdirs("/tmp")
    plan.tmpfs("/tmp", MS_NOSUID | MS_NODEV, f"size={TMP_TMPFS_BYTES},mode=1777")
    # (first: a Python install or checkout under /tmp is then bound inside it)
    for path in extra_ro:
        if os.access(path, os.R_OK | os.X_OK):  # one we cannot read would be of no use inside
            plan.bind(path)
    plan._add("proc", "/proc")
    return tuple(plan.steps)


def _mount_b(
    source: bytes | None, target: bytes, fstype: bytes | None, flags: int, data: bytes | None
) -> None:
    if _libc.mount(source, target, fstype, flags, data) != 0:
        err = ctypes.get_errno()
        raise LayerError("mount", f"mount {source!r} on {target!r}", err)


def build_skeleton(root: str, extra_ro: Iterable[Path], uid: int, gid: int, with_proc: bool) -> None:
    """Mount the job-independent part of the tree at root (done before the job arrives):
    a read-only tmpfs holding /usr and the library links, a few files of /etc, /dev basics,
    a /tmp of its own, the read-only extra paths and (with_proc) the pid namespace's /proc."""
    for kind, path, arg, flags in skeleton_plan(root, tuple(extra_ro)):
        if kind == "bind":
            _mount_b(arg, path, None, MS_BIND | MS_REC, None)
            _mount_b(None, path, None, flags, None)
        elif kind == "mkdir":
            os.mkdir(path, flags)
        elif kind == "file":
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        elif kind == "symlink":
            assert arg is not None
            os.symlink(arg, path)
        elif kind == "tmpfs":
            _mount_b(b"tmpfs", path, b"tmpfs", flags, arg)
        elif kind == "accounts":
            _skeleton_files(os.fsdecode(path[: -len(b"/etc")]), uid, gid)
        elif kind == "proc" and with_proc:  # the /proc of the job's own pid namespace
            os.mkdir(path, 0o555)
            _mount_b(b"proc", path, b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)


def bind_job(root: str, workdir: Path) -> None:
    """Add the job's directory to the tree, then make the tree's own tmpfs read-only."""
    # at the same path (the spec's paths stay true); inputs read-only
    _bind(root, workdir, writable=True)
    if (workdir / "in").is_dir():
        _bind(root, workdir / "in")
    # /dev/shm is the job's own tmp: what a tool writes there counts as its disk
    tmp = workdir / "tmp"
    if tmp.is_dir():
        _bind(root, tmp, writable=True, dest=Path("/dev/shm"))
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, f"size={ROOT_TMPFS_BYTES}")


def pivot_into(root: str) -> None:
    """Make root the process's / and cover the host's tree, leaving no path to it.

    The old root is put under /.old and covered by an empty read-only tmpfs rather than
    detached: detaching waits for an RCU grace period (measured 1 to 100+ ms on a busy
    2-core VM), covering costs one mount. Nothing in the job can uncover it: it holds no
    capability and seccomp kills umount, mount, open_tree and move_mount; no descriptor
    into the host's tree is left open. Only /proc/self/mountinfo still names the host's
    mount points. The namespace, with the host's mounts in it, goes when the job exits.
    """
    os.chdir(root)
    _check("mount", "pivot_root", _libc.syscall(SYS_PIVOT_ROOT, b".", OLD_ROOT[1:].encode()))
    os.chdir("/")
    mount("tmpfs", OLD_ROOT, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=000")


# ------------------------------------------------------------------------------ layers


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
        _drop_capabilities()
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
        _check("nnp", "prctl(PR_SET_NO_NEW_PRIVS)", _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))

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


def _drop_capabilities() -> None:
    # capset(version 3, all sets empty): the job keeps no capability, in any namespace
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    _check("uid", "capset", _libc.capset(header, data))


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


def errno_name(err: int) -> str:
    return errno.errorcode.get(err, str(err))
