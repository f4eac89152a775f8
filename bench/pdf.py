"""PDF -> PNG (20 pages, 150 dpi) and PDF -> text: the converter against the library alone,
and against PyMuPDF (the engine before the licence change) when it can be imported.

    .venv/bin/python bench/pdf.py [--runs 5]

Columns, each the median of --runs after one untimed warm-up, same 20-page PDF:
  pdfium alone      pypdfium2 + Pillow PNG encoding, no converter code
  converter         converters.filetypes.pdf.converter.PdfConverter check() + convert() in this process
  sandbox.run       the whole job as the worker runs it: child process, limits, checks
  pymupdf alone     PyMuPDF get_pixmap + its PNG encoder / get_text(sort=True)
  old converter     converters/pdf.py (its old path) as it was with PyMuPDF (from git, --old-rev)
and ratios new/old on CPU time, which a busy machine disturbs far less than wall time
(both are printed). A job's CPU is ours plus its child's (RUSAGE_CHILDREN, summed over the
runs: warm children are reaped one job late). The sandbox's own cost does not depend on the
engine, so the old whole job is estimated as sandbox.run - converter + old converter.

PyMuPDF is AGPL and not installed by Convertd; for the comparison put it beside the venv
without installing it into it (nothing else changes, the licence check keeps passing):

    .venv/bin/pip install --target /tmp/pymupdf-bench pymupdf
    PYTHONPATH=/tmp/pymupdf-bench .venv/bin/python bench/pdf.py

Run with `env -u PYTHONDONTWRITEBYTECODE` where that variable is set (see PITFALLS): the
sandbox child would otherwise compile our modules from source on each start.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pikepdf
import pypdfium2 as pdfium
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.base import Task  # noqa: E402
from converters.filetypes.pdf.converter import PNG_LEVEL, PdfConverter  # noqa: E402
from converters.sandbox import parent as sandbox  # noqa: E402

PAGES, DPI = 20, 150
OLD_REV = "185b4ab"  # the last commit whose converters/pdf.py (old path) used PyMuPDF
LOREM = (
    "Convertd turns documents into other documents. Each page of this benchmark carries "
    "paragraphs of text, vector shapes in colour and a photograph, like a typical report. "
)


# ------------------------------------------------------------------------ the input


def make_pdf(path: Path) -> None:
    """20 A4 pages: 40 lines of text, coloured boxes, and a 600x400 JPEG photo each."""
    photo = io.BytesIO()
    Image.effect_mandelbrot((600, 400), (-2, -1.2, 1, 1.2), 80).convert("RGB").save(photo, "JPEG", quality=85)
    with pikepdf.new() as pdf:
        font = pdf.make_indirect(pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1,
                                                    BaseFont=pikepdf.Name.Helvetica))  # fmt: skip
        image = pdf.make_stream(photo.getvalue(), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image,
                                Width=600, Height=400, ColorSpace=pikepdf.Name.DeviceRGB,
                                BitsPerComponent=8, Filter=pikepdf.Name.DCTDecode)  # fmt: skip
        for n in range(PAGES):
            ops = [
                f"q 0.{n % 9 + 1} 0.5 0.8 rg 40 {60 + 30 * (i % 5)} {80 + 40 * i} 20 re f Q"
                for i in range(10)
            ]
            ops.append("q 300 0 0 200 260 560 cm /Im1 Do Q")
            ops.append("BT /F1 9 Tf 11 TL 40 800 Td")
            ops += [f"({LOREM[(i * 7) % 60 :][:95]} {n + 1}.{i + 1}) '" for i in range(40)]
            ops.append("ET")
            content = pdf.make_stream("\n".join(ops).encode())
            page = pikepdf.Dictionary(
                Type=pikepdf.Name.Page, MediaBox=[0, 0, 595, 842], Contents=content,
                Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font),
                                             XObject=pikepdf.Dictionary(Im1=image)),
            )  # fmt: skip
            pdf.pages.append(pikepdf.Page(page))
        pdf.save(path)


# ------------------------------------------------------------------ the contenders


def pdfium_png(path: Path) -> None:
    doc = pdfium.PdfDocument(path)
    for page in doc:
        img = page.render(scale=DPI / 72, rev_byteorder=True).to_pil()
        img.save(io.BytesIO(), "PNG", compress_level=PNG_LEVEL)
        page.close()
    doc.close()


def pdfium_text(path: Path) -> None:
    doc = pdfium.PdfDocument(path)
    for page in doc:
        textpage = page.get_textpage()
        textpage.get_text_bounded()
        textpage.close()
        page.close()
    doc.close()


def converter_job(converter: Any, path: Path, fmt: str, root: Path) -> Callable[[], None]:
    counter = iter(range(1_000_000))

    def job() -> None:
        workdir = root / f"{type(converter).__module__}-{fmt}-{next(counter)}"
        workdir.mkdir()
        options = {"dpi": DPI, "pages": ""} if fmt == "png" else {"pages": ""}
        task = Task([path], "pdf", fmt, options, workdir)
        converter.check(task)
        converter.convert(task)

    return job


def sandbox_job(path: Path, fmt: str, root: Path) -> Callable[[], None]:
    counter = iter(range(1_000_000))
    options = {"dpi": DPI} if fmt == "png" else {}

    def job() -> None:
        workdir = root / f"sandbox-{fmt}-{next(counter)}"
        asyncio.run(sandbox.run("pdf", "pdf", fmt, options, [path], workdir))

    return job


def mupdf_png(mupdf: ModuleType, path: Path) -> Callable[[], None]:
    def job() -> None:
        with mupdf.open(path) as doc:
            for page in doc:
                page.get_pixmap(dpi=DPI, alpha=False).tobytes("png")

    return job


def mupdf_text(mupdf: ModuleType, path: Path) -> Callable[[], None]:
    def job() -> None:
        with mupdf.open(path) as doc:
            for page in doc:
                page.get_text("text", sort=True)

    return job


def old_converter(rev: str) -> Any | None:
    """converters/pdf.py (old path) at `rev`, loaded beside the current one (needs git and PyMuPDF)."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:converters/pdf.py"],
                                capture_output=True, check=True, text=True).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader("convertd_pdf_pymupdf", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{rev}:converters/pdf.py", "exec"), module.__dict__)
    return module.PdfConverter()


# --------------------------------------------------------------------------- timing


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Timing:
    """Median wall and CPU time of a job; CPU counts this process and its reaped children."""

    def __init__(self, job: Callable[[], None], runs: int) -> None:
        job()  # warm-up: imports, caches, the sandbox's warm children
        walls, cpus = [], []
        children = _children_cpu()
        for _ in range(runs):
            wall, cpu = time.perf_counter(), time.process_time()
            job()
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        self.wall = statistics.median(walls) * 1000
        self.cpu = (statistics.median(cpus) + (_children_cpu() - children) / runs) * 1000

    def cell(self) -> str:
        return f"{self.wall:.0f} ms (cpu {self.cpu:.0f})"


def ratio(new: float, old: float) -> str:
    return f"{new / old:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description="PDF rendering and text: new engine vs PyMuPDF")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--old-rev", default=OLD_REV, help="git revision of the PyMuPDF converter")
    args = parser.parse_args()
    try:
        import pymupdf
    except ImportError:
        pymupdf = None
    print(f"pypdfium2 {pdfium.version.PYPDFIUM_INFO} (PDFium {pdfium.version.PDFIUM_INFO}), "
          f"PyMuPDF {pymupdf.__version__ if pymupdf else 'not importable (see --help)'}; "
          f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}, "
          f"median of {args.runs} runs, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    print("times: median wall (CPU); ratios new/old on CPU, the old job estimated (see --help)")
    with tempfile.TemporaryDirectory(prefix="pdfbench") as tmp:
        root = Path(tmp)
        src = root / "report.pdf"
        make_pdf(src)
        old = old_converter(args.old_rev) if pymupdf else None
        print(" | ".join(("job", "pdfium alone", "converter", "sandbox.run", "pymupdf alone", "old converter",
                          "new/old alone", "new/old converter", "new/old job")))  # fmt: skip
        for fmt, alone in (("png", pdfium_png), ("txt", pdfium_text)):
            new_alone = Timing(lambda a=alone: a(src), args.runs)
            new_conv = Timing(converter_job(PdfConverter(), src, fmt, root), args.runs)
            new_job = Timing(sandbox_job(src, fmt, root), args.runs)
            row = [f"pdf->{fmt} ({PAGES} pages{f', {DPI} dpi' if fmt == 'png' else ''})",
                   new_alone.cell(), new_conv.cell(), new_job.cell()]  # fmt: skip
            if pymupdf:
                old_alone = Timing((mupdf_png if fmt == "png" else mupdf_text)(pymupdf, src), args.runs)
                row.append(old_alone.cell())
                if old is not None:
                    old_conv = Timing(converter_job(old, src, fmt, root), args.runs)
                    old_job = new_job.cpu - new_conv.cpu + old_conv.cpu
                    row += [old_conv.cell(), ratio(new_alone.cpu, old_alone.cpu),
                            ratio(new_conv.cpu, old_conv.cpu), ratio(new_job.cpu, old_job)]  # fmt: skip
                else:
                    row += ["(no git)", ratio(new_alone.cpu, old_alone.cpu), "", ""]
            print(" | ".join(row))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
