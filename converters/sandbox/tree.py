"""The file tree a job's process sees: built in its own mount namespace, then pivoted into.

A read-only tmpfs holding /usr and the library links, a few files of /etc, /dev's basics,
a /tmp of its own, the Python install and our package, the fonts, a /proc of the job's pid
namespace, and the job's directory, the only writable place (its ``in/`` read-only). The
job-independent part is planned once in the fork server (`skeleton_plan`) and mounted by
each job's process before its job arrives (`build_skeleton`); `bind_job` and `pivot_into`
finish it once the job is known (`converters.sandbox.isolation`).
"""

from __future__ import annotations

import functools
import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

from converters.sandbox.kernel import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    SYS_PIVOT_ROOT,
    check,
    libc,
    mount,
    mount_b,
)
from converters.tools import fonts

ROOT_TMPFS_BYTES = 1024 * 1024  # the read-only skeleton: directories and a few small files
TMP_TMPFS_BYTES = 16 * 1024 * 1024
OLD_ROOT = "/.old"  # /tmp: pipes and lock files, not the job's real work

# files of /etc a converter or its helpers read (dynamic loader, fonts, LibreOffice, time zone)
ETC_ENTRIES: tuple[str, ...] = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "fonts", "libreoffice", "alternatives",
    "localtime", "timezone", "mime.types", "magic", "nsswitch.conf", "ImageMagick-6",
)  # fmt: skip
DEVICES: tuple[str, ...] = ("null", "zero", "full", "random", "urandom")


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


def build_skeleton(root: str, extra_ro: Iterable[Path], uid: int, gid: int, with_proc: bool) -> None:
    """Mount the job-independent part of the tree at root (done before the job arrives):
    a read-only tmpfs holding /usr and the library links, a few files of /etc, /dev basics,
    a /tmp of its own, the read-only extra paths and (with_proc) the pid namespace's /proc."""
    for kind, path, arg, flags in skeleton_plan(root, tuple(extra_ro)):
        if kind == "bind":
            mount_b(arg, path, None, MS_BIND | MS_REC, None)
            mount_b(None, path, None, flags, None)
        elif kind == "mkdir":
            os.mkdir(path, flags)
        elif kind == "file":
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        elif kind == "symlink":
            assert arg is not None
            os.symlink(arg, path)
        elif kind == "tmpfs":
            mount_b(b"tmpfs", path, b"tmpfs", flags, arg)
        elif kind == "accounts":
            _skeleton_files(os.fsdecode(path[: -len(b"/etc")]), uid, gid)
        elif kind == "proc" and with_proc:  # the /proc of the job's own pid namespace
            os.mkdir(path, 0o555)
            mount_b(b"proc", path, b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)


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
    check("mount", "pivot_root", libc.syscall(SYS_PIVOT_ROOT, b".", OLD_ROOT[1:].encode()))
    os.chdir("/")
    mount("tmpfs", OLD_ROOT, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=000")
