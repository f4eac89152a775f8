"""Licence check of the installed Python set: no GPL or AGPL package may be installed.

Convertd is Apache-2.0 and imports its libraries into its own processes; a GPL or AGPL
library there would put the whole service under that licence (the AGPL even for users
who only reach it over the network). LGPL, MPL and permissive licences are fine.

    python scripts/licenses.py            # check the environment running this script
    python scripts/licenses.py --path DIR # check distributions found in DIR instead

Exit status 1 names each offending package with its version and licence. Sources, in
order of authority: the SPDX `License-Expression` (an OR lets us pick a permissive
branch), else the `License` field and the licence classifiers (any GPL mention counts).
Wheels that declare a permissive licence for their source but bundle GPL code say so in
a "License for ... binary wheels: ..." line of a licence file (pillow-heif does); that
line counts too.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass

# GPL or AGPL in free text; LGPL ("Lesser", "Library") does not match: no word boundary
# inside "LGPL", and the GNU names are spelled out.
_COPYLEFT_TEXT = re.compile(r"\bA?GPL|GNU\s+(?:Affero\s+)?General\s+Public\s+Licen[cs]e", re.I)
_COPYLEFT_SPDX = re.compile(r"^A?GPL-", re.I)
_WHEEL_STATEMENT = re.compile(r"^License for .{0,80}binary wheels?:\s*(.+)$", re.I | re.M)
_TOKEN = re.compile(r"\(|\)|[A-Za-z0-9.+:-]+")

# Native libraries under the GPL that wheels bundle (auditwheel puts them in <pkg>.libs/):
# loaded into our process as soon as the package is imported.
GPL_LIBRARIES: dict[str, str] = {
    "libx264": "x264, GPL-2.0-or-later",
    "libx265": "x265, GPL-2.0-or-later",
    "libpostproc": "FFmpeg's libpostproc, GPL-2.0-or-later",
    "libxvidcore": "Xvid, GPL-2.0-or-later",
    "librubberband": "Rubber Band, GPL-2.0-or-later",
}
_GPL_LIBRARY = re.compile(r"^(" + "|".join(map(re.escape, GPL_LIBRARIES)) + r")[-.]")

# Reviewed exceptions: package -> why it is tolerated for now although the rules above flag
# it. Each is printed on every run, so it cannot be forgotten.
# None at present: PyAV (bundling x264 and x265) was until Convertd probed media with the
# separate ffprobe program (docs/decisions.md, 2026-12-03).
ALLOWED: dict[str, str] = {}


@dataclass(frozen=True)
class Verdict:
    name: str
    version: str
    licence: str  # what the package declares, for people
    forbidden: str | None  # why it may not be installed, or None
    tolerated: str | None = None  # flagged, but reviewed and listed in ALLOWED


# ------------------------------------------------------------------ SPDX expressions


class _Unparsable(ValueError):
    pass


def spdx_allowed(expression: str) -> bool:
    """Whether an SPDX licence expression can be used without GPL/AGPL terms."""
    tokens = _TOKEN.findall(expression)
    if not tokens or "".join(tokens) != re.sub(r"\s+", "", expression):
        raise _Unparsable(expression)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise _Unparsable(expression)
        pos += 1
        return tokens[pos - 1]

    def factor() -> bool:
        token = take()
        if token == "(":
            value = either()
            if take() != ")":
                raise _Unparsable(expression)
            return value
        if token.upper() in ("AND", "OR", "WITH", ")"):
            raise _Unparsable(expression)
        if (peek() or "").upper() == "WITH":
            take()
            take()  # an exception (e.g. Classpath) still leaves a GPL licence: counted as GPL
        return not _COPYLEFT_SPDX.match(token)

    def both() -> bool:
        value = factor()
        while (peek() or "").upper() == "AND":
            take()
            value = factor() and value
        return value

    def either() -> bool:
        value = both()
        while (peek() or "").upper() == "OR":
            take()
            value = both() or value
        return value

    result = either()
    if pos != len(tokens):
        raise _Unparsable(expression)
    return result


# ------------------------------------------------------------------------ a package


def _licence_fields(dist: md.Distribution) -> tuple[str | None, str | None, list[str]]:
    meta = dist.metadata
    expression = (meta.get("License-Expression") or "").strip() or None
    field = (meta.get("License") or "").strip()
    if field.upper() == "UNKNOWN":
        field = ""
    classifiers = [
        c.split("::")[-1].strip()
        for c in meta.get_all("Classifier") or []
        if c.startswith("License ::") and c.strip() != "License :: OSI Approved"
    ]
    return expression, field or None, classifiers


def _licence_texts(dist: md.Distribution) -> list[str]:
    """The licence files in the package's .dist-info, as text."""
    texts = []
    for file in dist.files or []:
        parts = file.parts
        if not parts or ".dist-info" not in parts[0]:
            continue
        if not re.search(r"licen[cs]e|copying|notice", file.name, re.I):
            continue
        try:
            texts.append(file.locate().read_bytes()[:20000].decode("utf-8", "replace"))
        except OSError:
            continue
    return texts


def _wheel_statements(dist: md.Distribution) -> list[str]:
    return [m.strip() for text in _licence_texts(dist) for m in _WHEEL_STATEMENT.findall(text)]


# the opening of well-known licence texts, for packages that declare nothing
_FILE_OPENINGS = (
    ("GNU AFFERO GENERAL PUBLIC LICENSE", "AGPL (from its licence file)"),
    ("GNU LESSER GENERAL PUBLIC LICENSE", "LGPL (from its licence file)"),
    ("GNU GENERAL PUBLIC LICENSE", "GPL (from its licence file)"),
    ("Apache License", "Apache-2.0 (from its licence file)"),
    ("Mozilla Public License", "MPL-2.0 (from its licence file)"),
    ("Permission is hereby granted, free of charge", "MIT (from its licence file)"),
    ("Redistribution and use in source and binary forms", "BSD (from its licence file)"),
)


def _from_files(dist: md.Distribution) -> str | None:
    for text in _licence_texts(dist):
        head = " ".join(text[:3000].split())
        for opening, licence in _FILE_OPENINGS:
            if opening.lower() in head.lower():
                return licence
    return None


def describe(dist: md.Distribution) -> str:
    """The licence as the package declares it, shortened for a table."""
    expression, field, classifiers = _licence_fields(dist)
    if expression:
        text = expression
    elif field and len(field) <= 120 and "\n" not in field:
        text = field
    elif classifiers:
        text = "; ".join(dict.fromkeys(classifiers))
    elif field:
        text = field.splitlines()[0][:120] + " …"
    else:
        text = _from_files(dist) or "not declared"
    statements = _wheel_statements(dist)
    if statements:
        text += f" (binary wheel: {'; '.join(statements)})"
    return text


def forbidden_reason(dist: md.Distribution) -> str | None:
    """Why this distribution may not be installed next to Apache-2.0 Convertd, or None."""
    expression, field, classifiers = _licence_fields(dist)
    reason = None
    if expression:
        try:
            if not spdx_allowed(expression):
                reason = f"licence expression {expression!r} has no branch without GPL/AGPL"
        except _Unparsable:
            if _COPYLEFT_TEXT.search(expression):
                reason = f"licence expression {expression!r} mentions GPL/AGPL"
    else:
        guessed = "" if field or classifiers else _from_files(dist) or ""
        for text in [field or "", *classifiers, guessed]:
            if _COPYLEFT_TEXT.search(text):
                reason = f"declares {text.splitlines()[0][:100]!r}"
                break
    for statement in _wheel_statements(dist):
        if _COPYLEFT_TEXT.search(statement):
            reason = f"its binary wheel says: {statement[:100]!r}"
    libraries = bundled_gpl_libraries(dist)
    if libraries:
        reason = "bundles " + "; ".join(libraries)
    return reason


def bundled_gpl_libraries(dist: md.Distribution) -> list[str]:
    found = {}
    for file in dist.files or []:
        match = _GPL_LIBRARY.match(file.name)
        if match and (".so" in file.name or file.name.endswith((".dll", ".dylib"))):
            found[match.group(1)] = f"{GPL_LIBRARIES[match.group(1)]} ({file.name})"
    return sorted(found.values())


def _name(dist: md.Distribution) -> str:
    return re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()


def verdicts(dists: Iterable[md.Distribution]) -> list[Verdict]:
    out: dict[str, Verdict] = {}
    for dist in dists:
        name = _name(dist)
        if not name or name in out:  # the first on the path is the one imported
            continue
        reason = forbidden_reason(dist)
        tolerated = None
        if reason and name in ALLOWED:
            reason, tolerated = None, f"{reason}. Tolerated: {ALLOWED[name]}"
        out[name] = Verdict(name, dist.version, describe(dist), reason, tolerated)
    return sorted(out.values(), key=lambda v: v.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", action="append", help="look for distributions here instead")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every package")
    args = parser.parse_args(argv)
    found = verdicts(md.distributions(path=args.path) if args.path else md.distributions())
    bad = [v for v in found if v.forbidden]
    if args.verbose:
        for v in found:
            print(f"  {v.name} {v.version}: {v.licence}")
    for v in found:
        if v.tolerated:
            print(f"licence check: warning: {v.name} {v.version}: {v.tolerated}", file=sys.stderr)
    if bad:
        print(f"licence check: {len(bad)} package(s) under the GPL or AGPL are installed:", file=sys.stderr)
        for v in bad:
            print(f"  {v.name} {v.version}: {v.licence}  [{v.forbidden}]", file=sys.stderr)
        print(
            "Convertd is Apache-2.0 and loads its libraries in-process: replace these with "
            "permissively licensed ones (docs/decisions.md). An older .venv may still hold a "
            "package removed from pyproject.toml: `.venv/bin/pip uninstall NAME`.",
            file=sys.stderr,
        )
        return 1
    print(f"licence check: {len(found)} installed packages, none under the GPL or AGPL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
