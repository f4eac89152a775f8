"""What a fork server imports before it forks its first job (`preload`).

The full server imports every converter and its heavy libraries once (`PRELOAD`), so no job
pays for an interpreter start or an import; a family's server imports only that family's
(`FAMILY_PRELOAD`), and a smaller server forks faster.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import warnings
from pathlib import Path

from converters.sandbox import tree

# The heavy libraries the converters import lazily, or whose plugins load on first use.
PRELOAD: tuple[str, ...] = (
    "PIL.Image", "PIL.ImageOps", "PIL.ImageCms", "pi_heif", "imagecodecs", "pypdfium2",
    "pikepdf", "img2pdf", "py7zr", "libarchive", "openpyxl", "python_calamine", "magic", "yaml",
    "defusedxml.ElementTree", "tomli_w", "ffmpeg", "imageio_ffmpeg", "resvg_py", "tempfile",
    "converters.sniff", "converters.sandbox.child", "converters.sandbox.seccomp",
)  # fmt: skip


# A fork server that holds only what some converters use (`converters.sandbox.servers.FAMILIES`):
# a fork copies the page tables of every mapping the server holds, so the smaller the
# server, the cheaper each job (measured: fork + exit ~4 ms of CPU for this one, ~11 ms
# for a server holding every converter's libraries).
FAMILY_PRELOAD: dict[str, tuple[str, ...]] = {
    "image": (
        "PIL.Image", "PIL.ImageOps", "PIL.ImageCms", "pi_heif", "imagecodecs", "numpy", "resvg_py",
        "defusedxml.ElementTree", "magic", "tempfile", "converters.filetypes.image.converter",
        "converters.sniff", "converters.sandbox.child", "converters.sandbox.seccomp",
    ),
    # checksums: the smallest server of all, so the smallest jobs fork fastest
    "hash": ("hashlib", "tempfile", "converters.filetypes.hash", "converters.sandbox.child",
             "converters.sandbox.seccomp"),
    # office and pandoc documents: their engines run outside (the warm LibreOffice pool,
    # pandoc's binary); the job itself needs little more than the XML guard
    "document": (
        "pypdfium2", "pypandoc", "defusedxml.ElementTree", "defusedxml.expatreader", "magic",
        "tempfile", "converters.filetypes.document", "converters.filetypes.ebook",
        "converters.tools.office.soffice", "converters.tools.office.links", "converters.tools.office.door",
        "converters.tools.process", "converters.tools.pandoc", "converters.sniff",
        "converters.sandbox.child", "converters.sandbox.seccomp",
    ),
}  # fmt: skip
ALL = "all"  # the fork server that imports every converter

# Heap a family's job process maps while it waits for its job (`converters.sandbox.heap`):
# about what a few-megapixel image job's buffers take; the others start without.
FAMILY_HEAP: dict[str, int] = {"image": 16 << 20}


def preload(family: str = ALL) -> None:
    """Import what jobs use, so a forked child starts with it in memory."""
    from converters.registry import CONVERTERS, registry

    names = FAMILY_PRELOAD.get(family) or PRELOAD + tuple(c.partition(":")[0] for c in CONVERTERS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            with contextlib.suppress(Exception):
                importlib.import_module(name)
        if "PIL.Image" in names:
            with contextlib.suppress(Exception):
                from PIL import Image

                Image.init()  # every format plugin, not only the five Pillow loads at first
        if family not in FAMILY_PRELOAD:
            with contextlib.suppress(Exception):
                registry()  # (imports every converter: not in a small server)
        with contextlib.suppress(Exception):
            from converters.sandbox import seccomp

            seccomp.compiled()  # built once here, not by each job inside its tree
        with contextlib.suppress(Exception):
            tree.tree_paths()  # walked once here, not by each job's process
        with contextlib.suppress(Exception):
            from converters import sniff

            sniff._magic(True)
            sniff._magic(False)
    if family in ("image", "hash", ALL):
        with contextlib.suppress(Exception):
            warm_up(images=family != "hash")
    # objects made so far are never freed: keep the collector from touching (and so
    # copying) their pages in every child
    gc.collect()
    gc.freeze()


def warm_up(*, images: bool = True) -> None:
    """Run the hash converter, and with `images` the image converter, once on a file made
    here, in a folder of ours.

    What a library does on its first use only (Pillow's decoder and encoder set-up, the
    type checks whose answers Python caches, libmagic's first look at a file) is then done
    once in the fork server instead of in every job's process, which starts from a copy of
    it. Nothing of any job is involved: the input is a 64x48 picture drawn here, and the
    folder is gone before the first job is forked. Measured on the 0.3 MP JPEG -> WebP job:
    see docs/decisions.md (2026-12-03, "The fork server warms up").
    """
    import tempfile

    from converters.base import Task
    from converters.filetypes.hash import HashConverter

    with tempfile.TemporaryDirectory(prefix="convertd-warm-") as tmp:
        workdir = Path(tmp)
        picture = workdir / "warm.jpg"
        if images:
            _warm_images(picture, workdir)
        else:
            picture.write_bytes(bytes(range(256)) * 16)
        HashConverter().convert(Task([picture], "jpg", "json", {"algorithms": ["sha256"]}, workdir))


def _warm_images(picture: Path, workdir: Path) -> None:
    from PIL import Image

    from converters.base import Task
    from converters.filetypes.image.converter import ImageConverter
    from converters.sniff import check_declared

    Image.new("RGB", (64, 48), (200, 120, 40)).save(picture, "JPEG")
    for output in ("webp", "png", "jpg"):
        check_declared(picture, "jpg")
        converter = ImageConverter()
        schema = converter.options("jpg", output)  # the defaults, as a job gets them
        options = {name: opt.default for name, opt in schema.items() if opt.default is not None}
        task = Task([picture], "jpg", output, options, workdir)
        converter.check(task)
        converter.convert(task)
