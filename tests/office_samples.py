"""Minimal OpenDocument files for the office tests and bench/office.py, built in memory.

`odf_bytes(kind, body)` packs a text, spreadsheet or presentation body into a valid ODF zip
(mimetype first and stored, a manifest); `odp_slide` is one slide with a text box.
"""

from __future__ import annotations

import io
import zipfile

ODF_NS = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
    'xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0" '
    'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" '
    'xmlns:xlink="http://www.w3.org/1999/xlink" '
    'xmlns:script="urn:oasis:names:tc:opendocument:xmlns:script:1.0" '
    'xmlns:of="urn:oasis:names:tc:opendocument:xmlns:of:1.2" '
    'xmlns:ooo="http://openoffice.org/2004/office" '
    'xmlns:dom="http://www.w3.org/2001/xml-events"'
)
ODF_MIMES = {
    "text": "application/vnd.oasis.opendocument.text",
    "spreadsheet": "application/vnd.oasis.opendocument.spreadsheet",
    "presentation": "application/vnd.oasis.opendocument.presentation",
}


def odf_bytes(kind: str, body: str, scripts: str = "", extra: dict[str, str] | None = None) -> bytes:
    """A minimal ODF package (mimetype first and stored, as the format requires)."""
    mime = ODF_MIMES[kind]
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ODF_NS} '
        f'office:version="1.2">{scripts}<office:body><office:{kind}>{body}'
        f"</office:{kind}></office:body></office:document-content>"
    )
    entries = "".join(
        f'<manifest:file-entry manifest:full-path="{name}" manifest:media-type="text/xml"/>'
        for name in ["content.xml", *(extra or {})]
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest='
        '"urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
        f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{mime}"/>'
        f"{entries}</manifest:manifest>"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), mime)
        zf.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
        zf.writestr("META-INF/manifest.xml", manifest, zipfile.ZIP_DEFLATED)
        for name, data in (extra or {}).items():
            zf.writestr(name, data, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def odp_slide(inner: str = "") -> str:
    return (
        '<draw:page draw:name="p1">'
        f"{inner}"
        '<draw:frame svg:x="2cm" svg:y="2cm" svg:width="14cm" svg:height="3cm">'
        "<draw:text-box><text:p>Quokka Zephyr slide</text:p></draw:text-box></draw:frame>"
        "</draw:page>"
    )
