"""Office jobs through the running service: the worker's warm pool, bound to each job's account."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from converters.tools.office import pool as office_pool
from tests.conftest import Account, wait_for_status
from tests.office_samples import odf_bytes
from tests.pdf_samples import page_texts

pytestmark = [
    pytest.mark.slow,  # LibreOffice pool behind the service
    pytest.mark.skipif(office_pool.unavailable() is not None, reason="no LibreOffice or jail tools"),
]


def odt(text: str) -> bytes:
    return odf_bytes("text", f"<text:p>{text}</text:p>")


async def convert(http: aiohttp.ClientSession, base_url: str, who: Account, text: str) -> str:
    form = aiohttp.FormData()
    form.add_field("file", odt(text), filename="letter.odt")
    form.add_field("filetype", "document")
    form.add_field("output_format", "pdf")
    async with http.post(f"{base_url}/v1/convert", data=form, headers={"X-API-Key": who.key}) as r:
        job = await r.json()
        assert r.status < 300, job
    status = await wait_for_status(http, base_url, who.key, job["job_id"], timeout=180)
    assert status["status"] == "finished", status
    async with http.get(f"{base_url}/v1/download/{job['job_id']}", headers={"X-API-Key": who.key}) as r:
        body = await r.read()
    return " ".join(page_texts(body))


async def test_office_jobs_run_in_the_workers_pool_per_account(
    http: aiohttp.ClientSession, base_url: str, make_account: Callable[..., Any]
) -> None:
    alice, bob = await make_account("alice"), await make_account("bob")
    pool = office_pool.current()
    assert pool is not None, "the worker did not start its LibreOffice pool"
    before = len(pool.history)
    texts = await asyncio.gather(
        convert(http, base_url, alice, "Quokka from Alice"),
        convert(http, base_url, bob, "Zephyr from Bob"),
        convert(http, base_url, alice, "Wombat from Alice"),
    )
    assert "Quokka from Alice" in texts[0] and "Zephyr from Bob" in texts[1] and "Wombat" in texts[2]
    mine = pool.history[before:]
    # the job's account (from the job row, not from the sandbox child) reached the pool
    assert sorted(str(a) for a, *_ in mine) == sorted(
        str(a) for a in (alice.account_id, bob.account_id, alice.account_id)
    )
    jails: dict[tuple[int, int, int], set[object]] = {}
    for account, slot, gen, pid in pool.history:
        jails.setdefault((slot, gen, pid), set()).add(account)
    assert all(len(accounts) == 1 for accounts in jails.values()), jails
