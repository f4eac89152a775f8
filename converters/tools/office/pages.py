"""Whether a PDF LibreOffice wrote has a page, without a PDF library.

Standard library only: the worker's office agent imports it inside an instance's jail
(converters/tools/office/agent.py) as well as the document converter in a sandbox child.
"""

from __future__ import annotations

import re
from pathlib import Path

# A page object in the uncompressed dictionaries LibreOffice writes ("/Type/Page", not
# "/Type/Pages"): finding one settles that the PDF is not empty without importing a PDF
# library, whose import alone costs several times the conversion of a one-page document.
_PAGE_OBJECT = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


def has_page_object(path: str | Path) -> bool:
    tail = b""
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            if _PAGE_OBJECT.search(tail + chunk):
                return True
            tail = chunk[-32:]
    return False
