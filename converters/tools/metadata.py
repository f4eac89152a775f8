"""What metadata an output carries over from its input: the `metadata` option.

- ``no_location`` (the default): everything but where the picture or recording was made:
  the EXIF GPS directory, XMP GPS and location properties, and the location atoms of
  video and audio containers (QuickTime ``©xyz``, ``com.apple.quicktime.location.*``).
- ``keep``: everything, location included.
- ``strip``: no EXIF, no XMP, no comments, no container tags. Colour profiles stay where
  the output format holds one (they describe colours, not people); elsewhere the pixels
  are converted to sRGB.

Images keep their date, camera and ICC profile; their orientation tag is set to 1 since
the pixels are turned upright.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from PIL import Image

from converters.base import Option

MODES: tuple[str, ...] = ("no_location", "keep", "strip")
DEFAULT = "no_location"

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def option(what: str) -> Option:
    return Option(
        "string",
        f"Metadata of the {what}: no_location keeps everything but the location (GPS) it "
        "was made at; keep copies everything, location included; strip removes all of it "
        "(EXIF, XMP, comments and tags; colour profiles stay or are applied to the pixels).",
        default=DEFAULT,
        enum=MODES,
    )


def mode(options: Mapping[str, Any]) -> str:
    """The mode asked for; the older `strip_metadata: true` means strip."""
    if options.get("strip_metadata"):
        return "strip"
    value = options.get("metadata") or DEFAULT
    return value if value in MODES else DEFAULT


# ---------------------------------------------------------------------------- images


def exif_for_output(exif: Image.Exif, how: str) -> bytes | None:
    """The EXIF block to write, or None for none."""
    if how == "strip" or not len(exif):
        return None
    if ORIENTATION in exif:
        exif[ORIENTATION] = 1  # the pixels were turned upright
    if how == "no_location" and GPS_IFD in exif:
        del exif[GPS_IFD]
    data = exif.tobytes()
    return data if len(exif) else None


# XMP properties that say where: exif:GPS*, IPTC and Photoshop places. Matched on the local
# name whatever prefix the packet binds; as attributes and as elements.
_XMP_PLACES = r"(?:GPS\w*|City|State|Country|CountryCode|Location|LocationCreated|LocationShown|Sublocation)"
_XMP_ATTR = re.compile(rb"\s[\w.-]+:" + _XMP_PLACES.encode() + rb"\s*=\s*(?:\"[^\"]*\"|'[^']*')")
_XMP_EMPTY = re.compile(rb"<([\w.-]+):" + _XMP_PLACES.encode() + rb"\b[^>]*/>")
_XMP_ELEMENT = re.compile(rb"<([\w.-]+):(" + _XMP_PLACES.encode() + rb")\b[^>]*>.*?</\1:\2\s*>", re.S)
_XMP_LEFT = re.compile(rb"GPS(?:Latitude|Longitude|Altitude)|LocationCreated|LocationShown")
_XMP_ORIENTATION_ATTR = re.compile(rb"(tiff:Orientation\s*=\s*[\"'])\d")
_XMP_ORIENTATION_ELEMENT = re.compile(rb"(<tiff:Orientation>)\d")


def xmp_for_output(xmp: bytes | str | None, how: str) -> bytes | None:
    """The XMP packet to write, or None. Without location, a packet that still names a
    position after cleaning (an unusual layout) is dropped whole rather than kept."""
    if not xmp or how == "strip":
        return None
    data = xmp.encode("utf-8") if isinstance(xmp, str) else bytes(xmp)
    data = _XMP_ORIENTATION_ATTR.sub(rb"\g<1>1", data)  # the pixels were turned upright
    data = _XMP_ORIENTATION_ELEMENT.sub(rb"\g<1>1", data)
    if how == "no_location":
        data = _XMP_ATTR.sub(b"", data)
        data = _XMP_EMPTY.sub(b"", data)
        data = _XMP_ELEMENT.sub(b"", data)
        if _XMP_LEFT.search(data):
            return None
    return data


# ---------------------------------------------------------------------------- media


def is_location_tag(key: str) -> bool:
    """A container tag that holds a place (ffmpeg's names for ©xyz and Apple's keys)."""
    key = key.lower()
    return "location" in key or key in ("xyz", "\u00a9xyz", "gps", "gpscoordinates")


def media_output_args(how: str, tags: Iterable[str], stream_tags: Mapping[str, Iterable[str]]) -> list[str]:
    """ffmpeg output arguments for the policy: `tags` are the input's global tag names and
    `stream_tags` the tag names of the output's streams by ffmpeg specifier ("s:v:0")."""
    if how == "strip":
        # no global, stream or chapter tags, and no encoder name either
        return ["-map_metadata", "-1", "-map_chapters", "-1", "-fflags", "+bitexact"]
    if how == "keep":
        return []
    args: list[str] = []
    # an empty value removes the tag from what ffmpeg copies over
    for name in sorted({t for t in tags if is_location_tag(t)}):
        args += ["-metadata", f"{name}="]
    for spec, names in stream_tags.items():
        for name in sorted({t for t in names if is_location_tag(t)}):
            args += [f"-metadata:{spec}", f"{name}="]
    return args
