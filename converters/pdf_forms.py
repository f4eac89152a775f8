"""Refuse PDFs whose form XObjects nest into a drawing that never ends, before PDFium sees them.

A form XObject may draw other forms. A form that draws itself twice, or a chain of forms
each drawing the next one twice, is a few hundred bytes that expand into 2^depth drawings:
PDFium stops a plain self-reference but not the doubling one, and spends minutes or hours
on the first page (PyMuPDF stopped the cycle but not the chain). We count, without
drawing anything, how many form drawings each page's forms expand into (each form's
content parsed once, results shared) and refuse a cycle or a total over MAX_FORM_DRAWS.
"""

from __future__ import annotations

from pathlib import Path

import pikepdf

from converters.base import ConversionError

MAX_FORM_DRAWS = 200_000  # expanded form drawings per document (~4 s of PDFium)
MAX_OPERATORS = 5_000_000  # content operators we parse for this check; past it we stop looking


class _Nesting(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Counter:
    def __init__(self) -> None:
        self.expanded: dict[tuple[int, int], int] = {}
        self.open: set[tuple[int, int]] = set()
        self.budget = MAX_OPERATORS

    def draws(self, form: pikepdf.Stream, inherited: pikepdf.Object) -> int:
        """Form drawings that drawing `form` once amounts to, itself included."""
        key = form.objgen
        if key in self.open:
            raise _Nesting("The PDF has a form that draws itself, which never ends.")
        if key in self.expanded:
            return self.expanded[key]
        resources = form.get("/Resources", inherited)
        xobjects = resources.get("/XObject") if isinstance(resources, pikepdf.Dictionary) else None
        total = 1
        if isinstance(xobjects, pikepdf.Dictionary) and self.budget > 0:
            self.open.add(key)
            try:
                instructions = pikepdf.parse_content_stream(form)
            except pikepdf.PdfError:
                instructions = []  # unreadable: PDFium will not draw it either
            for instruction in instructions:
                operands, operator = instruction.operands, instruction.operator
                self.budget -= 1
                if self.budget < 0:
                    break
                if str(operator) != "Do" or not operands:
                    continue
                child = xobjects.get(str(operands[0]))  # a /Name: its text is the key
                if isinstance(child, pikepdf.Stream) and child.get("/Subtype") == "/Form":
                    total += self.draws(child, resources)
                    if total > MAX_FORM_DRAWS:
                        raise _Nesting(
                            f"The PDF nests its drawings into more than {MAX_FORM_DRAWS:,} form drawings."
                        )
            self.open.discard(key)
        self.expanded[key] = total
        return total


def check_form_nesting(path: Path) -> None:
    """Raise ConversionError for a cycle of forms or an explosion of nested drawings."""
    try:
        pdf = pikepdf.open(path)
    except (pikepdf.PdfError, ValueError, OSError):
        return  # the renderer's own open reports damaged and locked files
    counter = _Counter()
    total = 0
    try:
        with pdf:
            for page in pdf.pages:
                resources = page.resources
                xobjects = resources.get("/XObject") if isinstance(resources, pikepdf.Dictionary) else None
                if not isinstance(xobjects, pikepdf.Dictionary):
                    continue
                for _name, xobj in xobjects.items():  # each form the page may draw, once
                    if isinstance(xobj, pikepdf.Stream) and xobj.get("/Subtype") == "/Form":
                        total += counter.draws(xobj, resources)
                        if total > MAX_FORM_DRAWS:
                            raise _Nesting(
                                f"The PDF nests its drawings into more than {MAX_FORM_DRAWS:,} form drawings."
                            )
    except _Nesting as exc:
        raise ConversionError(
            exc.message, hint="Print it to a new PDF with another program, or send a simpler file."
        ) from None
    except RecursionError:
        raise ConversionError(
            "The PDF nests its forms too deeply.", hint="Print it to a new PDF with another program."
        ) from None
