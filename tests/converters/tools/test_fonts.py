"""Documents come out in every script and with their real font metrics.

Every document is made here (samples_fonts.docx) and converted through the real job path
(`sandbox.run`: the fork server's jail, LibreOffice started in it) and through the warm
LibreOffice pool (its own jail). PDFs are read with pikepdf (which fonts are embedded)
and pypdfium2 (each character rendered: distinct glyphs, not one repeated box).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from PIL import Image

from converters import registry as registry_module
from converters.base import Converter, Limits, Result, Task
from converters.filetypes.document import DocumentConverter
from converters.filetypes.image.converter import ImageConverter
from converters.registry import Registry
from converters.sandbox import parent as sandbox
from converters.sandbox import servers
from converters.tools import fonts
from converters.tools.office import pool as office_pool
from converters.tools.office import soffice as office
from tests.converters.samples_fonts import (
    SCRIPT_LINES,
    docx,
    glyph_shapes,
    page_count,
    pdf_fonts,
    renamed_font,
)

_no_office = pytest.mark.skipif(office.unavailable() is not None, reason="no LibreOffice")


def needs_office(test: Any) -> Any:
    """Runs LibreOffice: skipped without it, and slow (seconds per start)."""
    return pytest.mark.slow(_no_office(test))


_no_pool = pytest.mark.skipif(office_pool.unavailable() is not None, reason="no LibreOffice pool")


def needs_pool(test: Any) -> Any:
    """Runs the LibreOffice pool: skipped without it, and slow."""
    return pytest.mark.slow(_no_pool(test))


LIBERATION_MONO = Path("/usr/share/fonts/truetype/liberation2/LiberationMono-Regular.ttf")
TEST_FAMILY = "Convertd Test Mono"  # Liberation Mono's glyphs under a name no installed font has


def assert_every_script_has_its_glyphs(pdf: Path) -> None:
    shapes = glyph_shapes(pdf)
    for script, line in SCRIPT_LINES.items():
        chars = {c for c in line if not c.isspace()}
        mine = [(char, font, picture) for char, font, picture in shapes if char in chars]
        assert {char for char, _, _ in mine} == chars, f"{script}: characters missing from the PDF text"
        pictures = {picture for _, _, picture in mine}
        # a font without the script draws every character as the same box (1 or 2 shapes)
        assert len(pictures) >= 0.8 * len(chars), (script, len(pictures), len(chars), {f for _, f, _ in mine})


@needs_office
async def test_every_script_renders_with_its_own_glyphs(tmp_path: Path) -> None:
    src = docx(tmp_path / "scripts.docx", list(SCRIPT_LINES.values()))
    result = await sandbox.run("document", "docx", "pdf", {}, [src], tmp_path / "job")
    assert_every_script_has_its_glyphs(result.path)
    embedded = pdf_fonts(result.path)
    assert any("CJK" in f for f in embedded) and any("Devanagari" in f for f in embedded), embedded


@needs_office
async def test_markdown_to_pdf_renders_every_script(tmp_path: Path) -> None:
    """pandoc's PDFs (by way of docx and LibreOffice) draw from the same fonts."""
    src = tmp_path / "scripts.md"
    src.write_text("\n\n".join(SCRIPT_LINES.values()) + "\n", encoding="utf-8")
    result = await sandbox.run("document", "md", "pdf", {}, [src], tmp_path / "job")
    assert_every_script_has_its_glyphs(result.path)


@needs_office
async def test_office_fonts_are_laid_out_with_metric_compatible_ones(tmp_path: Path) -> None:
    stand_ins = {"Calibri": "Carlito", "Cambria": "Caladea", "Arial": "LiberationSans",
                 "Times New Roman": "LiberationSerif", "Courier New": "LiberationMono"}  # fmt: skip
    src = docx(tmp_path / "office.docx", [f"Set in {f}" for f in stand_ins], font=list(stand_ins))
    result = await sandbox.run("document", "docx", "pdf", {}, [src], tmp_path / "job")
    embedded = pdf_fonts(result.path)
    for stand_in in stand_ins.values():  # (Caladea's PostScript name is Caladea-Regular)
        assert any(name.split("-")[0] == stand_in for name in embedded), (stand_in, embedded)
    assert not any(f.startswith("DejaVu") for f in embedded), embedded


@needs_office
def test_a_calibri_document_paginates_as_with_calibri_metrics(tmp_path: Path) -> None:
    """Carlito has Calibri's widths: the same document in Calibri and in Carlito breaks into
    the same pages; set in DejaVu Sans (what LibreOffice used without it) it needs more."""
    text = "The quick brown fox jumps over the lazy dog while the committee reviews the figures. " * 4
    pages = {}
    for font in ("Calibri", "Carlito", "DejaVu Sans"):
        src = docx(tmp_path / f"{font}.docx", [text] * 120, font=font)
        out = office.convert(src, "docx", "pdf", tmp_path / f"job-{font}")
        pages[font] = page_count(out)
        if font == "Calibri":
            assert pdf_fonts(out) == {"Carlito"}
    assert pages["Calibri"] == pages["Carlito"] < pages["DejaVu Sans"], pages


# ------------------------------------------------------------------------ the pool


@needs_pool
async def test_the_warm_pool_renders_every_script_and_deployment_fonts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.converters.tools.office.test_office_pool import job, running_pool

    folder = tmp_path / "fonts"
    folder.mkdir()
    renamed_font(LIBERATION_MONO, folder / "test-mono.ttf", TEST_FAMILY)
    monkeypatch.setenv(fonts.FONTS_ENV, str(folder))
    scripts = docx(tmp_path / "scripts.docx", list(SCRIPT_LINES.values()))
    own = docx(tmp_path / "own.docx", ["Set in the deployment's own font"], font=TEST_FAMILY)
    with running_pool(instances=1) as pool:
        assert_every_script_has_its_glyphs(await job(pool, 1, scripts, tmp_path / "job1"))
        assert "ConvertdTestMono" in pdf_fonts(await job(pool, 1, own, tmp_path / "job2"))
        assert len(pool.history) == 2  # the pool converted both, not the cold fallback


# ------------------------------------------------------------------------ CONVERTD_FONTS_DIR


SVG_TEXT = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="60">'
    f'<text x="4" y="44" font-size="40" font-family="{TEST_FAMILY}">iiiiiiii</text></svg>'
)


def ink_width(png: Path) -> int:
    im = Image.open(png).convert("RGBA")
    box = im.getchannel("A").getbbox()
    assert box is not None, "no text drawn"
    return box[2] - box[0]


@needs_office
async def test_deployment_fonts_are_used_by_libreoffice_and_svg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "fonts"
    folder.mkdir()
    renamed_font(LIBERATION_MONO, folder / "test-mono.ttf", TEST_FAMILY)
    src = docx(tmp_path / "own.docx", ["Set in the deployment's own font"], font=TEST_FAMILY)
    svg = tmp_path / "label.svg"
    svg.write_text(SVG_TEXT)

    async def render(name: str) -> tuple[set[str], int]:
        pdf = await sandbox.run("document", "docx", "pdf", {}, [src], tmp_path / f"doc-{name}")
        png = await sandbox.run("image", "svg", "png", {}, [svg], tmp_path / f"svg-{name}")
        return pdf_fonts(pdf.path), ink_width(png.path)

    monkeypatch.delenv(fonts.FONTS_ENV, raising=False)
    without_fonts, narrow = await render("without")
    monkeypatch.setenv(fonts.FONTS_ENV, str(folder))
    with_fonts, wide = await render("with")
    assert "ConvertdTestMono" not in without_fonts and "ConvertdTestMono" in with_fonts
    # eight i's in a monospaced font take eight full cells; the fallback draws narrow i's
    assert wide > 2 * narrow, (wide, narrow)


@needs_office
def test_deployment_fonts_reach_the_cold_libreoffice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a pool and outside the fork server (tools, the cold fallback)."""
    folder = tmp_path / "fonts"
    folder.mkdir()
    renamed_font(LIBERATION_MONO, folder / "test-mono.ttf", TEST_FAMILY)
    monkeypatch.setenv(fonts.FONTS_ENV, str(folder))
    src = docx(tmp_path / "own.docx", ["Set in the deployment's own font"], font=TEST_FAMILY)
    assert "ConvertdTestMono" in pdf_fonts(office.convert(src, "docx", "pdf", tmp_path / "job"))


# ------------------------------------------------------------------------ what a job sees


class FontProbeConverter(Converter):
    """Reports, from inside a job, what of the fonts it can read and write."""

    filetype: ClassVar[str] = "fontprobe"
    engine: ClassVar[str] = "test"
    content_agnostic: ClassVar[bool] = True
    limits: ClassVar[Limits] = Limits(memory_bytes=1024**3, cpu_seconds=20, wall_seconds=60,
                                      output_bytes=1024**2)  # fmt: skip

    def pairs(self) -> Mapping[str, frozenset[str]]:
        return {"json": frozenset({"report"})}

    def convert(self, task: Task) -> Result:
        folder = json.loads(task.inputs[0].read_text())["folder"]

        def attempt(fn) -> str:  # type: ignore[no-untyped-def]
            try:
                return f"ok: {fn()!r}"[:120]
            except OSError as exc:
                return f"{type(exc).__name__}: {exc.strerror}"

        def write(path: str) -> int:
            with open(path, "wb") as fh:
                return fh.write(b"x")

        report = {
            "system_font": attempt(
                lambda: len(Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").read_bytes())
            ),
            "fontconfig_conf": attempt(lambda: os.path.isfile("/etc/fonts/fonts.conf")),
            "cache_listing": attempt(lambda: len(os.listdir("/var/cache/fontconfig"))),
            "var": attempt(lambda: sorted(os.listdir("/var"))),
            "var_cache": attempt(lambda: sorted(os.listdir("/var/cache"))),
            "own_font": attempt(lambda: len(Path(folder, "test-mono.ttf").read_bytes())),
            "write_own_folder": attempt(lambda: write(f"{folder}/new.ttf")),
            "write_cache": attempt(lambda: write("/var/cache/fontconfig/new-cache")),
            "beside_own_folder": attempt(lambda: sorted(os.listdir(os.path.dirname(folder)))),
            "env": os.environ.get(fonts.FONTS_ENV, ""),
        }
        out = task.workdir / "report.json"
        out.write_text(json.dumps(report))
        return Result(out)


@pytest.mark.slow  # probes a job's view of the font folders through the sandbox
async def test_jobs_see_the_fonts_read_only_and_nothing_beside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        registry_module, "_registry", Registry([FontProbeConverter(), DocumentConverter(), ImageConverter()])
    )
    folder = tmp_path / "deploy" / "fonts"
    folder.mkdir(parents=True)
    (tmp_path / "deploy" / "secret.txt").write_text("not for jobs")
    shutil.copy(LIBERATION_MONO, folder / "test-mono.ttf")
    monkeypatch.setenv(fonts.FONTS_ENV, str(folder))
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"folder": str(folder)}))
    result = await sandbox.run("fontprobe", "json", "report", {}, [request], tmp_path / "job")
    seen = json.loads(result.path.read_text())
    if not (servers.layers or {}).get("mount"):
        pytest.skip(f"this machine gives jobs no mount namespace: {servers.layers}")
    assert seen["system_font"].startswith("ok") and seen["fontconfig_conf"] == "ok: True"
    assert seen["own_font"] == f"ok: {LIBERATION_MONO.stat().st_size}" and seen["env"] == str(folder)
    assert seen["cache_listing"].startswith("ok")
    assert (
        seen["write_own_folder"].startswith("OSError: Read-only") or "Permission" in seen["write_own_folder"]
    )
    assert seen["write_cache"].startswith("OSError: Read-only") or "Permission" in seen["write_cache"]
    # only fontconfig's cache of /var, only the font folder of the deployment's directory
    assert seen["var"] == "ok: ['cache']" and seen["var_cache"] == "ok: ['fontconfig']"
    assert seen["beside_own_folder"] == "ok: ['fonts']"


def test_fontconfig_file_names_the_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = tmp_path / "a", tmp_path / "b & c"
    one.mkdir()
    two.mkdir()
    monkeypatch.setenv(fonts.FONTS_ENV, f"{one}:{two}:{tmp_path / 'missing'}")
    assert fonts.extra_dirs() == [one, two] and fonts.missing_dirs() == [str(tmp_path / "missing")]
    env = fonts.fontconfig_env(tmp_path)
    text = Path(env["FONTCONFIG_FILE"]).read_text()
    assert "<include" in text and "/etc/fonts/fonts.conf" in text
    assert f"<dir>{one}</dir>" in text and "b &amp; c" in text
    monkeypatch.delenv(fonts.FONTS_ENV)
    assert fonts.fontconfig_env(tmp_path / "elsewhere") == {}


def test_doctor_reports_scripts_and_stand_ins(capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli.doctor import _doctor_fonts

    _doctor_fonts()
    lines = capsys.readouterr().out.splitlines()
    for name in (
        "Chinese (simplified)",
        "Japanese",
        "Korean",
        "Arabic",
        "Devanagari (Hindi, Marathi, Nepali)",
    ):
        assert any(line.startswith("ok") and f"{name} script" in line for line in lines), name
    assert any(line.startswith("ok") and "Calibri laid out with Carlito" in line for line in lines)


def test_missing_scripts_and_stand_ins_are_reported(tmp_path: Path) -> None:
    """fontconfig shown only DejaVu: CJK, Indic and emoji are missing, with the packages."""
    conf = tmp_path / "only-dejavu.conf"
    conf.write_text(
        '<?xml version="1.0"?><fontconfig><dir>/usr/share/fonts/truetype/dejavu</dir>'
        f"<cachedir>{tmp_path}/cache</cachedir></fontconfig>"
    )
    cover = fonts.coverage(conf)
    assert cover.scripts["Latin"] and cover.scripts["Cyrillic"]
    assert not cover.scripts["Japanese"] and not cover.scripts["Devanagari (Hindi, Marathi, Nepali)"]
    assert cover.metric["Calibri"] is None
    assert {"fonts-noto-cjk", "fonts-noto-core", "fonts-crosextra-carlito"} <= set(cover.missing_packages)
    full = fonts.coverage()
    assert all(full.scripts.values()) and all(full.metric.values()) and not full.missing_packages
