"""The seccomp filter every job runs under, built with libseccomp through ctypes.

An allow-list would have to know every system call of Pillow, FFmpeg, LibreOffice and
pandoc on every libc; a deny-list of what no converter needs (debugging other processes,
namespaces and mounts, kernel keyrings, BPF, modules, kexec, swap, reboot, perf,
userfaultfd...) closes the usual kernel attack surface and escape routes without breaking
an engine when it is updated. A denied call kills the whole process (SIGSYS), so an attempt
ends the job and is reported, rather than failing quietly inside a library.

Two calls cannot be judged by their arguments and are answered with an error instead:
clone3 (its flags sit in memory a filter cannot read; ENOSYS makes libc fall back to
clone, whose flags we check) and io_uring (a large attack surface nobody here needs).

libseccomp.so.2 is on every Debian system (systemd depends on it); ctypes needs no Python
binding in the venv.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


def SCMP_ACT_ERRNO(err: int) -> int:
    return 0x00050000 | (err & 0x0000FFFF)


# Killed on sight: nothing a converter does needs them, several are classic escapes.
DENIED: tuple[str, ...] = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at",
    "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "userfaultfd", "lookup_dcookie",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname",
    "setdomainname", "iopl", "ioperm", "vhangup", "uselib", "personality",
    "fanotify_init", "nfsservctl", "_sysctl",
)  # fmt: skip
REFUSED: tuple[str, ...] = ("clone3", "io_uring_setup", "io_uring_enter", "io_uring_register")
# clone with any of these flags makes a namespace: the job never may
CLONE_NAMESPACE_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]  # fmt: skip


@functools.cache
def _lib() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:  # find_library runs ldconfig and gcc: only when the usual name fails
        lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_rule_add_exact.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def available() -> bool:
    try:
        _lib()
    except OSError:
        return False
    return True


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise OSError(-rc, f"seccomp: {what}: {errno.errorcode.get(-rc, -rc)}")


def _build(lib: ctypes.CDLL) -> int:
    ctx: int | None = lib.seccomp_init(SCMP_ACT_ALLOW)  # a c_void_p result: int or NULL
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    try:
        for name in DENIED:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr >= 0:  # unknown on this architecture: nothing to deny
                _check(lib.seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, nr, 0), name)
        for name in REFUSED:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr >= 0:
                _check(lib.seccomp_rule_add(ctx, SCMP_ACT_ERRNO(errno.ENOSYS), nr, 0), name)
        clone = lib.seccomp_syscall_resolve_name(b"clone")
        if clone >= 0:
            # x86_64's clone takes its flags as the first argument
            for flag in _bits(CLONE_NAMESPACE_FLAGS):
                cmp = _ArgCmp(0, SCMP_CMP_MASKED_EQ, flag, flag)
                _check(lib.seccomp_rule_add_array(ctx, SCMP_ACT_KILL_PROCESS, clone, 1, ctypes.byref(cmp)),
                       "clone")  # fmt: skip
    except BaseException:
        lib.seccomp_release(ctx)
        raise
    return ctx


@functools.cache
def compiled() -> bytes:
    """The filter as a BPF program, built once (in the fork server) and loaded per job:
    building it with libseccomp costs milliseconds, loading the program microseconds."""
    lib = _lib()
    ctx = _build(lib)
    read_fd, write_fd = os.pipe()
    try:
        _check(lib.seccomp_export_bpf(ctx, write_fd), "export")
        os.close(write_fd)
        write_fd = -1
        chunks = []
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
    finally:
        lib.seccomp_release(ctx)
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    program = b"".join(chunks)
    if not program or len(program) % 8:
        raise OSError(errno.EINVAL, "seccomp: empty or malformed BPF program")
    return program


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    """Load the filter into this process (inherited by every process it starts).

    no_new_privs is set first: the kernel requires it (or CAP_SYS_ADMIN) to load a filter."""
    program = compiled()
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def _bits(mask: int) -> list[int]:
    return [1 << i for i in range(64) if mask >> i & 1]
