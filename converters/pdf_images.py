"""Where each image of a PDF is drawn, and so at what resolution (for compress's image_dpi).

An image's resolution is its pixels over the size it is drawn at, which only the content
stream tells: we follow the transformation matrix through q/Q/cm into form XObjects. An
image drawn several times counts at its largest placement, so downsampling never blurs
the biggest copy. Nothing is decoded here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pikepdf

Matrix = tuple[float, float, float, float, float, float]
IDENTITY: Matrix = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
MAX_FORM_DEPTH = 12  # forms drawing forms; deeper (or cyclic) nesting is not followed
MAX_OPERATORS = 2_000_000  # per document: a content stream cannot keep us busy for ever


@dataclass
class PlacedImage:
    stream: pikepdf.Stream
    dpi: float  # lowest effective resolution over its placements


def _multiply(m: Matrix, n: Matrix) -> Matrix:
    a, b, c, d, e, f = m
    a2, b2, c2, d2, e2, f2 = n
    return (a * a2 + b * c2, a * b2 + b * d2, c * a2 + d * c2, c * b2 + d * d2,
            e * a2 + f * c2 + e2, e * b2 + f * d2 + f2)  # fmt: skip


def _matrix(values: Any) -> Matrix | None:
    """Six numbers from a `cm` operator's operands (any PDF objects: checked here)."""
    try:
        nums = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    return nums if len(nums) == 6 else None


class _Walker:
    def __init__(self) -> None:
        self.found: dict[tuple[int, int], PlacedImage] = {}
        self.open: set[tuple[int, int]] = set()  # forms being walked
        self.budget = MAX_OPERATORS

    def walk(self, owner: pikepdf.Object, resources: pikepdf.Object, ctm: Matrix, depth: int) -> None:
        if depth > MAX_FORM_DEPTH:
            return
        try:
            instructions = pikepdf.parse_content_stream(owner)
        except pikepdf.PdfError:
            return  # unreadable content: its images are left alone
        stack: list[Matrix] = []
        xobjects: Any = resources.get("/XObject", {}) if isinstance(resources, pikepdf.Dictionary) else {}
        for instruction in instructions:
            operands, operator = instruction.operands, instruction.operator
            self.budget -= 1
            if self.budget < 0:
                return
            op = str(operator)
            if op == "q":
                stack.append(ctm)
            elif op == "Q":
                ctm = stack.pop() if stack else ctm
            elif op == "cm":
                m = _matrix(operands)
                if m:
                    ctm = _multiply(m, ctm)
            elif op == "Do" and operands:
                xobj = xobjects.get(operands[0]) if hasattr(xobjects, "get") else None
                if isinstance(xobj, pikepdf.Stream):
                    self._draw(xobj, resources, ctm, depth)

    def _draw(self, xobj: pikepdf.Stream, resources: pikepdf.Object, ctm: Matrix, depth: int) -> None:
        subtype = xobj.get("/Subtype")
        if subtype == "/Image" and xobj.is_indirect:
            a, b, c, d = ctm[:4]
            width_in = math.hypot(a, b) / 72  # the unit square, in inches on the page
            height_in = math.hypot(c, d) / 72
            if width_in <= 0 or height_in <= 0:
                return
            try:
                dpi = max(int(xobj.Width) / width_in, int(xobj.Height) / height_in)
            except (AttributeError, TypeError, ValueError):
                return
            key = xobj.objgen
            if key not in self.found or dpi < self.found[key].dpi:
                self.found[key] = PlacedImage(xobj, dpi)
        elif subtype == "/Form" and xobj.objgen not in self.open:  # (a form inside itself: once)
            inner = _matrix(xobj.get("/Matrix", IDENTITY)) or IDENTITY
            self.open.add(xobj.objgen)
            self.walk(xobj, xobj.get("/Resources", resources), _multiply(inner, ctm), depth + 1)
            self.open.discard(xobj.objgen)


def placed_images(pdf: pikepdf.Pdf) -> dict[tuple[int, int], PlacedImage]:
    """Every image XObject drawn on a page (by object number), with its lowest dpi."""
    walker = _Walker()
    for page in pdf.pages:
        walker.walk(page.obj, page.resources, IDENTITY, 0)  # (resources may be inherited)
    return walker.found
