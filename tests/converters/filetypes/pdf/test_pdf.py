"""The PDF converter: render, extract, merge, split, compress, images to PDF; and PDFs
built to exhaust memory or to reach outside themselves."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import pikepdf
import pytest
from PIL import Image

from converters.base import ConversionError, RequestError, Task
from converters.filetypes.pdf import converter as pdfmod
from converters.filetypes.pdf.converter import PdfConverter
from converters.registry import Registry
from converters.sandbox import parent as sandbox
from tests.pdf_samples import (
    PAGE_COLORS,
    add_page,
    embedded_images,
    image_pdf,
    make_pdf,
    page_count,
    page_sizes,
    page_texts,
    render,
)

CONVERTER = PdfConverter()
REGISTRY = Registry([CONVERTER])


class Recorder:
    def __init__(self) -> None:
        self.seen: list[float] = []

    def __call__(self, fraction: float) -> None:
        self.seen.append(fraction)


def task(paths: list[Path], in_fmt: str, out_fmt: str, workdir: Path, **options: object) -> Task:
    workdir.mkdir(parents=True, exist_ok=True)
    staged = []
    for n, src in enumerate(paths):
        dest = workdir / f"in{n}.{in_fmt}"
        dest.write_bytes(src.read_bytes())
        staged.append(dest)
    values = REGISTRY.validate("pdf", in_fmt, out_fmt, options)
    return Task(staged, in_fmt, out_fmt, values, workdir, Recorder())


def run(t: Task):  # -> Result
    CONVERTER.check(t)
    result = CONVERTER.convert(t)
    assert result.path.is_file() and result.path.parent == t.workdir
    return result


def seen(t: Task) -> list[float]:
    assert isinstance(t.progress, Recorder)
    return t.progress.seen


def center_color(img: Image.Image) -> tuple[int, int, int]:
    rgb = img.convert("RGB")
    return rgb.getpixel((rgb.width // 2, rgb.height // 2))  # type: ignore[return-value]


def close_to(color: tuple[int, int, int], fraction: tuple[float, float, float]) -> bool:
    return all(abs(c - f * 255) < 40 for c, f in zip(color, fraction, strict=True))


@pytest.fixture
def three_pages(tmp_path: Path) -> Path:
    return make_pdf(tmp_path / "three.pdf")


# ---------------------------------------------------------------------- the pairs


def test_pairs() -> None:
    pairs = CONVERTER.pairs()
    assert pairs["pdf"] == {"png", "jpg", "webp", "txt", "pdf", "zip"}
    for fmt in ("jpg", "png", "webp", "tiff", "gif", "bmp"):
        assert pairs[fmt] == {"pdf"}
    assert CONVERTER.multi_input


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_render_one_page(fmt: str, three_pages: Path, tmp_path: Path) -> None:
    t = task([three_pages], "pdf", fmt, tmp_path, pages="2", dpi=144)
    result = run(t)
    assert result.items == []
    img = Image.open(result.path)
    assert img.format == {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[fmt]
    assert img.size == (600, 800)  # 300x400 pt at 144 dpi
    assert close_to(center_color(img), PAGE_COLORS[1])


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_render_several_pages_to_a_zip(fmt: str, three_pages: Path, tmp_path: Path) -> None:
    t = task([three_pages], "pdf", fmt, tmp_path, dpi=72)
    result = run(t)
    assert result.items == [f"page-001.{fmt}", f"page-002.{fmt}", f"page-003.{fmt}"]
    with zipfile.ZipFile(result.path) as zf:
        assert zf.namelist() == result.items
        for n, name in enumerate(result.items):
            img = Image.open(io.BytesIO(zf.read(name)))
            assert img.size == (300, 400)
            assert close_to(center_color(img), PAGE_COLORS[n])
    assert seen(t) == pytest.approx([1 / 3, 2 / 3, 1.0])  # one step per page


def test_dpi_and_quality_are_bounded() -> None:
    for bad in ({"dpi": 700}, {"dpi": 20}, {"quality": 0}):
        with pytest.raises(RequestError):
            REGISTRY.validate("pdf", "pdf", "jpg", bad)
    schema = REGISTRY.options_schema("pdf", "pdf", "png")["properties"]
    assert schema["dpi"] == {
        "type": "integer", "description": schema["dpi"]["description"],
        "default": 150, "minimum": 36, "maximum": 600,
    }  # fmt: skip
    assert "quality" not in schema  # png is lossless


def test_text(three_pages: Path, tmp_path: Path) -> None:
    result = run(task([three_pages], "pdf", "txt", tmp_path, pages="3,1"))
    pages = result.path.read_text(encoding="utf-8").split("\f")
    assert [p.strip() for p in pages] == ["Page 3 Quokka", "Page 1 Quokka"]


def test_select_and_reorder_pages(three_pages: Path, tmp_path: Path) -> None:
    result = run(task([three_pages], "pdf", "pdf", tmp_path, pages="3-2,1"))
    assert page_texts(result.path) == ["Page 3 Quokka", "Page 2 Quokka", "Page 1 Quokka"]


def test_page_outside_the_document(three_pages: Path, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="Page 7 does not exist"):
        run(task([three_pages], "pdf", "pdf", tmp_path, pages="2-7"))
    # bad syntax is the request's fault: refused with the options, before any job
    with pytest.raises(RequestError, match="not a page range"):
        task([three_pages], "pdf", "txt", tmp_path, pages="one")


def test_split(three_pages: Path, tmp_path: Path) -> None:
    t = task([three_pages], "pdf", "zip", tmp_path)
    result = run(t)
    assert result.items == ["page-001.pdf", "page-002.pdf", "page-003.pdf"]
    with zipfile.ZipFile(result.path) as zf:
        for n, name in enumerate(result.items):
            assert page_texts(zf.read(name)) == [f"Page {n + 1} Quokka"]
    assert seen(t)[-1] == 1.0 and len(seen(t)) == 3


def test_merge(tmp_path: Path) -> None:
    a = make_pdf(tmp_path / "a.pdf", pages=2)
    b = make_pdf(tmp_path / "b.pdf", pages=3)
    t = task([a, b], "pdf", "pdf", tmp_path / "job")
    result = run(t)
    assert page_texts(result.path) == [
        "Page 1 Quokka", "Page 2 Quokka", "Page 1 Quokka", "Page 2 Quokka", "Page 3 Quokka",
    ]  # fmt: skip
    assert seen(t)[-1] == 1.0 and len(seen(t)) >= 3


def test_merge_pdf_and_image(tmp_path: Path) -> None:
    a = make_pdf(tmp_path / "a.pdf", pages=1)
    img = tmp_path / "b.png"
    Image.new("RGB", (200, 100), (0, 0, 255)).save(img)
    t = task([a, img], "pdf", "pdf", tmp_path / "job")
    result = run(t)
    assert page_count(result.path) == 2
    assert close_to(center_color(render(result.path, 1)), (0, 0, 1))


def test_only_pdf_output_takes_several_files(three_pages: Path, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="Only PDF output"):
        run(task([three_pages, three_pages], "pdf", "png", tmp_path))


def noisy_image_pdf(path: Path) -> Path:
    """A page holding a 1200x1200 noisy photo drawn 2 inches wide (600 dpi)."""
    noise = Image.effect_noise((1200, 1200), 80).convert("RGB")
    buf = io.BytesIO()
    noise.save(buf, "JPEG", quality=95)
    return image_pdf(path, buf.getvalue(), (1200, 1200), 144)


def test_compress_downsamples_images(tmp_path: Path) -> None:
    src = noisy_image_pdf(tmp_path / "photo.pdf")
    plain = run(task([src], "pdf", "pdf", tmp_path / "a"))
    small = run(task([src], "pdf", "pdf", tmp_path / "b", compress=True, image_dpi=72))
    assert small.path.stat().st_size < plain.path.stat().st_size / 4
    (image,) = embedded_images(small.path)
    assert image.width <= 160  # 2 inches at 72 dpi, give or take
    assert "Quokka" in page_texts(small.path)[0]


# --------------------------------------------------------------------- images


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tiff", "gif", "bmp"])
def test_image_to_pdf(fmt: str, tmp_path: Path) -> None:
    src = tmp_path / f"img.{fmt}"
    Image.new("RGB", (160, 120), (0, 150, 0)).save(
        src, {"jpg": "JPEG", "tiff": "TIFF"}.get(fmt, fmt.upper()), dpi=(72, 72)
    )
    result = run(task([src], fmt, "pdf", tmp_path / "job"))
    ((width, height),) = page_sizes(result.path)
    # 160x120 pixels: at their 72 dpi, or at img2pdf's 96 dpi when the format has none
    assert width / height == pytest.approx(4 / 3, rel=0.01)
    if fmt in ("jpg", "png", "tiff", "bmp"):
        assert width == pytest.approx(160, abs=1)
    assert close_to(center_color(render(result.path, 0)), (0, 0.59, 0))


def test_an_unreadable_image_is_named_without_the_servers_folders(tmp_path: Path) -> None:
    src = tmp_path / "img.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x07" * 300)
    t = task([src], "png", "pdf", tmp_path / "job")
    with pytest.raises(ConversionError, match="cannot be read") as err:
        run(t)
    assert "'in0.png'" in (err.value.hint or "")
    assert str(tmp_path) not in (err.value.hint or "") + err.value.message


def test_alpha_png_is_flattened_onto_white(tmp_path: Path) -> None:
    src = tmp_path / "alpha.png"
    img = Image.new("RGBA", (100, 100), (0, 0, 0, 0))  # fully transparent
    img.paste((255, 0, 0, 255), (0, 0, 50, 100))  # opaque red left half
    img.save(src)
    result = run(task([src], "png", "pdf", tmp_path / "job"))
    page = render(result.path, 0)
    mid = page.height // 2
    assert close_to(page.getpixel((page.width // 4, mid)), (1, 0, 0))  # type: ignore[arg-type]
    assert close_to(page.getpixel((page.width * 3 // 4, mid)), (1, 1, 1))  # type: ignore[arg-type]


def test_several_images_on_a4(tmp_path: Path) -> None:
    paths = []
    for n, color in enumerate([(255, 0, 0), (0, 0, 255), (0, 128, 0)]):
        paths.append(tmp_path / f"{n}.jpg")
        Image.new("RGB", (300, 200), color).save(paths[-1])
    t = task(paths, "jpg", "pdf", tmp_path / "job", page_size="a4")
    result = run(t)
    sizes = page_sizes(result.path)
    assert len(sizes) == 3
    for width, height in sizes:
        # landscape images turn the A4 page to landscape
        assert sorted((round(width), round(height))) == [595, 842]
    assert len(seen(t)) >= 3 and seen(t)[-1] == 1.0


# ---------------------------------------------------------------------- hostile


def test_huge_page_is_refused_before_rendering(tmp_path: Path) -> None:
    src = make_pdf(tmp_path / "huge.pdf", pages=1, size=(14400, 14400))  # 200 x 200 inches
    t = task([src], "pdf", "png", tmp_path / "job", dpi=300)
    with pytest.raises(ConversionError, match="million pixel limit") as err:
        CONVERTER.check(t)
    assert "dpi" in (err.value.hint or "")
    # the same page at a modest resolution is fine to check
    CONVERTER.check(task([src], "pdf", "png", tmp_path / "job2", dpi=36))


def test_too_many_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_pdf(tmp_path / "six.pdf", pages=6)
    monkeypatch.setattr(pdfmod, "MAX_RENDER_PAGES", 5)
    with pytest.raises(ConversionError, match="over the limit of 5"):
        CONVERTER.check(task([src], "pdf", "png", tmp_path / "a", dpi=36))
    CONVERTER.check(task([src], "pdf", "png", tmp_path / "b", dpi=36, pages="1-5"))
    monkeypatch.setattr(pdfmod, "MAX_PAGES", 5)
    with pytest.raises(ConversionError, match="more than 5 pages"):
        CONVERTER.check(task([src], "pdf", "txt", tmp_path / "c"))


def test_total_pixels_of_a_job_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_pdf(tmp_path / "p.pdf", pages=3)
    monkeypatch.setattr(pdfmod, "MAX_TOTAL_PIXELS", 2 * 300 * 400 * 4)  # two pages at 144 dpi
    with pytest.raises(ConversionError, match="billion"):
        CONVERTER.check(task([src], "pdf", "png", tmp_path / "a", dpi=144))


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height pixels but carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )  # fmt: skip
    return path


def test_image_bomb_is_refused_by_its_header(tmp_path: Path) -> None:
    src = png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(ConversionError, match="pixel"):
        CONVERTER.check(task([src], "png", "pdf", tmp_path / "job"))


def locked_pdf(path: Path, user: str) -> Path:
    with pikepdf.new() as pdf:
        add_page(pdf, text="Quokka")
        pdf.save(path, encryption=pikepdf.Encryption(user=user, owner="o", R=6))
    return path


@pytest.mark.parametrize("fmt", ["txt", "png", "pdf", "zip"])
def test_password_protected_pdf(fmt: str, tmp_path: Path) -> None:
    src = locked_pdf(tmp_path / "locked.pdf", user="u")
    with pytest.raises(ConversionError, match="password"):
        CONVERTER.check(task([src], "pdf", fmt, tmp_path / "check"))
    with pytest.raises(ConversionError, match="password"):
        CONVERTER.convert(task([src], "pdf", fmt, tmp_path / "convert"))


def test_owner_password_alone_does_not_lock(tmp_path: Path) -> None:
    # encrypted with an empty user password: every viewer opens it, and so do we
    src = locked_pdf(tmp_path / "owner-only.pdf", user="")
    result = run(task([src], "pdf", "txt", tmp_path / "job"))
    assert result.path.read_text(encoding="utf-8").strip() == "Quokka"
    merged = run(task([src, src], "pdf", "pdf", tmp_path / "merge"))
    assert page_texts(merged.path) == ["Quokka", "Quokka"]


def test_not_a_pdf(tmp_path: Path) -> None:
    src = tmp_path / "x.pdf"
    src.write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 100)
    with pytest.raises(ConversionError):
        run(task([src], "pdf", "txt", tmp_path / "job"))


def external_stream_pdf(path: Path, target: Path, inline: bool) -> Path:
    """A page drawing an 8x8 RGB image whose samples live in `target` (/F), or inline."""
    with pikepdf.new() as pdf:
        page = add_page(pdf, (200, 200), "Quokka")
        data = target.read_bytes() if inline else b""
        image = pdf.make_stream(data, Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image,
                                Width=8, Height=8, ColorSpace=pikepdf.Name.DeviceRGB,
                                BitsPerComponent=8)  # fmt: skip
        if not inline:
            image.F = pikepdf.String(str(target))
        page.obj.Resources.XObject = pikepdf.Dictionary(Im1=image)
        page.contents_add(pdf.make_stream(b"q 100 0 0 100 50 50 cm /Im1 Do Q"), prepend=False)
        pdf.save(path)
    return path


@pytest.mark.parametrize("inline", [True, False], ids=["control-inline", "external-file"])
def test_external_stream_is_not_read(inline: bool, tmp_path: Path) -> None:
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"\xff\x00\xff" * 64)  # magenta samples
    src = external_stream_pdf(tmp_path / "ext.pdf", secret, inline)
    img = Image.open(run(task([src], "pdf", "png", tmp_path / "job", dpi=72)).path).convert("RGB")
    magenta = sum(n for n, c in img.getcolors(1 << 20) or [] if c == (255, 0, 255))
    if inline:
        assert magenta > 1000  # the control: the same image, carried inline, is drawn
    else:
        assert magenta == 0


def test_actions_and_attachments_are_not_run(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    src = tmp_path / "active.pdf"
    with pikepdf.new() as pdf:
        page = add_page(pdf, (612, 792), "Quokka")
        payload = pikepdf.AttachedFileSpec(pdf, f"touch {pwned}\n".encode(), filename="payload.sh")
        pdf.attachments["payload.sh"] = payload
        js = pdf.make_indirect(pikepdf.Dictionary(
            S=pikepdf.Name.JavaScript, JS=pikepdf.String("app.launchURL('http://127.0.0.1:9/')")
        ))  # fmt: skip
        launch = pdf.make_indirect(pikepdf.Dictionary(
            S=pikepdf.Name.Launch, F=pikepdf.String("/usr/bin/touch"),
            Win=pikepdf.Dictionary(F=pikepdf.String("cmd.exe")),
            Unix=pikepdf.Dictionary(F=pikepdf.String("/usr/bin/touch"), P=pikepdf.String(str(pwned))),
            Next=js,
        ))  # fmt: skip
        pdf.Root.OpenAction = launch
        link = pikepdf.Dictionary(
            Type=pikepdf.Name.Annot, Subtype=pikepdf.Name.Link, Rect=[0, 0, 200, 200],
            A=pikepdf.Dictionary(S=pikepdf.Name.Launch, F=pikepdf.String("/usr/bin/touch")),
        )  # fmt: skip
        page.obj.Annots = pdf.make_indirect(pikepdf.Array([pdf.make_indirect(link)]))
        pdf.save(src)
    for fmt in ("png", "txt", "pdf", "zip"):
        result = run(task([src], "pdf", fmt, tmp_path / fmt))
        assert result.path.stat().st_size > 0
    assert not pwned.exists()


async def test_merge_through_the_sandbox(tmp_path: Path) -> None:
    a = make_pdf(tmp_path / "a.pdf", pages=2)
    b = make_pdf(tmp_path / "b.pdf", pages=1)
    seen_there: list[float] = []

    async def progress(value: float) -> None:
        seen_there.append(value)

    result = await sandbox.run("pdf", "pdf", "pdf", {}, [a, b], tmp_path / "job", progress)
    assert page_texts(result.path) == ["Page 1 Quokka", "Page 2 Quokka", "Page 1 Quokka"]
    assert seen_there and seen_there[-1] == 1.0


async def test_pages_to_images_through_the_sandbox(three_pages: Path, tmp_path: Path) -> None:
    result = await sandbox.run("pdf", "pdf", "png", {"dpi": 36}, [three_pages], tmp_path / "job")
    assert result.items == ["page-001.png", "page-002.png", "page-003.png"]
    with zipfile.ZipFile(result.path) as zf:
        assert zf.namelist() == result.items


# ------------------------------------------------------------ the engines' corners


def test_pdfium_runs_no_javascript() -> None:
    import pypdfium2.version

    # V8 and XFA builds of PDFium can run a document's scripts; ours has neither
    assert not {"V8", "XFA"} & set(pypdfium2.version.PDFIUM_INFO.flags)


def test_a_page_may_come_twice_and_the_outline_stays(tmp_path: Path) -> None:
    src = make_pdf(tmp_path / "book.pdf", pages=3)
    with pikepdf.open(src, allow_overwriting_input=True) as pdf:
        with pdf.open_outline() as outline:
            outline.root.append(pikepdf.OutlineItem("Chapter two", 1))
        pdf.save(src)
    result = run(task([src], "pdf", "pdf", tmp_path / "job", pages="2,2,1"))
    assert page_texts(result.path) == ["Page 2 Quokka", "Page 2 Quokka", "Page 1 Quokka"]
    with pikepdf.open(result.path) as pdf, pdf.open_outline() as outline:
        assert [item.title for item in outline.root] == ["Chapter two"]


def test_compress_finds_images_inside_forms(tmp_path: Path) -> None:
    """The photo is drawn by a form XObject scaled by its own /Matrix: 1200 px over 2 inches."""
    noise = Image.effect_noise((1200, 1200), 80).convert("RGB")
    buf = io.BytesIO()
    noise.save(buf, "JPEG", quality=95)
    src = tmp_path / "form.pdf"
    with pikepdf.new() as pdf:
        page = add_page(pdf, (300, 300), "Quokka")
        image = pdf.make_stream(buf.getvalue(), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image,
                                Width=1200, Height=1200, ColorSpace=pikepdf.Name.DeviceRGB,
                                BitsPerComponent=8, Filter=pikepdf.Name.DCTDecode)  # fmt: skip
        inner = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im1=image))
        form = pdf.make_stream(b"q 1 0 0 1 0 0 cm /Im1 Do Q", Type=pikepdf.Name.XObject,
                               Subtype=pikepdf.Name.Form, BBox=[0, 0, 1, 1], Matrix=[144, 0, 0, 144, 0, 0],
                               Resources=inner)  # fmt: skip
        page.obj.Resources.XObject = pikepdf.Dictionary(Fm1=form)
        page.contents_add(pdf.make_stream(b"q /Fm1 Do Q"), prepend=False)
        pdf.save(src)
    small = run(task([src], "pdf", "pdf", tmp_path / "job", compress=True, image_dpi=72))
    (img,) = embedded_images(small.path)
    assert img.width <= 160
    kept = run(task([src], "pdf", "pdf", tmp_path / "kept", compress=True, image_dpi=600))
    (img,) = embedded_images(kept.path)
    assert img.width == 1200  # drawn at exactly 600 dpi: nothing to gain


@pytest.mark.parametrize("fmt", ["txt", "png", "pdf", "zip"])
def test_damaged_pdf_fails_cleanly_for_every_output(fmt: str, tmp_path: Path) -> None:
    src = tmp_path / "x.pdf"
    src.write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 100)
    with pytest.raises(ConversionError, match="cannot be read"):
        run(task([src], "pdf", fmt, tmp_path / "job"))


def nested_forms_pdf(path: Path, fan_out: int, depth: int) -> Path:
    """A page drawing a form that draws the next one `fan_out` times, `depth` deep; with
    depth 0 the form draws itself `fan_out` times."""
    with pikepdf.new() as pdf:

        def form(content: bytes) -> pikepdf.Stream:
            return pdf.make_stream(content, Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Form,
                                   BBox=[0, 0, 300, 300])  # fmt: skip

        page = add_page(pdf, (300, 300), "Quokka")
        if depth == 0:
            top = form(b"/Fm1 Do " * fan_out)
            top.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Fm1=top))
        else:
            top = form(b"0 0 1 rg 0 0 10 10 re f")
            for _ in range(depth):
                inner = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Fm1=top))
                top = form(b"/Fm1 Do " * fan_out)
                top.Resources = inner
        page.obj.Resources.XObject = pikepdf.Dictionary(Fm1=top)
        page.contents_add(pdf.make_stream(b"/Fm1 Do"), prepend=False)
        pdf.save(path)
    return path


@pytest.mark.parametrize(
    ("fan_out", "depth", "message"),
    [(2, 0, "draws itself"), (1, 0, "draws itself"), (2, 40, "more than 200,000 form drawings")],
    ids=["self-twice", "self-once", "doubling-chain"],
)
@pytest.mark.parametrize("fmt", ["png", "txt"])
def test_forms_nesting_without_end_are_refused_before_rendering(
    fan_out: int, depth: int, message: str, fmt: str, tmp_path: Path
) -> None:
    # PDFium would spend hours on the first page of the doubling ones (2^40 drawings)
    src = nested_forms_pdf(tmp_path / "nest.pdf", fan_out, depth)
    with pytest.raises(ConversionError, match=message):
        CONVERTER.check(task([src], "pdf", fmt, tmp_path / "job"))


def test_modest_nesting_renders(tmp_path: Path) -> None:
    src = nested_forms_pdf(tmp_path / "nest.pdf", 2, 6)  # 127 form drawings
    result = run(task([src], "pdf", "png", tmp_path / "job", dpi=36))
    assert Image.open(result.path).size == (150, 150)


def test_compress_survives_a_form_that_draws_itself(tmp_path: Path) -> None:
    src = nested_forms_pdf(tmp_path / "loop.pdf", 2, 0)
    result = run(task([src], "pdf", "pdf", tmp_path / "job", compress=True, image_dpi=72))
    assert page_count(result.path) == 1


@pytest.mark.parametrize("out_fmt", ["png", "pdf", "txt"])
def test_a_damaged_pdf_is_named_a_pdf_not_an_image(out_fmt: str, tmp_path: Path) -> None:
    """Bytes without the %PDF- marker, sent as a .pdf: the error says PDF, not 'image'."""
    src = tmp_path / "doc.pdf"
    src.write_bytes(bytes(range(256)) * 8)
    t = task([src], "pdf", out_fmt, tmp_path / "job")
    with pytest.raises(ConversionError, match="This PDF cannot be read") as err:
        run(t)
    assert "not a PDF" in (err.value.hint or "")
