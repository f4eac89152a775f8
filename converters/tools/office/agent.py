"""The inside of one warm LibreOffice instance: `/usr/bin/python3 office_agent.py`.

This file runs under Debian's /usr/bin/python3 (it imports `uno` from python3-uno), inside
the instance's jail (see converters/tools/office/jail.py): as the instance's own unprivileged
uid, in its own mount, PID, IPC, UTS and network namespaces, with no_new_privs set. Of the
project it imports only the link guard (converters.tools.office.links, with defusedxml),
bound read-only under /agent/lib: a job the worker sends here without a sandbox child
(converters/tools/office/direct.py) has its document checked and stripped of links in this
jail, before LibreOffice opens it, as the child would have done in its own.

It locks itself down further (seccomp, resource limits), starts soffice with a UNO
acceptor on a *pipe* (a Unix socket under this jail's private /tmp, which nothing outside
the jail can see) and then serves the worker over its own stdin/stdout: one JSON request
per line, one JSON reply per line. The worker reaches LibreOffice only through these
inherited pipes; there is no TCP port and no socket path outside the jail.

Requests:
  {"op": "convert", "input": "/spool/job/in/document.docx", "output": "/spool/job/out/document.pdf",
   "import_filter": "...", "import_options": "", "export_filter": "...",
   "export_options": "", "filter_data": {"PageRange": ["string", "1-2"]},
   "guard": "docx", "check_pdf": true}
  {"op": "ping"}
Replies: {"ok": true, "output": path, "rss": bytes} or {"ok": false, "error": text, "rss": bytes}.
With "guard" (the input's format) the document passes the link guard first; a document it
refuses gets {"ok": false, "refused": message, "hint": text}. With "check_pdf" the reply
says whether the PDF holds a page object ("pages": bool).
The first line written is {"ready": true, "layers": {...}} once LibreOffice answers, or
{"ready": false, "error": text}.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import json
import os
import resource
import subprocess
import sys
import time
import zipfile
from typing import Any

PIPE_NAME = "convertd"
RESTART_REQUESTED = 81  # soffice.bin's exit code after preparing a new profile (oosplash restarts it)
CONNECT = f"uno:pipe,name={PIPE_NAME};urp;StarOffice.ComponentContext"

# Syscalls LibreOffice never needs and a compromised one would use to break out or spy:
# answered with EPERM (ptrace with death, as a probe of the filter is itself suspicious).
DENIED_SYSCALLS = (
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "move_mount",
    "open_tree", "fsopen", "fsmount", "fspick", "mount_setattr",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd",
    "process_vm_readv", "process_vm_writev", "open_by_handle_at", "name_to_handle_at",
    "swapon", "swapoff", "reboot", "acct", "quotactl", "syslog", "iopl", "ioperm",
    "personality", "lookup_dcookie", "settimeofday", "clock_settime", "adjtimex",
    "clock_adjtime", "sethostname", "setdomainname", "vhangup", "nfsservctl",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)  # fmt: skip
KILLED_SYSCALLS = ("ptrace",)

# The smallest DOCX Writer opens: the warm-up's document (see Office.warm_up)
_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
WARM_UP_DOCX = {
    "[Content_Types].xml": '<?xml version="1.0" encoding="UTF-8"?><Types xmlns='
    '"http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default '
    'Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
    "</Types>",
    "_rels/.rels": '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns='
    '"http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="word/document.xml"/></Relationships>',
    "word/document.xml": f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{_W}">'
    "<w:body><w:p><w:r><w:t>Warm-up</w:t></w:r></w:p></w:body></w:document>",
}

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_KILL_PROCESS = 0x80000000
_SCMP_ACT_ERRNO_EPERM = 0x00050000 | errno.EPERM


def say(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def load_seccomp() -> bool:
    """A deny-list filter through libseccomp (ctypes: no Python binding needed)."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return False
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        return False
    try:
        for names, action in (
            (DENIED_SYSCALLS, _SCMP_ACT_ERRNO_EPERM),
            (KILLED_SYSCALLS, _SCMP_ACT_KILL_PROCESS),
        ):
            for name in names:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr >= 0:  # unknown on this architecture: nothing to deny
                    lib.seccomp_rule_add(ctx, action, nr, 0)
        return bool(lib.seccomp_load(ctx) == 0)
    finally:
        lib.seccomp_release(ctx)


def apply_limits(memory: int, nproc: int) -> None:
    # RLIMIT_AS per process (soffice.bin is one big process); no core dumps of documents;
    # a process cap per uid (every instance has a uid of its own) stops fork bombs
    for which, value in (
        (resource.RLIMIT_AS, memory),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, nproc),
    ):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(which, (value, value))


def status_field(pid: int | str, name: str) -> str:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def rss_bytes() -> int:
    """Resident memory of every process in this jail (its PID namespace holds only us)."""
    total = 0
    for status in glob.glob("/proc/[0-9]*/status"):
        value = status_field(status.split("/")[2], "VmRSS")
        if value.endswith("kB"):
            total += int(value[:-2]) * 1024
    return total


def interfaces_up() -> list[str]:
    """Network interfaces of this namespace that are up (there should be none)."""
    up = []
    for name in os.listdir("/sys/class/net") if os.path.isdir("/sys/class/net") else []:
        try:
            with open(f"/sys/class/net/{name}/flags") as fh:
                if int(fh.read(), 16) & 1:
                    up.append(name)
        except OSError:
            continue
    if not up and not os.path.isdir("/sys/class/net"):
        # no /sys in the jail: ask the kernel through a socket ioctl instead
        import fcntl
        import socket
        import struct

        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            for _index, name in socket.if_nameindex():
                try:
                    raw = fcntl.ioctl(sock, 0x8913, struct.pack("16sH22x", name.encode(), 0))
                except OSError:
                    continue
                if struct.unpack("16sH22x", raw)[1] & 1:
                    up.append(name)
    return up


def layers(seccomp_loaded: bool) -> dict[str, Any]:
    """What this jail actually is, read from the kernel (reported by `convertd doctor`)."""
    import socket

    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "no_new_privs": status_field("self", "NoNewPrivs") == "1",
        "seccomp": seccomp_loaded and status_field("self", "Seccomp") == "2",
        "interfaces": [name for _i, name in socket.if_nameindex()],
        "interfaces_up": interfaces_up(),
        "pid": os.getpid(),  # 1: we are the init of our own PID namespace
        "memory_limit": resource.getrlimit(resource.RLIMIT_AS)[0],
        "writable": [p for p in ("/", "/usr", "/etc", "/spool", "/tmp") if os.access(p, os.W_OK)],
    }


class Office:
    def __init__(self, soffice: str, profile: str) -> None:
        self.soffice = soffice
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.desktop: Any = None

    def launch(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.soffice,
                f"-env:UserInstallation={self.profile}",
                "--headless", "--invisible", "--nologo", "--norestore", "--nodefault",
                "--nolockcheck", "--nofirststartwizard",
                f"--accept=pipe,name={PIPE_NAME};urp;StarOffice.ComponentContext",
            ],
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr.fileno(),  # our stdout is the worker's reply channel
            stderr=sys.stderr.fileno(),
        )  # fmt: skip

    def start(self, deadline: float) -> None:
        import uno

        self.launch()
        local = uno.getComponentContext()
        resolver = local.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver", local)
        while True:
            try:
                ctx = resolver.resolve(CONNECT)
                break
            except Exception:
                assert self.proc is not None
                if self.proc.poll() == RESTART_REQUESTED:
                    self.launch()  # a new profile was just set up: soffice.bin wants a restart
                elif self.proc.poll() is not None:
                    raise RuntimeError(f"soffice exited with {self.proc.returncode} while starting") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("soffice did not answer in time") from None
                time.sleep(0.05)
        self.desktop = ctx.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)

    def alive(self) -> bool:
        """Whether soffice still answers (a killed one leaves a disposed bridge behind)."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            self.desktop.getComponents()
        except Exception:
            return False
        return True

    def warm_up(self, scratch: str) -> None:
        """Convert a document of our own per application to PDF, before saying ready.

        The first conversion of a new soffice loads the application, its import filter and
        the PDF export: about a second for a DOCX, ten times a warm conversion. Paid here,
        in the background where a replacement starts, it is never paid by the next job.
        Writer gets a real DOCX (its import filter is most of that second, and DOCX is the
        common case); Calc and Impress new documents of their own (application and export)."""
        docx = os.path.join(scratch, "warm-up.docx")
        with zipfile.ZipFile(docx, "w") as zf:
            for name, data in WARM_UP_DOCX.items():
                zf.writestr(name, data)
        jobs = [
            (uno_url(docx), "MS Word 2007 XML", "writer_pdf_Export"),
            ("private:factory/scalc", "", "calc_pdf_Export"),
            ("private:factory/simpress", "", "impress_pdf_Export"),
        ]
        out = os.path.join(scratch, "warm-up.pdf")
        try:
            for url, import_filter, export_filter in jobs:
                self._load_store(url, {"FilterName": import_filter} if import_filter else {},
                                 out, {"FilterName": export_filter, "Overwrite": True})  # fmt: skip
        finally:
            for path in (docx, out):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _load_store(self, url: str, load: dict[str, Any], output: str, store: dict[str, Any]) -> None:
        import uno

        load = {
            "Hidden": True,
            "ReadOnly": True,
            "MacroExecutionMode": 0,  # css.document.MacroExecMode.NEVER_EXECUTE
            "UpdateDocMode": 0,  # css.document.UpdateDocMode.NO_UPDATE: links stay as stored
            **load,
        }
        doc = self.desktop.loadComponentFromURL(url, "_blank", 0, props(**load))
        if doc is None:
            raise RuntimeError("LibreOffice could not open the document")
        try:
            uno.invoke(doc, "storeToURL", (uno_url(output), props(**store)))
        finally:
            try:
                doc.close(True)
            except Exception:
                doc.dispose()

    def convert(self, req: dict[str, Any]) -> str:
        import uno

        load: dict[str, Any] = {"FilterName": req["import_filter"]}
        if req.get("import_options"):
            load["FilterOptions"] = req["import_options"]
        store: dict[str, Any] = {"FilterName": req["export_filter"], "Overwrite": True}
        if req.get("export_options"):
            store["FilterOptions"] = req["export_options"]
        data = req.get("filter_data") or {}
        if data:
            typed = []
            for name, (kind, value) in data.items():
                typed.append(props(**{name: uno.Any(kind, value) if kind != "string" else value})[0])
            store["FilterData"] = uno.Any("[]com.sun.star.beans.PropertyValue", tuple(typed))
        self._load_store(uno_url(req["input"]), load, req["output"], store)
        return str(req["output"])


def props(**values: Any) -> tuple[Any, ...]:
    from com.sun.star.beans import PropertyValue

    out = []
    for name, value in values.items():
        prop = PropertyValue()
        prop.Name, prop.Value = name, value
        out.append(prop)
    return tuple(out)


def uno_url(path: str) -> str:
    import uno

    return str(uno.systemPathToFileUrl(path))


def load_guard() -> Any:
    """The link guard's module (converters.tools.office.links), or None when the jail does not
    hold it (/agent/lib): jobs then keep their sandbox child, where the guard runs."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
    try:
        from converters.tools.office import links, pages

        return links, pages
    except Exception as exc:  # ImportError, or a module this python cannot compile
        print(f"office agent: no link guard here ({exc!r})", file=sys.stderr)
        return None


def guard(modules: Any, req: dict[str, Any]) -> dict[str, Any] | None:
    """Check and strip the staged input (req["input"] then names the guarded copy); the
    refusal to reply with when the guard refuses it."""
    from pathlib import Path

    links, _pages = modules
    fmt, src = str(req["guard"]), Path(req["input"])
    try:
        links.check_input(src, fmt)
        guarded, _removed = links.guard_links(src, fmt, src.parent)
    except links.ConversionError as exc:
        return {"ok": False, "refused": exc.message, "hint": exc.hint, "alive": True}
    except Exception as exc:  # a fault of the guard's own: the job fails, the jail goes on
        refused = "The document could not be checked."
        return {"ok": False, "refused": refused, "hint": repr(exc)[:200], "alive": True}
    req["input"] = str(guarded)
    return None


def main() -> int:
    config = json.loads(sys.argv[1])
    apply_limits(int(config["memory"]), int(config["nproc"]))
    guard_modules = load_guard()  # before seccomp: imports read the library's files
    seccomp_loaded = load_seccomp() if config.get("seccomp", True) else False
    office = Office(config["soffice"], config["profile"])
    try:
        office.start(time.monotonic() + float(config.get("start_timeout", 60)))
        if config.get("warm_up", True):
            office.warm_up(os.environ.get("TMPDIR") or "/tmp")
    except Exception as exc:
        say({"ready": False, "error": str(exc)})
        return 1
    say({"ready": True, "layers": {**layers(seccomp_loaded), "link_guard": guard_modules is not None}})
    for line in sys.stdin:
        try:
            req = json.loads(line)
        except ValueError:
            continue
        if req.get("op") == "ping":
            say({"ok": True, "rss": rss_bytes()})
            continue
        if req.get("guard"):
            if guard_modules is None:
                say({"ok": False, "error": "no link guard in this jail", "alive": True, "rss": rss_bytes()})
                continue
            if (refused := guard(guard_modules, req)) is not None:
                say({**refused, "rss": rss_bytes()})
                continue
        try:
            out = office.convert(req)
            reply: dict[str, Any] = {"ok": True, "output": out, "rss": rss_bytes()}
            if req.get("check_pdf") and guard_modules is not None:
                reply["pages"] = guard_modules[1].has_page_object(out)
            say(reply)
        except Exception as exc:  # a UNO error: the document's fault, or soffice died
            alive = office.alive()
            say(
                {
                    "ok": False,
                    "error": str(exc)[:500] or type(exc).__name__,
                    "alive": alive,
                    "rss": rss_bytes(),
                }
            )
            if not alive:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
