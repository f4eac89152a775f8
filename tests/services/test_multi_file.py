"""Several inputs into one output, and one input into several outputs, through the API."""

from __future__ import annotations

import io
import zipfile

import aiohttp
import pytest

from tests.conftest import Account, GraphQL, operation, png_bytes, wait_for_status
from tests.pdf_samples import page_count, page_texts, pdf_bytes


async def _convert(
    http: aiohttp.ClientSession,
    base_url: str,
    key: str,
    files: list[tuple[str, bytes]],
    filetype: str,
    output_format: str,
) -> dict:
    form = aiohttp.FormData()
    for name, data in files:
        form.add_field("file", data, filename=name)
    form.add_field("filetype", filetype)
    form.add_field("output_format", output_format)
    async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": key}) as r:
        body = await r.json()
    assert r.status == 202, body
    return await wait_for_status(http, base_url, key, body["job_id"], timeout=120)


async def _download(http: aiohttp.ClientSession, url: str) -> bytes:
    async with http.get(url) as resp:
        assert resp.status == 200
        return await resp.read()


async def test_several_files_become_one_zip(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    files = [("a.txt", b"alpha"), ("b.csv", b"x,y\n1,2\n"), ("c.png", png_bytes())]
    status = await _convert(http, base_url, account.key, files, "archive", "zip")
    assert status["status"] == "finished", (status["error"], status["hint"])
    with zipfile.ZipFile(io.BytesIO(await _download(http, status["download_url"]))) as z:
        assert {n: z.read(n) for n in z.namelist()} == dict(files)
    assert sorted(status["items"]) == ["a.txt", "b.csv", "c.png"]


async def test_one_input_for_a_single_input_conversion(
    http: aiohttp.ClientSession, base_url: str, account: Account
) -> None:
    form = aiohttp.FormData()
    for name in ("a.png", "b.png"):
        form.add_field("file", png_bytes(), filename=name)
    form.add_field("filetype", "image")
    form.add_field("output_format", "jpg")
    async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": account.key}) as r:
        body = await r.json()
    assert r.status == 400 and "one input" in body["message"]


def _pdf(pages: int, label: str) -> bytes:
    return pdf_bytes(pages, label)


@pytest.mark.usefixtures("base_url")
async def test_images_into_one_pdf_and_pdf_merge_and_pages_to_images(
    http: aiohttp.ClientSession, base_url: str, account: Account, gql: GraphQL
) -> None:
    pytest.importorskip("converters.filetypes.pdf.converter")
    images = [("one.png", png_bytes((100, 80), "red")), ("two.png", png_bytes((60, 90), "blue"))]
    status = await _convert(http, base_url, account.key, images, "pdf", "pdf")
    assert status["status"] == "finished", status
    assert page_count(await _download(http, status["download_url"])) == 2

    merged = await _convert(
        http, base_url, account.key, [("a.pdf", _pdf(2, "first")), ("b.pdf", _pdf(1, "second"))], "pdf", "pdf"
    )
    assert merged["status"] == "finished", merged
    texts = page_texts(await _download(http, merged["download_url"]))
    assert len(texts) == 3 and "first page 1" in texts[0] and "second page 1" in texts[2]

    # one pdf, three pages -> a zip of three PNGs, listed on the job (GraphQL this time)
    code, body = await gql.multipart(
        operation("Convert"),
        {"input": {"file": None, "filetype": "pdf", "outputFormat": "png"}},
        {"variables.input.file": ("three.pdf", _pdf(3, "render"))},
        key=account.key,
    )
    assert code == 200, body
    done = await wait_for_status(http, base_url, account.key, body["data"]["convert"]["id"], 120)
    assert done["status"] == "finished", done
    with zipfile.ZipFile(io.BytesIO(await _download(http, done["download_url"]))) as z:
        names = sorted(z.namelist())
        assert len(names) == 3 and all(n.endswith(".png") for n in names)
        assert z.read(names[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(done["items"]) == names and done["file_name"].endswith(".zip")
