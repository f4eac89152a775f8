"""app/api/multipart.py's header parsing: the same answers as aiohttp's, parsed once."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import BodyPartReader
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from app.api.multipart import _names, media_type


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("multipart/form-data; boundary=x", "multipart/form-data"),
        ("Application/JSON ; charset=utf-8", "application/json"),
        (None, ""),
    ],
)
def test_media_type_is_the_header_without_parameters(header: str | None, expected: str) -> None:
    headers = {"Content-Type": header} if header is not None else {}
    request = make_mocked_request("POST", "/v1/convert", headers=headers)
    assert media_type(request) == expected
    if header is not None:
        assert media_type(request) == request.content_type  # what aiohttp says, cheaper


@pytest.mark.parametrize(
    "disposition",
    [
        'form-data; name="file"; filename="photo.jpg"',
        "form-data; name=options",
        "form-data; name=\"file\"; filename*=UTF-8''na%C3%AFve%20photo.jpg",
        "attachment",
        "",
    ],
)
def test_names_match_aiohttp(disposition: str) -> None:
    headers: Any = CIMultiDict({"Content-Disposition": disposition} if disposition else {})
    part = BodyPartReader(b"--x", headers, None)  # type: ignore[arg-type]  # headers only
    assert _names(part) == (part.name, part.filename)
