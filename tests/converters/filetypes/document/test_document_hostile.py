"""Hostile documents: files that try to pull in local files or URLs, or to run macros.

Every attack file is generated here. A secret text file and a secret magenta PNG sit in a
folder outside the job; a listener on 127.0.0.1 records any connection. A conversion
passes when it either fails with a ConversionError or succeeds with neither the secret
text nor a magenta pixel in its output, no connection made and no macro run.

Three layers protect LibreOffice (see converters/tools/office/soffice.py): the locked profile, the link
guard and the namespace isolation; pandoc has --sandbox and the same isolation. Every
attack runs with the tools' own settings alone ("tool-settings": profile and guard, or
--sandbox) and again inside the namespaces; one test switches the guard off (isolation
alone); positive controls run plain LibreOffice on the same files to show the attacks work.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import openpyxl
import pytest
from PIL import Image

from converters.base import ConversionError, Converter
from converters.filetypes.ebook import EbookConverter
from converters.sandbox import parent as sandbox
from converters.tools import pandoc, process
from converters.tools.office import links as office_links
from converters.tools.office import soffice as office
from tests.converters.filetypes.document.test_document import (
    CONVERTER,
    make_task,
    read_text,
)
from tests.helpers import wait_until_sync
from tests.office_samples import odf_bytes, odp_slide
from tests.pdf_samples import embedded_images, page_count, page_texts, render

TOKEN = "SECRET-TOKEN-5150"
MAGENTA = (255, 0, 255)

pytestmark = [
    pytest.mark.slow,  # LibreOffice and pandoc attack files
    pytest.mark.skipif(
        office.unavailable() is not None or pandoc.unavailable() is not None,
        reason="LibreOffice and pandoc are needed",
    ),
]


# ------------------------------------------------------------------- the world around


@dataclass
class World:
    secret_dir: Path
    port: int
    connections: list[bytes]
    pwned: Path

    @property
    def png(self) -> Path:
        return self.secret_dir / "secret.png"

    @property
    def txt(self) -> Path:
        return self.secret_dir / "secret.txt"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settle(self) -> None:
        """Return once every connection already made has been recorded: a probe of ours is
        accepted after all earlier ones (the backlog is first in, first out), then dropped."""
        marker = f"settle {uuid.uuid4()}".encode()
        with socket.create_connection(("127.0.0.1", self.port)) as probe:
            probe.sendall(marker)
            wait_until_sync(lambda: marker in self.connections, 10, "the listener took the probe")
        self.connections.remove(marker)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    secret_dir = tmp_path_factory.mktemp("secrets")
    Image.new("RGB", (64, 64), MAGENTA).save(secret_dir / "secret.png")
    (secret_dir / "secret.txt").write_text(f"{TOKEN}\n")
    (secret_dir / "secret.csv").write_text(f"{TOKEN},1\n")
    (secret_dir / "secret.html").write_text(f"<p>{TOKEN}</p>")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    connections: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    connections.append(conn.recv(2048) or b"<connected>")
                except OSError:
                    connections.append(b"<connected>")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield World(secret_dir, server.getsockname()[1], connections, secret_dir / "pwned.txt")
    stop.set()
    thread.join()
    server.close()


# ------------------------------------------------------------------- leak detection


def magenta_share(img: Image.Image) -> float:
    rgb = img.convert("RGB")
    colors = rgb.getcolors(maxcolors=rgb.width * rgb.height) or []
    hits = sum(n for n, c in colors if c[0] > 230 and c[1] < 40 and c[2] > 230)
    return hits / (rgb.width * rgb.height)


def zip_images(path: Path) -> list[Image.Image]:
    found = []
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if name.lower().endswith((".png", ".jpg", ".jpeg", ".gif", ".bmp", ".emf", ".wmf")):
                with contextlib.suppress(OSError):
                    found.append(Image.open(io.BytesIO(zf.read(name))))
    return found


def assert_no_leak(path: Path, fmt: str, world: World) -> None:
    raw = path.read_bytes()
    assert TOKEN.encode() not in raw
    assert b"data:image" not in raw  # no image got embedded from outside
    if fmt == "pdf":
        for n, text in enumerate(page_texts(path)):
            assert TOKEN not in text
            assert magenta_share(render(path, n, dpi=36)) == 0, "the secret image was drawn"
        for img in embedded_images(path):
            assert magenta_share(img) < 0.5
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                assert TOKEN.encode() not in zf.read(name)
        for img in zip_images(path):
            assert magenta_share(img) < 0.5, "the secret image was embedded"
    else:
        assert TOKEN not in read_text(path, fmt)
    world.settle()
    assert world.connections == [], f"the converter connected out: {world.connections}"
    assert not world.pwned.exists(), "a macro ran"


def attempt(
    data: bytes,
    in_fmt: str,
    out_fmt: str,
    workdir: Path,
    world: World,
    converter: Converter = CONVERTER,
) -> str:
    """Convert an attack file; return 'refused' or 'converted' (after checking for leaks)."""
    world.connections.clear()
    src = workdir / f"attack.{in_fmt}"
    workdir.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    task = make_task(src, in_fmt, out_fmt, workdir / "job", converter)
    try:
        converter.check(task)
        result = converter.convert(task)
    except ConversionError as exc:
        assert exc.message  # a clear error is an acceptable outcome
        outcome = "refused"
    else:
        assert_no_leak(result.path, out_fmt, world)
        outcome = "converted"
    world.settle()
    assert world.connections == [], f"the converter connected out: {world.connections}"
    assert not world.pwned.exists(), "a macro ran"
    return outcome


# ------------------------------------------------------------------- attack builders

W_NS = (
    'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" '
    'xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing" '
    'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
    'xmlns:pic="http://schemas.openxmlformats.org/drawingml/2006/picture" '
    'xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main"'
)
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG = "http://schemas.openxmlformats.org/package/2006/relationships"
CT = "http://schemas.openxmlformats.org/package/2006/content-types"
RELS_TYPE = "application/vnd.openxmlformats-package.relationships+xml"


def rels(*items: tuple[str, str, str, bool]) -> str:
    body = "".join(
        f'<Relationship Id="{rid}" Type="{REL}/{kind}" Target="{target}"'
        + (' TargetMode="External"' if external else "")
        + "/>"
        for rid, kind, target, external in items
    )
    return f'<?xml version="1.0"?><Relationships xmlns="{PKG}">{body}</Relationships>'


def zip_of(parts: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    return buf.getvalue()


def docx(body: str, *doc_rels: tuple[str, str, str, bool], settings: str = "",
         settings_rels: tuple[tuple[str, str, str, bool], ...] = ()) -> bytes:  # fmt: skip
    main = "application/vnd.openxmlformats-officedocument.wordprocessingml"
    return zip_of({
        "[Content_Types].xml": f'<?xml version="1.0"?><Types xmlns="{CT}">'
        f'<Default Extension="rels" ContentType="{RELS_TYPE}"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/word/document.xml" ContentType="{main}.document.main+xml"/>'
        f'<Override PartName="/word/settings.xml" ContentType="{main}.settings+xml"/></Types>',
        "_rels/.rels": rels(("rId1", "officeDocument", "word/document.xml", False)),
        "word/document.xml": f'<?xml version="1.0"?><w:document {W_NS}><w:body>'
        f"<w:p><w:r><w:t>Quokka</w:t></w:r></w:p>{body}</w:body></w:document>",
        "word/_rels/document.xml.rels": rels(
            ("rIdS", "settings", "settings.xml", False), *doc_rels
        ),
        "word/settings.xml": f'<?xml version="1.0"?><w:settings {W_NS}>{settings}</w:settings>',
        "word/_rels/settings.xml.rels": rels(*settings_rels),
    })  # fmt: skip


def linked_picture(rid: str) -> str:
    return (
        '<w:p><w:r><w:drawing><wp:inline><wp:extent cx="914400" cy="914400"/>'
        '<wp:docPr id="1" name="P"/><a:graphic><a:graphicData '
        'uri="http://schemas.openxmlformats.org/drawingml/2006/picture"><pic:pic>'
        '<pic:nvPicPr><pic:cNvPr id="1" name="x.png"/><pic:cNvPicPr/></pic:nvPicPr>'
        f'<pic:blipFill><a:blip r:link="{rid}"/><a:stretch><a:fillRect/></a:stretch>'
        '</pic:blipFill><pic:spPr><a:xfrm><a:off x="0" y="0"/><a:ext cx="914400" '
        'cy="914400"/></a:xfrm><a:prstGeom prst="rect"/></pic:spPr></pic:pic>'
        "</a:graphicData></a:graphic></wp:inline></w:drawing></w:r></w:p>"
    )


def complex_field(instr: str) -> str:
    return (
        '<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r>'
        f'<w:r><w:instrText xml:space="preserve"> {instr} </w:instrText></w:r>'
        '<w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>cached</w:t></w:r>'
        '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
    )


def pptx(image_target: str) -> bytes:
    pml = "application/vnd.openxmlformats-officedocument.presentationml"
    tree = (
        '<p:cSld><p:spTree><p:nvGrpSpPr><p:cNvPr id="1" name=""/><p:cNvGrpSpPr/><p:nvPr/>'
        "</p:nvGrpSpPr><p:grpSpPr/>{}</p:spTree></p:cSld>"
    )
    shapes = (
        '<p:sp><p:nvSpPr><p:cNvPr id="2" name="T"/><p:cNvSpPr txBox="1"/><p:nvPr/></p:nvSpPr>'
        '<p:spPr><a:xfrm><a:off x="4000000" y="500000"/><a:ext cx="3000000" cy="800000"/>'
        '</a:xfrm><a:prstGeom prst="rect"><a:avLst/></a:prstGeom></p:spPr><p:txBody>'
        "<a:bodyPr/><a:lstStyle/><a:p><a:r><a:t>Quokka</a:t></a:r></a:p></p:txBody></p:sp>"
        '<p:pic><p:nvPicPr><p:cNvPr id="3" name="P"/><p:cNvPicPr/><p:nvPr/></p:nvPicPr>'
        '<p:blipFill><a:blip r:link="rIdImg"/><a:stretch><a:fillRect/></a:stretch>'
        '</p:blipFill><p:spPr><a:xfrm><a:off x="500000" y="500000"/><a:ext cx="3000000" '
        'cy="3000000"/></a:xfrm><a:prstGeom prst="rect"><a:avLst/></a:prstGeom></p:spPr>'
        "</p:pic>"
    )
    clr = " ".join(
        f'{k}="{v}"'
        for k, v in (("bg1", "lt1"), ("tx1", "dk1"), ("bg2", "lt2"), ("tx2", "dk2"),
                     ("accent1", "accent1"), ("accent2", "accent2"), ("accent3", "accent3"),
                     ("accent4", "accent4"), ("accent5", "accent5"), ("accent6", "accent6"),
                     ("hlink", "hlink"), ("folHlink", "folHlink"))
    )  # fmt: skip
    return zip_of({
        "[Content_Types].xml": f'<?xml version="1.0"?><Types xmlns="{CT}">'
        f'<Default Extension="rels" ContentType="{RELS_TYPE}"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/ppt/presentation.xml" ContentType="{pml}.presentation.main+xml"/>'
        f'<Override PartName="/ppt/slides/slide1.xml" ContentType="{pml}.slide+xml"/>'
        f'<Override PartName="/ppt/slideLayouts/slideLayout1.xml" '
        f'ContentType="{pml}.slideLayout+xml"/>'
        f'<Override PartName="/ppt/slideMasters/slideMaster1.xml" '
        f'ContentType="{pml}.slideMaster+xml"/>'
        "</Types>",
        "_rels/.rels": rels(("rId1", "officeDocument", "ppt/presentation.xml", False)),
        "ppt/presentation.xml": f'<?xml version="1.0"?><p:presentation {W_NS}>'
        '<p:sldMasterIdLst><p:sldMasterId id="2147483648" r:id="rId1"/></p:sldMasterIdLst>'
        '<p:sldIdLst><p:sldId id="256" r:id="rId2"/></p:sldIdLst><p:sldSz cx="9144000" '
        'cy="6858000"/><p:notesSz cx="6858000" cy="9144000"/></p:presentation>',
        "ppt/_rels/presentation.xml.rels": rels(
            ("rId1", "slideMaster", "slideMasters/slideMaster1.xml", False),
            ("rId2", "slide", "slides/slide1.xml", False),
        ),
        "ppt/slideMasters/slideMaster1.xml": f'<?xml version="1.0"?><p:sldMaster {W_NS}>'
        + tree.format("") + f"<p:clrMap {clr}/>"
        '<p:sldLayoutIdLst><p:sldLayoutId id="2147483649" r:id="rId1"/></p:sldLayoutIdLst>'
        "</p:sldMaster>",
        "ppt/slideMasters/_rels/slideMaster1.xml.rels": rels(
            ("rId1", "slideLayout", "../slideLayouts/slideLayout1.xml", False)
        ),
        "ppt/slideLayouts/slideLayout1.xml": f'<?xml version="1.0"?><p:sldLayout {W_NS}>'
        + tree.format("") + "</p:sldLayout>",
        "ppt/slideLayouts/_rels/slideLayout1.xml.rels": rels(
            ("rId1", "slideMaster", "../slideMasters/slideMaster1.xml", False)
        ),
        "ppt/slides/slide1.xml": f'<?xml version="1.0"?><p:sld {W_NS}>'
        + tree.format(shapes) + "</p:sld>",
        "ppt/slides/_rels/slide1.xml.rels": rels(
            ("rId1", "slideLayout", "../slideLayouts/slideLayout1.xml", False),
            ("rIdImg", "image", image_target, True),
        ),
    })  # fmt: skip


def odf_image(href: str) -> str:
    return (
        '<draw:frame svg:x="1cm" svg:y="1cm" svg:width="5cm" svg:height="5cm" '
        f'text:anchor-type="as-char"><draw:image xlink:href="{href}" xlink:type="simple" '
        'xlink:show="embed" xlink:actuate="onLoad"/></draw:frame>'
    )


def ods(cells: str, shapes: str = "", source: str = "") -> bytes:
    return odf_bytes(
        "spreadsheet",
        f'<table:table table:name="S">{source}<table:shapes>{shapes}</table:shapes>'
        '<table:table-row><table:table-cell office:value-type="string"><text:p>Quokka'
        f"</text:p></table:table-cell>{cells}</table:table-row></table:table>",
    )


def odt_macro(pwned: Path) -> bytes:
    """An ODT whose Basic macro, bound to 'document loaded', writes the file `pwned`."""
    doctype = '<!DOCTYPE {} PUBLIC "-//OpenOffice.org//DTD OfficeDocument 1.0//EN" "{}">'
    scripts = (
        "<office:scripts><office:event-listeners><script:event-listener "
        'script:language="ooo:script" script:event-name="dom:load" xlink:type="simple" '
        'xlink:href="vnd.sun.star.script:Standard.Module1.Main?language=Basic&amp;'
        'location=document"/></office:event-listeners></office:scripts>'
    )
    module = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        + doctype.format("script:module", "module.dtd")
        + '<script:module xmlns:script="http://openoffice.org/2000/script" '
        'script:name="Module1" script:language="StarBasic">Sub Main\n'
        f'Open "{pwned}" For Output As #1\nPrint #1, "pwned"\nClose #1\nEnd Sub\n'
        "</script:module>"
    )
    library = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        + doctype.format("library:library", "library.dtd")
        + '<library:library xmlns:library="http://openoffice.org/2000/library" '
        'library:name="Standard" library:readonly="false" library:passwordprotected="false">'
        '<library:element library:name="Module1"/></library:library>'
    )
    libraries = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        + doctype.format("library:libraries", "libraries.dtd")
        + '<library:libraries xmlns:library="http://openoffice.org/2000/library" '
        'xmlns:xlink="http://www.w3.org/1999/xlink"><library:library library:name="Standard" '
        'library:link="false"/></library:libraries>'
    )
    return odf_bytes(
        "text",
        "<text:p>Quokka macro document</text:p>",
        scripts=scripts,
        extra={
            "Basic/script-lc.xml": libraries,
            "Basic/Standard/script-lb.xml": library,
            "Basic/Standard/Module1.xml": module,
        },
    )


def rtf_field(instr: str) -> str:
    return "{\\field{\\*\\fldinst " + instr.replace("\\", "\\\\") + "}{\\fldrslt cached}}\\par "


def rtf(*fields: str) -> bytes:
    return ("{\\rtf1\\ansi Quokka\\par " + "".join(fields) + "}").encode()


def xlsx_webservice(url: str) -> bytes:
    wb = openpyxl.Workbook()
    wb.active["A1"] = "Quokka"
    wb.active["B1"] = f'=WEBSERVICE("{url}/xlsx")'  # stored without a cached value
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# Each attack: (input format, output format, builder(world) -> bytes)
Attack = tuple[str, str, Callable[[World], bytes]]
OFFICE_ATTACKS: dict[str, Attack] = {
    "docx-linked-image-file": ("docx", "pdf", lambda w: docx(
        linked_picture("rIdI"), ("rIdI", "image", w.png.as_uri(), True))),
    "docx-linked-image-relative": ("docx", "pdf", lambda w: docx(
        linked_picture("rIdI"), ("rIdI", "image", "../" * 24 + str(w.png).lstrip("/"), True))),
    "docx-linked-image-http": ("docx", "pdf", lambda w: docx(
        linked_picture("rIdI"), ("rIdI", "image", f"{w.url}/docx.png", True))),
    "docx-image-behind-hyperlink-rel": ("docx", "pdf", lambda w: docx(
        linked_picture("rIdH"), ("rIdH", "hyperlink", w.png.as_uri(), True))),
    "docx-includetext": ("docx", "pdf", lambda w: docx(
        complex_field(f'INCLUDETEXT "{w.txt}"'))),
    "docx-includetext-simple-field": ("docx", "odt", lambda w: docx(
        f'<w:fldSimple w:instr=\'INCLUDETEXT "{w.txt}"\'><w:r><w:t>cached</w:t></w:r>'
        "</w:fldSimple>")),
    "docx-includepicture": ("docx", "pdf", lambda w: docx(
        complex_field(f'INCLUDEPICTURE "{w.png}" \\d')
        + complex_field(f'INCLUDEPICTURE "{w.url}/field.png" \\d'))),
    "docx-remote-template": ("docx", "pdf", lambda w: docx(
        "", settings='<w:attachedTemplate r:id="rIdT"/>',
        settings_rels=(("rIdT", "attachedTemplate", f"{w.url}/t.dotx", True),))),
    "odt-linked-image": ("odt", "pdf", lambda w: odf_bytes("text",
        f"<text:p>Quokka {odf_image(w.png.as_uri())}{odf_image(w.url + '/odt.png')}</text:p>")),
    "odt-linked-image-plain-path": ("odt", "docx", lambda w: odf_bytes("text",
        f"<text:p>Quokka {odf_image(str(w.png))}</text:p>")),
    "odt-linked-section": ("odt", "pdf", lambda w: odf_bytes("text",
        '<text:p>Quokka</text:p><text:section text:name="S1"><text:section-source '
        f'xlink:href="{w.txt.as_uri()}" xlink:type="simple" text:filter-name="Text"/>'
        "<text:p>cached</text:p></text:section>")),
    "odt-odd-xlink-prefix": ("odt", "pdf", lambda w: odf_bytes("text",
        '<text:p>Quokka <draw:frame svg:width="5cm" svg:height="5cm" text:anchor-type="as-char">'
        f'<draw:image xmlns:evil="http://www.w3.org/1999/xlink" evil:href="{w.png.as_uri()}"/>'
        "</draw:frame></text:p>")),
    "odt-macro-on-load": ("odt", "pdf", lambda w: odt_macro(w.pwned)),
    "ods-linked-image": ("ods", "pdf", lambda w: ods("", shapes=odf_image(w.png.as_uri()))),
    "ods-webservice": ("ods", "pdf", lambda w: ods(
        '<table:table-cell table:formula="of:=COM.MICROSOFT.WEBSERVICE(&quot;'
        f'{w.url}/ods&quot;)"/>')),
    "ods-external-reference": ("ods", "csv", lambda w: ods(
        "<table:table-cell table:formula=\"of:=['"
        f"{(w.secret_dir / 'secret.csv').as_uri()}'#$secret.A1]\"/>")),
    "ods-linked-sheet": ("ods", "csv", lambda w: ods("", source=(
        '<table:table-source xlink:type="simple" '
        f'xlink:href="{(w.secret_dir / "secret.csv").as_uri()}" '
        'table:filter-name="Text - txt - csv (StarCalc)" table:filter-options="44,34,76,1" '
        'table:mode="copy-all"/>'))),
    "xlsx-webservice": ("xlsx", "pdf", lambda w: xlsx_webservice(w.url)),
    "odp-linked-image": ("odp", "pdf", lambda w: odf_bytes("presentation",
        odp_slide(odf_image(w.png.as_uri()) + odf_image(w.url + "/odp.png")))),
    "pptx-linked-image-file": ("pptx", "pdf", lambda w: pptx(w.png.as_uri())),
    "pptx-linked-image-http": ("pptx", "odp", lambda w: pptx(f"{w.url}/pptx.png")),
    "rtf-includepicture": ("rtf", "pdf", lambda w: rtf(
        rtf_field(f'INCLUDEPICTURE "{w.png}" \\d'),
        rtf_field(f'INCLUDEPICTURE "{w.url}/rtf.png" \\d'))),
    "rtf-includepicture-escaped": ("rtf", "pdf", lambda w: rtf(
        "{\\field{\\*\\fldinst {\\'49NCLUDE}PICTURE \"" + str(w.png) + "\"}{\\fldrslt x}}")),
    "rtf-includetext": ("rtf", "odt", lambda w: rtf(rtf_field(f'INCLUDETEXT "{w.txt}"'))),
    "doc-that-is-html": ("doc", "pdf", lambda w: (
        f'<html><body><p>Quokka</p><img src="{w.png.as_uri()}" width="200" height="200">'
        f'<img src="{w.url}/doc.png"><iframe src="{w.txt.as_uri()}"></iframe></body></html>'
    ).encode()),
    "xlsx-that-is-html": ("xlsx", "pdf", lambda w: (
        f'<html><body><table><tr><td>Quokka</td></tr></table><img src="{w.png.as_uri()}">'
        "</body></html>").encode()),
}  # fmt: skip

PANDOC_ATTACKS: dict[str, Attack] = {
    "html-images-to-docx": ("html", "docx", lambda w: (
        f'<p>Quokka</p><img src="{w.png.as_uri()}"><img src="{w.png}">'
        f'<img src="{w.url}/h.png">').encode()),
    "html-images-to-pdf": ("html", "pdf", lambda w: (
        f'<p>Quokka</p><img src="{w.png.as_uri()}"><img src="{w.url}/h.png">').encode()),
    "md-raw-html-resources-to-html": ("md", "html", lambda w: (
        f'Quokka\n\n<link rel="stylesheet" href="{w.url}/s.css">\n\n'
        f'<script src="{w.txt.as_uri()}"></script>\n\n<img src="{w.png.as_uri()}">\n\n'
        f'<iframe src="{w.txt.as_uri()}"></iframe>\n').encode()),
    "md-images-to-odt": ("md", "odt", lambda w: (
        f"Quokka\n\n![x]({w.png.as_uri()})\n\n![y]({w.url}/m.png)\n\n"
        f'<img src="{w.png}">\n').encode()),
    "md-image-to-html": ("md", "html", lambda w: f"Quokka\n\n![x]({w.png})\n".encode()),
    "rst-include": ("rst", "txt", lambda w: (
        f"Quokka\n\n.. include:: {w.txt}\n\n.. raw:: html\n   :file: {w.txt}\n").encode()),
    "tex-input": ("tex", "txt", lambda w: (
        f"Quokka\n\n\\input{{{w.txt}}}\n\n\\include{{{w.secret_dir / 'secret'}}}\n").encode()),
    "org-include": ("org", "txt", lambda w: f'#+INCLUDE: "{w.txt}"\nQuokka\n'.encode()),
}  # fmt: skip


def epub_with(chapter: str) -> bytes:
    return zip_of({
        "mimetype": "application/epub+zip",
        "META-INF/container.xml": '<?xml version="1.0"?><container version="1.0" '
        'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile '
        'full-path="content.opf" media-type="application/oebps-package+xml"/></rootfiles>'
        "</container>",
        "content.opf": '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" '
        'version="3.0" unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        '<dc:identifier id="id">x</dc:identifier><dc:title>Quokka</dc:title>'
        "<dc:language>en</dc:language></metadata><manifest>"
        '<item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/></manifest>'
        '<spine><itemref idref="c1"/></spine></package>',
        "c1.xhtml": chapter,
    })  # fmt: skip


EBOOK_ATTACKS: dict[str, Attack] = {
    "epub-xxe": ("epub", "txt", lambda w: epub_with(
        f'<?xml version="1.0"?><!DOCTYPE html [<!ENTITY x SYSTEM "{w.txt.as_uri()}">]>'
        '<html xmlns="http://www.w3.org/1999/xhtml"><body><p>Quokka &x;</p></body></html>')),
    "epub-linked-images": ("epub", "docx", lambda w: epub_with(
        '<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body><p>Quokka</p>'
        f'<img src="{w.png.as_uri()}"/><img src="{w.url}/e.png"/>'
        '<img src="../../../../../../../../../../..' + str(w.png) + '"/></body></html>')),
    "fb2-xxe": ("fb2", "txt", lambda w: (
        f'<?xml version="1.0"?><!DOCTYPE FictionBook [<!ENTITY x SYSTEM "{w.txt.as_uri()}">]>'
        '<FictionBook xmlns="http://www.gribuser.ru/xml/fictionbook/2.0"><body><section>'
        "<p>Quokka &x;</p></section></body></FictionBook>").encode()),
    "html-image-to-epub": ("html", "epub", lambda w: (
        f'<p>Quokka</p><img src="{w.png.as_uri()}"><img src="{w.url}/e.png">').encode()),
}  # fmt: skip


# ------------------------------------------------------------------------ the tests


@pytest.fixture(params=["tool-settings", "tool-settings+isolation"])
def layers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param.endswith("isolation"):
        if not process.isolation_available():
            pytest.skip("no user namespaces on this machine")
        monkeypatch.setenv(process.ISOLATION_ENV, "auto")
    else:
        monkeypatch.setenv(process.ISOLATION_ENV, "off")
    return request.param


@pytest.mark.parametrize("name", sorted(OFFICE_ATTACKS))
def test_office_attack(name: str, layers: str, world: World, tmp_path: Path) -> None:
    in_fmt, out_fmt, build = OFFICE_ATTACKS[name]
    outcome = attempt(build(world), in_fmt, out_fmt, tmp_path, world)
    if name.endswith("that-is-html"):
        assert outcome == "refused"  # LibreOffice is held to the declared format


@pytest.mark.parametrize("name", sorted(PANDOC_ATTACKS))
def test_pandoc_attack(name: str, layers: str, world: World, tmp_path: Path) -> None:
    in_fmt, out_fmt, build = PANDOC_ATTACKS[name]
    attempt(build(world), in_fmt, out_fmt, tmp_path, world)


@pytest.mark.parametrize("name", sorted(EBOOK_ATTACKS))
def test_ebook_attack(name: str, layers: str, world: World, tmp_path: Path) -> None:
    in_fmt, out_fmt, build = EBOOK_ATTACKS[name]
    attempt(build(world), in_fmt, out_fmt, tmp_path, world, EbookConverter())


@pytest.mark.skipif(not process.isolation_available(), reason="no user namespaces")
@pytest.mark.parametrize("name", ["odp-linked-image", "ods-linked-image", "rtf-includepicture"])
def test_isolation_alone_stops_local_files(
    name: str, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the link guard switched off, the namespaces alone keep the secret out."""
    monkeypatch.setattr(office_links, "guard_links", lambda src, fmt, dest: (src, []))
    monkeypatch.setenv(process.ISOLATION_ENV, "require")
    in_fmt, out_fmt, build = OFFICE_ATTACKS[name]
    assert attempt(build(world), in_fmt, out_fmt, tmp_path, world) == "converted"


def test_guard_reports_what_it_removed(world: World, tmp_path: Path) -> None:
    src = tmp_path / "a.odt"
    src.write_bytes(OFFICE_ATTACKS["odt-linked-image"][2](world))
    guarded, removed = office_links.guard_links(src, "odt", tmp_path)
    assert guarded != src
    assert removed == [world.png.as_uri(), f"{world.url}/odt.png"]
    with zipfile.ZipFile(guarded) as zf:
        assert zf.namelist()[0] == "mimetype"  # still a valid ODF package
        assert zf.getinfo("mimetype").compress_type == zipfile.ZIP_STORED
        assert str(world.png).encode() not in zf.read("content.xml")


def test_guard_keeps_web_hyperlinks(tmp_path: Path) -> None:
    link = "https://example.com/page"
    src = tmp_path / "l.odt"
    src.write_bytes(odf_bytes("text", f'<text:p><text:a xlink:href="{link}">Quokka</text:a></text:p>'))
    assert office_links.guard_links(src, "odt", tmp_path) == (src, [])
    out = docx("", ("rIdH", "hyperlink", link, True))
    (tmp_path / "l.docx").write_bytes(out)
    assert office_links.guard_links(tmp_path / "l.docx", "docx", tmp_path)[1] == []


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be"])
def test_guard_reads_parts_in_other_encodings(codec: str, world: World, tmp_path: Path) -> None:
    """A part whose names are not ASCII bytes (UTF-16) is parsed, not skipped as free of
    links because the bytes lack 'TargetMode' (the guard's shortcut for plain parts)."""
    part = rels(("rIdX", "image", world.png.as_uri(), True)).replace(
        'version="1.0"?', 'version="1.0" encoding="UTF-16"?'
    )
    data = part.encode(codec)
    assert b"TargetMode" not in data
    src = tmp_path / "u.docx"
    with zipfile.ZipFile(io.BytesIO(docx(linked_picture("rIdX")))) as zin, zipfile.ZipFile(src, "w") as zout:
        for info in zin.infolist():
            name = info.filename
            zout.writestr(name, data if name == "word/_rels/document.xml.rels" else zin.read(name))
    with pytest.raises(ConversionError, match="cannot be converted safely"):
        office_links.guard_links(src, "docx", tmp_path)


# --------------------------------------------------------- structural refusals


def test_duplicate_part_names_are_refused(tmp_path: Path, world: World) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning, match="Duplicate"):
        zf.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        zf.writestr("content.xml", "<a/>")
        zf.writestr("content.xml", "<b/>")
    assert attempt(buf.getvalue(), "odt", "pdf", tmp_path, world) == "refused"


def test_declared_unpacked_size_is_checked_before_anything(tmp_path: Path, world: World) -> None:
    data = bytearray(docx(""))
    # forge the central directory: word/document.xml claims 3 GB once unpacked
    name = b"word/document.xml"
    at = data.rindex(b"PK\x01\x02", 0, data.rindex(name))
    struct.pack_into("<I", data, at + 24, 3 * 1024**3)
    outcome = attempt(bytes(data), "docx", "pdf", tmp_path, world)
    assert outcome == "refused"


def test_xml_entities_in_an_office_part_are_refused(tmp_path: Path, world: World) -> None:
    body = f'<!DOCTYPE x [<!ENTITY s SYSTEM "{world.txt.as_uri()}">]>'
    content = (
        '<?xml version="1.0"?>' + body + "<office:document-content xmlns:office="
        '"urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:text='
        '"urn:oasis:names:tc:opendocument:xmlns:text:1.0"><office:body><office:text>'
        "<text:p>Quokka &s;</text:p></office:text></office:body></office:document-content>"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        zf.writestr("content.xml", content)
    assert attempt(buf.getvalue(), "odt", "pdf", tmp_path, world) == "refused"


def test_not_a_zip_is_refused(tmp_path: Path, world: World) -> None:
    assert attempt(b"just text", "pptx", "pdf", tmp_path, world) == "refused"


# ------------------------------------------------ positive controls: attacks are real


def plain_libreoffice(src: Path, out_dir: Path, profile: Path, *args: str) -> None:
    """LibreOffice as most services run it: shared defaults, no guard, no isolation."""
    soffice = office.soffice_path()
    assert soffice
    subprocess.run(
        [soffice, f"-env:UserInstallation={profile.as_uri()}", "--headless", *args,
         "--convert-to", "pdf", "--outdir", str(out_dir), str(src)],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["odp-linked-image", "rtf-includepicture", "doc-that-is-html"])
def test_control_plain_libreoffice_leaks_the_local_image(name: str, world: World, tmp_path: Path) -> None:
    in_fmt, _out, build = OFFICE_ATTACKS[name]
    src = tmp_path / f"attack.{in_fmt}"
    src.write_bytes(build(world))
    world.connections.clear()
    plain_libreoffice(src, tmp_path / "out", tmp_path / "profile")
    images = []
    out = tmp_path / "out" / "attack.pdf"
    images += [render(out, n, dpi=36) for n in range(page_count(out))]
    images += embedded_images(out)
    assert any(magenta_share(img) > 0 for img in images), "the secret image did not leak"
    if name == "odp-linked-image":
        world.settle()
        assert world.connections, "plain LibreOffice did not fetch the http image"
    world.connections.clear()


def test_control_macro_runs_when_security_is_low(world: World, tmp_path: Path) -> None:
    pwned = tmp_path / "control-pwned.txt"
    src = tmp_path / "macro.odt"
    src.write_bytes(odt_macro(pwned))
    profile = tmp_path / "profile"
    office.write_profile(
        profile,
        office.profile_xcu(
            (("/org.openoffice.Office.Common/Security/Scripting", "MacroSecurityLevel", "0"),)
        ),
    )
    soffice = office.soffice_path()
    assert soffice
    # opened (not converted) with macro security "low", the document's macro runs
    proc = subprocess.Popen(
        [soffice, f"-env:UserInstallation={profile.as_uri()}", "--headless", "--norestore",
         str(src)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not pwned.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert pwned.exists(), "the control macro did not run"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# ------------------------------------------------------------------- the sandbox


@pytest.mark.parametrize("name", ["odp-linked-image", "docx-linked-image-http", "rtf-includepicture"])
async def test_attack_through_the_sandbox(name: str, world: World, tmp_path: Path) -> None:
    in_fmt, out_fmt, build = OFFICE_ATTACKS[name]
    src = tmp_path / f"attack.{in_fmt}"
    src.write_bytes(build(world))
    world.connections.clear()
    result = await sandbox.run("document", in_fmt, out_fmt, {}, [src], tmp_path / "job")
    assert_no_leak(result.path, out_fmt, world)


NESTED = {  # name: (text, what the refusal names)
    "quotes.md": (">" * 5000 + " deep\n", "5,000 quotes"),
    "lists.md": ("".join("  " * i + "- x\n" for i in range(300)), "598 columns of indent"),
    "quotes.rst": ("".join("   " * i + "* x\n\n" for i in range(200)), "597 columns of indent"),
    "divs.html": ("<html><body>" + "<blockquote>" * 2000 + "x" + "</blockquote>" * 2000, "2,002 elements"),
}


@pytest.mark.parametrize("name", sorted(NESTED))
def test_markup_nested_past_what_pandoc_converts_in_time_is_refused_at_once(
    name: str, tmp_path: Path
) -> None:
    """A few kB nested thousands deep held a worker for pandoc's whole timeout."""
    text, named = NESTED[name]
    src = tmp_path / name
    src.write_text(text)
    with pytest.raises(ConversionError) as refused:
        pandoc.convert(src, src.suffix[1:], "docx", tmp_path)
    assert named in refused.value.message and "Flatten" in (refused.value.hint or "")
    assert not (tmp_path / "pandoc-run").exists()  # refused before pandoc ran


def test_ordinary_nesting_still_converts(tmp_path: Path) -> None:
    md = tmp_path / "notes.md"
    md.write_text("".join("  " * i + f"- level {i}\n" for i in range(12)) + "\n" + "> " * 8 + "quoted\n")
    assert pandoc.convert(md, "md", "html", tmp_path / "md").read_text().count("<ul>") == 12
    # paragraphs and list items left open, and tags inside a script, are not nesting
    page = tmp_path / "page.html"
    body = "<p>para" * 3000 + "<ul>" + "<li>item" * 3000 + "</ul>"
    page.write_text(f"<html><body><script>{'<div>' * 1000}</script>{body}</body></html>")
    out = pandoc.convert(page, "html", "md", tmp_path / "html").read_text()
    assert out.count("para") == 3000 and out.count("item") == 3000
