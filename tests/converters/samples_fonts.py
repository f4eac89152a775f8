"""Documents and fonts for the font tests, made here, and readers for what a PDF shows.

`docx` writes a minimal WordprocessingML package (one run per paragraph, in a named font).
`renamed_font` copies an installed TrueType font under a family name no installed font
has, so a test can tell whether a renderer found it in CONVERTD_FONTS_DIR. `pdf_fonts`
lists the fonts a PDF embeds (pikepdf) and `glyph_shapes` renders each character of a PDF
(pypdfium2) and returns its picture, so a row of identical boxes is told from real glyphs.
"""

from __future__ import annotations

import ctypes
import struct
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

import pikepdf
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_raw
from PIL import Image

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.wordprocessingml.document.main+xml"/></Types>'
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="word/document.xml"/></Relationships>'
)

# one line per script, as a user's multilingual document has them
SCRIPT_LINES: dict[str, str] = {
    "Chinese": "中文字体渲染测试样例",
    "Japanese": "日本語のひらがなとカタカナ",
    "Korean": "한국어 글꼴 렌더링 시험",
    "Arabic": "النص العربي للاختبار",
    "Hindi": "हिन्दी पाठ का परीक्षण",
    "English": "English text sample",
}


def docx(path: Path, paragraphs: list[str], font: str | list[str] = "Calibri", half_points: int = 22) -> Path:
    """A DOCX whose every paragraph is one run in `font` (all four font slots; one font per
    paragraph when a list), A4 with 1" margins."""
    fonts = font if isinstance(font, list) else [font] * len(paragraphs)

    def props(name: str) -> str:
        return (
            f'<w:rPr><w:rFonts w:ascii="{name}" w:hAnsi="{name}" w:eastAsia="{name}" w:cs="{name}"/>'
            f'<w:sz w:val="{half_points}"/><w:szCs w:val="{half_points}"/></w:rPr>'
        )

    body = "".join(
        f'<w:p><w:r>{props(name)}<w:t xml:space="preserve">{escape(text)}</w:t></w:r></w:p>'
        for text, name in zip(paragraphs, fonts, strict=True)
    )
    document = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="{W}"><w:body>{body}'
        '<w:sectPr><w:pgSz w:w="11906" w:h="16838"/><w:pgMar w:top="1440" w:right="1440" '
        'w:bottom="1440" w:left="1440" w:header="708" w:footer="708" w:gutter="0"/></w:sectPr>'
        "</w:body></w:document>"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", _TYPES)
        zf.writestr("_rels/.rels", _RELS)
        zf.writestr("word/document.xml", document)
    return path


# ---------------------------------------------------------------------------- fonts


def _name_table(family: str, postscript: str) -> bytes:
    """A format-0 'name' table naming the family (Mac Roman and Windows Unicode records)."""
    names = {1: family, 2: "Regular", 3: f"{postscript};test", 4: family, 6: postscript}
    records: list[tuple[int, int, int, int, bytes]] = []
    for name_id, text in names.items():
        records.append((1, 0, 0, name_id, text.encode("latin-1")))
        records.append((3, 1, 0x409, name_id, text.encode("utf-16-be")))
    records.sort()
    head = struct.pack(">HHH", 0, len(records), 6 + 12 * len(records))
    table, strings = [head], b""
    for platform, encoding, language, name_id, data in records:
        table.append(struct.pack(">HHHHHH", platform, encoding, language, name_id, len(data), len(strings)))
        strings += data
    return b"".join(table) + strings


def _checksum(data: bytes) -> int:
    data += b"\0" * (-len(data) % 4)
    return sum(struct.unpack(f">{len(data) // 4}I", data)) & 0xFFFFFFFF


def renamed_font(source: Path, dest: Path, family: str) -> Path:
    """`source` (a .ttf) with its 'name' table replaced: the same glyphs, another family."""
    data = source.read_bytes()
    count = struct.unpack(">H", data[4:6])[0]
    tables: list[tuple[bytes, bytes]] = []
    for i in range(count):
        tag, _sum, offset, length = struct.unpack(">4sIII", data[12 + 16 * i : 28 + 16 * i])
        body = data[offset : offset + length]
        tables.append((tag, _name_table(family, family.replace(" ", "")) if tag == b"name" else body))
    out = bytearray(data[:12])
    offset = 12 + 16 * len(tables)
    bodies = b""
    for tag, body in tables:
        out += struct.pack(">4sIII", tag, _checksum(body), offset + len(bodies), len(body))
        bodies += body + b"\0" * (-len(body) % 4)
    dest.write_bytes(bytes(out) + bodies)
    return dest


# ---------------------------------------------------------------------------- PDFs


def pdf_fonts(path: Path) -> set[str]:
    """BaseFont names (subset prefix removed) of every font the PDF's pages use."""
    found: set[str] = set()
    with pikepdf.open(path) as pdf:
        for page in pdf.pages:
            for _name, font in page.resources.get("/Font", {}).items():
                base = str(font.get("/BaseFont", ""))[1:]
                found.add(base.split("+", 1)[1] if "+" in base[:7] else base)
    return found


def page_count(path: Path) -> int:
    with pikepdf.open(path) as pdf:
        return len(pdf.pages)


def glyph_shapes(path: Path, scale: float = 4.0) -> list[tuple[str, str, bytes]]:
    """(character, font name, picture) for every visible character of the PDF's first page.

    The picture is the character's box rendered, scaled to 16x16 and thresholded: two
    different glyphs give different pictures, the same missing-glyph box gives the same."""
    pdf = pdfium.PdfDocument(str(path))
    try:
        page = pdf[0]
        text = page.get_textpage()
        bitmap = page.render(scale=scale).to_pil().convert("L")
        height = page.get_height()
        name = ctypes.create_string_buffer(256)
        flags = ctypes.c_int()
        shapes = []
        for i in range(text.count_chars()):
            char = chr(pdfium_raw.FPDFText_GetUnicode(text.raw, i))
            if char.isspace() or not char.isprintable():
                continue
            left, bottom, right, top = text.get_charbox(i)
            box = (int(left * scale), int((height - top) * scale), int(right * scale) + 1,
                   int((height - bottom) * scale) + 1)  # fmt: skip
            picture = bitmap.crop(box).resize((16, 16), Image.Resampling.BILINEAR).point(lambda v: v < 128)
            pdfium_raw.FPDFText_GetFontInfo(text.raw, i, name, len(name), ctypes.byref(flags))
            shapes.append((char, name.value.decode("utf-8", "replace"), picture.tobytes()))
        return shapes
    finally:
        pdf.close()
