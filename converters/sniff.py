"""What a file really is, from its content (libmagic), named by our format extensions.

`check_declared` refuses a file whose content is clearly another known type than the one
declared ("The file is not a png: its content is a jpg file."), so a decoder is never fed
a format it was not chosen for. It is lenient wherever detection is ambiguous: text formats
look alike (csv, yaml and markdown are all "text"), a docx is a zip, an m4a is an mp4, and
headerless formats (tga, raw mp3 frames) are guessed too weakly to refuse anything on.
"""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path
from typing import Any

from converters.base import ConversionError


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# libmagic MIME type -> our extension
MIME: dict[str, str] = {
    "image/png": "png", "image/apng": "png", "image/jpeg": "jpg", "image/gif": "gif",
    "image/webp": "webp", "image/bmp": "bmp", "image/x-ms-bmp": "bmp", "image/tiff": "tiff",
    "image/vnd.microsoft.icon": "ico", "image/x-icon": "ico", "image/heic": "heic",
    "image/heic-sequence": "heic", "image/heif": "heif", "image/heif-sequence": "heif",
    "image/avif": "avif", "image/jxl": "jxl", "image/jp2": "jp2", "image/jpx": "jp2",
    "image/svg+xml": "svg", "image/vnd.adobe.photoshop": "psd", "image/x-portable-pixmap": "ppm",
    "image/x-portable-greymap": "pgm", "image/x-portable-bitmap": "pbm", "image/x-pcx": "pcx",
    "image/x-xpmi": "xpm", "image/x-xpixmap": "xpm", "image/x-xbitmap": "xbm",
    "image/x-icns": "icns", "image/x-qoi": "qoi", "image/x-tga": "tga", "image/x-exr": "exr",
    "application/pdf": "pdf", "application/postscript": "ps", "image/vnd.djvu": "djvu",
    "application/zip": "zip", "application/epub+zip": "epub", "application/java-archive": "jar",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.oasis.opendocument.presentation": "odp",
    "application/vnd.oasis.opendocument.graphics": "odg",
    "application/msword": "doc", "application/vnd.ms-excel": "xls",
    "application/vnd.ms-powerpoint": "ppt", "application/rtf": "rtf", "text/rtf": "rtf",
    "application/x-mobipocket-ebook": "mobi",
    "application/x-tar": "tar", "application/gzip": "gz", "application/x-gzip": "gz",
    "application/x-bzip2": "bz2", "application/x-xz": "xz", "application/zstd": "zst",
    "application/x-zstd": "zst", "application/x-7z-compressed": "7z",
    "application/x-rar": "rar", "application/vnd.rar": "rar", "application/x-lzip": "lz",
    "application/x-lzma": "lzma", "application/vnd.ms-cab-compressed": "cab",
    "audio/mpeg": "mp3", "audio/x-wav": "wav", "audio/wav": "wav", "audio/flac": "flac",
    "audio/x-flac": "flac", "audio/ogg": "ogg", "application/ogg": "ogg", "video/ogg": "ogg",
    "audio/x-m4a": "m4a", "audio/mp4": "m4a", "audio/aac": "aac", "audio/x-hx-aac-adts": "aac",
    "audio/x-aiff": "aiff", "audio/aiff": "aiff", "audio/amr": "amr", "audio/midi": "mid",
    "audio/x-ape": "ape", "audio/x-musepack": "mpc", "audio/basic": "au",
    "video/mp4": "mp4", "video/x-m4v": "m4v", "video/quicktime": "mov", "video/webm": "webm",
    "video/x-matroska": "mkv", "audio/x-matroska": "mka", "video/x-msvideo": "avi",
    "video/x-flv": "flv", "video/mpeg": "mpg", "video/mp2t": "ts", "video/MP2T": "ts",
    "video/3gpp": "3gp", "video/3gpp2": "3gp", "video/x-ms-asf": "asf", "audio/x-ms-asf": "asf",
    "video/x-ms-wmv": "wmv", "audio/x-ms-wma": "wma",
    "font/ttf": "ttf", "font/otf": "otf", "font/woff": "woff", "font/woff2": "woff2",
    "application/x-font-ttf": "ttf", "application/vnd.ms-opentype": "otf",
    "application/x-executable": "exe", "application/x-dosexec": "exe",
    "application/x-sharedlib": "so", "application/x-iso9660-image": "iso",
    "application/x-sqlite3": "sqlite", "application/vnd.sqlite3": "sqlite",
    "text/html": "html", "text/xml": "xml", "application/xml": "xml", "application/json": "json",
    "text/csv": "csv", "application/csv": "csv", "text/x-tex": "tex", "application/x-subrip": "srt",
    "text/vtt": "vtt", "text/plain": "txt", "text/markdown": "md", "text/x-po": "txt",
}  # fmt: skip
# libmagic descriptions for types it names only as application/octet-stream
DESCRIPTION: tuple[tuple[str, str], ...] = (
    ("Microsoft DirectDraw Surface", "dds"), ("SGI image", "sgi"), ("xbm image", "xbm"),
    ("Audio file with ID3", "mp3"), ("MPEG ADTS, layer III", "mp3"), ("Adobe Photoshop", "psd"),
    ("Mac OS X icon", "icns"), ("X pixmap image", "xpm"), ("Apple QuickTime", "mov"),
    ("WebM", "webm"), ("Matroska", "mkv"), ("Microsoft Word", "doc"), ("Microsoft Excel", "xls"),
    ("Microsoft PowerPoint", "ppt"), ("FictionBook", "fb2"),
)  # fmt: skip

# Formats whose content is text: told apart by parsing, not by magic. Any of them may hold
# any other (a .md that libmagic calls "HTML", a .csv it calls "text"), so they never clash.
TEXT: frozenset[str] = _words("""
    txt text md markdown csv tsv json jsonl ndjson ipynb yaml toml xml html xhtml svg srt vtt ass
    ssa sub rst tex latex ini cfg conf log sql css js py fb2 ics vcf opml org adoc asciidoc
    textile mediawiki dokuwiki typ bib ris rss atom gpx kml xliff docbook jats tei muse t2t
    fodt fods fodp fodg xbm xpm ppm pgm pbm rtf ps eps
""")  # fmt: skip
# ZIP-based formats: refined by their members, since libmagic often says only "zip"
ZIP_BASED: frozenset[str] = _words(
    "zip docx xlsx xlsm pptx dotx odt ods odp odg ott ots otp epub jar apk cbz xpi"
)
# Formats that are each other's aliases or containers for our purposes
GROUPS: tuple[frozenset[str], ...] = tuple(_words(g) for g in (
    "mp4 m4v m4a m4b m4r mov 3gp 3g2 f4v aac",
    "heic heif",
    "ogg oga ogv opus spx",
    "mkv mka webm weba",
    "docx docm dotx dotm",  # templates and macro variants share the package layout
    "xlsx xlsm xltx xltm",
    "pptx pptm potx ppsx",
    "odt ott", "ods ots", "odp otp", "odg otg",
    "mobi azw azw3 prc",  # Kindle formats are all MOBI containers
    "rar cbr", "7z cb7",
    "asf wmv wma",
    "mpg mpeg vob m2v",
    "ts mts m2ts",
    "jpg jpeg jfif mpo",
    "tiff dng cr2 nef arw orf rw2",
    "ppm pgm pbm pnm",
    "bmp dib",
    "ico cur",
    "ps eps ai",
    "pdf ai",
    "mp3 mp2 mpga",
    "wav rf64",
    "aiff aif aifc",
    "mid midi",
    "doc xls ppt msg dot xlt pot",  # one OLE container; libmagic's guess between them is weak
    "tar gz tgz bz2 tbz2 xz txz zst lz lzma",  # a .tar may arrive compressed
))  # fmt: skip
# Declared formats that promise nothing about the content
GENERIC: frozenset[str] = frozenset({"bin", "dat", "raw", "img", "data", "octet-stream"})
# Detections too weak to refuse a file on (no real magic number)
WEAK: frozenset[str] = frozenset({"tga", "mp3", "aac", "ts", "mpg"})

_NAMES = {"txt": "plain text"}
_OOXML = (("word/", "docx"), ("xl/", "xlsx"), ("ppt/", "pptx"))
_ODF = {
    "application/epub+zip": "epub", "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.oasis.opendocument.presentation": "odp",
    "application/vnd.oasis.opendocument.graphics": "odg",
}  # fmt: skip


@functools.cache
def _magic(mime: bool) -> Any:  # a magic.Magic (python-magic has no type information)
    import magic

    return magic.Magic(mime=mime)


# What libmagic is shown of a file: its first MiB, libmagic's own limit until 5.41 (now 7 MiB).
# Every signature we tell formats by lies in it. libmagic reads a file into fresh memory on
# each call; in a job's newly forked process that cost 30-35 ms per call for a 5 MB WAV (page
# faults), against about 1 ms for this head read once and handed over as a buffer.
HEAD_BYTES = 1 << 20


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(HEAD_BYTES)


def _mime(head: bytes) -> str:
    return str(_magic(True).from_buffer(head)).split(";")[0].strip()


def _description(head: bytes) -> str:
    return str(_magic(False).from_buffer(head))


def _zip_kind(path: Path) -> str:
    """docx, xlsx, pptx, odt, epub, jar, ... from the members; 'zip' when none matches."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if "mimetype" in names:
                info = zf.getinfo("mimetype")
                if info.file_size <= 100:
                    kind = _ODF.get(zf.read(info).decode("ascii", "replace").strip())
                    if kind:
                        return kind
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
        return "zip"
    if "[Content_Types].xml" in names:
        for prefix, kind in _OOXML:
            if any(n.startswith(prefix) for n in names):
                return kind
    if "AndroidManifest.xml" in names:
        return "apk"
    if "META-INF/MANIFEST.MF" in names:
        return "jar"
    return "zip"


def _text_kind(path: Path) -> str:
    """A closer name for text content, for messages only (never used to refuse)."""
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"{", b"[")):
        return "json"
    if b"<svg" in head:
        return "svg"
    if head.startswith((b"<!doctype html", b"<html")):
        return "html"
    if head.startswith(b"<?xml") or head.startswith(b"<"):
        return "xml"
    return "txt"


def detect(path: Path) -> str | None:
    """Our extension for the file's content, or None when libmagic cannot tell."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return None
        head = _head(path)
        mime = _mime(head)
    except (OSError, ImportError):
        return None
    kind = MIME.get(mime)
    if kind is None or mime == "text/plain":
        # the description only when the MIME type is not enough (one libmagic run saved)
        desc = _description(head)
        kind = next((ext for prefix, ext in DESCRIPTION if desc.startswith(prefix)), kind)
    if kind is None and mime in ("application/x-ole-storage", "application/CDFV2"):
        kind = "doc"  # an OLE container (doc, xls, ppt, msg): which one libmagic can't say
    if kind is None and mime.startswith("text/"):
        kind = "txt"
    if kind in ZIP_BASED:
        kind = _zip_kind(path)
    if kind == "txt":
        kind = _text_kind(path)
    return kind


def compatible(declared: str, detected: str) -> bool:
    """Could a file of `declared` type honestly have content that looks like `detected`?"""
    if declared == detected or declared in GENERIC or detected in WEAK:
        return True
    if declared in TEXT and detected in TEXT:
        return True
    if declared == "zip" and detected in ZIP_BASED:
        return True  # every docx, epub or jar is a zip
    if declared in ("cbz", "xpi") and detected == "zip":
        return True  # zips of images / files with nothing to tell them apart
    return any(declared in group and detected in group for group in GROUPS)


def known(fmt: str) -> bool:
    return fmt in TEXT or fmt in ZIP_BASED or fmt in MIME.values() or any(fmt in group for group in GROUPS)


def check_declared(path: Path, declared_format: str) -> None:
    """Refuse the file when its content is clearly another type than declared."""
    declared = declared_format.strip().lower().lstrip(".")
    if not known(declared):
        return  # nothing to compare with
    detected = detect(path)
    if detected is None or compatible(declared, detected):
        return
    name = _NAMES.get(detected, f"{_article(detected)} {detected} file")
    raise ConversionError(
        f"The file is not {_article(declared)} {declared}: its content is {name}.",
        f"Send it with input format '{detected}', or send a real {declared} file.",
    )


def _article(fmt: str) -> str:
    # "an mp4", "an html" (spelt out), "a heic", "a png" (said as a word or starts with p)
    first, second = fmt[:1], fmt[1:2]
    spelt = first in "fhlmnrsx" and second not in "aeiou" and fmt not in ("flac",)
    return "an" if first in "aeiou" or spelt else "a"
