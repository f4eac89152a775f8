"""An office job without a sandbox child (converters/tools/office/direct.py), against real LibreOffice.

With a door open for the job, `sandbox.run` hands the whole job to the warm pool: the link
guard and the page check run in the instance's jail. These tests forbid the sandbox's fork
(`no_child`) to prove that no child ran, and check that the guard, the limits, the
accounts and every fallback to the child still hold.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from converters.base import Limits
from converters.sandbox import parent as sandbox
from converters.sandbox.failures import SandboxError
from converters.tools.office import broker as office_broker
from converters.tools.office import conversion
from converters.tools.office import pool as office_pool
from converters.tools.office import soffice as office
from tests.converters.filetypes.document.test_document_hostile import (  # noqa: F401  (world: a fixture)
    OFFICE_ATTACKS,
    World,
    assert_no_leak,
    world,
)
from tests.converters.tools.office.test_office_pool import pdf_text, running_pool, short_odt

pytestmark = [
    pytest.mark.slow,  # LibreOffice pool
    pytest.mark.skipif(office_pool.unavailable() is not None, reason="no LibreOffice or no jail tools"),
]


@pytest.fixture(scope="module")
def pool() -> Iterator[office_pool.Pool]:
    with running_pool(instances=2) as pool:
        yield pool


@pytest.fixture
def no_child(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Fail any job that asks the fork server for a child; the list holds their specs."""
    asked: list[dict[str, Any]] = []

    async def refuse(_zygote: object, _family: str, spec: dict[str, Any]) -> Any:
        asked.append(spec)
        raise AssertionError("a sandbox child was forked")

    monkeypatch.setattr(sandbox, "_submit", refuse)
    return asked


async def job(
    pool: office_pool.Pool,
    src: Path,
    workdir: Path,
    out_fmt: str = "pdf",
    account: object = 1,
    **options: Any,
) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    async with office_broker.serve_job(workdir, account, pool=pool):
        result = await sandbox.run("document", src.suffix[1:], out_fmt, options, [src], workdir)
    return result.path


async def test_an_office_job_runs_in_the_jail_without_a_child(
    pool: office_pool.Pool, no_child: list[dict[str, Any]], tmp_path: Path
) -> None:
    before = pool.conversions
    out = await job(pool, short_odt(tmp_path / "note.odt"), tmp_path / "job")
    assert "Quokka Zephyr" in pdf_text(out)
    assert out == tmp_path / "job" / "note.pdf"  # named after the input, inside the job's folder
    assert pool.conversions == before + 1
    assert pool.layers()["link_guard"] is True
    # nothing of the job stays in the jail's spool
    for inst in pool.instances:
        for folder in (inst.spool / "job" / "in", inst.spool / "job" / "out"):
            assert not folder.exists() or not any(folder.iterdir())


async def test_other_formats_and_options_take_the_same_route(
    pool: office_pool.Pool, no_child: list[dict[str, Any]], tmp_path: Path
) -> None:
    src = short_odt(tmp_path / "note.odt")
    docx = await job(pool, src, tmp_path / "a", "docx")
    assert zipfile.is_zipfile(docx) and b"Quokka" in zipfile.ZipFile(docx).read("word/document.xml")
    pdf = await job(pool, docx, tmp_path / "b", pages="1")
    assert "Quokka Zephyr" in pdf_text(pdf)


async def test_a_bad_page_range_is_refused_before_the_pool(
    pool: office_pool.Pool, no_child: list[dict[str, Any]], tmp_path: Path
) -> None:
    before = pool.conversions
    with pytest.raises(Exception, match="not a page range"):
        await job(pool, short_odt(tmp_path / "n.odt"), tmp_path / "job", pages="1-2; rm")
    assert pool.conversions == before


async def test_the_guard_in_the_jail_refuses_what_the_child_refused(
    pool: office_pool.Pool, no_child: list[dict[str, Any]], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.docx"
    bad.write_bytes(b"not a zip at all" * 100)
    with pytest.raises(SandboxError, match="not a valid docx file") as caught:
        await job(pool, bad, tmp_path / "job")
    assert caught.value.kind == "converter"
    # two parts of one name: the package check's own refusal, from inside the jail
    twice = tmp_path / "twice.docx"
    with zipfile.ZipFile(twice, "w") as zf, contextlib.suppress(UserWarning):
        zf.writestr("word/document.xml", "<a/>")
        zf.writestr("word/document.xml", "<b/>")
    with pytest.raises(SandboxError, match="two parts with the same name"):
        await job(pool, twice, tmp_path / "job2")
    # and the next job converts
    assert "Quokka" in pdf_text(await job(pool, short_odt(tmp_path / "n.odt"), tmp_path / "job3"))


@pytest.mark.parametrize("name", sorted(OFFICE_ATTACKS))
async def test_hostile_office_files_through_the_jail(
    name: str,
    world: World,  # noqa: F811
    pool: office_pool.Pool,
    no_child: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    in_fmt, out_fmt, build = OFFICE_ATTACKS[name]
    world.connections.clear()
    src = tmp_path / f"attack.{in_fmt}"
    src.write_bytes(build(world))
    try:
        out = await job(pool, src, tmp_path / "job", out_fmt, account="attacker")
    except SandboxError as exc:
        assert exc.message
        outcome = "refused"
    else:
        assert_no_leak(out, out_fmt, world)
        outcome = "converted"
    world.settle()
    assert world.connections == [], f"the conversion connected out: {world.connections}"
    assert not world.pwned.exists(), "a macro ran"
    if name.endswith("that-is-html"):
        assert outcome == "refused"  # the declared format's filter, not LibreOffice's guess


async def test_a_pdf_without_a_page_object_goes_to_the_child_for_a_real_reader(
    pool: office_pool.Pool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # the jail's quick scan finds no page object (LibreOffice writes them uncompressed, so
    # only an empty PDF does that): the job runs again with its child, whose check asks a
    # real PDF reader, as before this route existed
    real = conversion._convert_on
    scanned: list[bool | None] = []

    def no_page_object(*args: Any) -> None:
        real(*args)
        job = args[3]
        if job.guard:
            scanned.append(job.has_pages)
            job.has_pages = False

    monkeypatch.setattr(conversion, "_convert_on", no_page_object)
    sandbox.last_timings.clear()
    out = await job(pool, short_odt(tmp_path / "n.odt"), tmp_path / "job")
    assert scanned == [True]  # the jail did scan the PDF (and found the page)
    assert sandbox.last_timings  # then the child converted and checked it
    assert "Quokka Zephyr" in pdf_text(out)


async def test_without_the_guard_in_the_jail_the_job_keeps_its_child(
    pool: office_pool.Pool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    layers = pool.layers()
    monkeypatch.setattr(pool, "layers", lambda: {**layers, "link_guard": False})
    sandbox.last_timings.clear()
    out = await job(pool, short_odt(tmp_path / "n.odt"), tmp_path / "job")
    assert sandbox.last_timings  # a child ran: the fork server's timings of it
    assert "Quokka Zephyr" in pdf_text(out)


async def test_strict_mode_keeps_the_child_when_the_jail_misses_a_layer(
    pool: office_pool.Pool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    layers = pool.layers()
    monkeypatch.setattr(pool, "layers", lambda: {**layers, "seccomp": False})
    monkeypatch.setenv("CONVERTD_SANDBOX", "strict")
    sandbox.last_timings.clear()
    out = await job(pool, short_odt(tmp_path / "n.odt"), tmp_path / "job")
    assert sandbox.last_timings
    assert "Quokka Zephyr" in pdf_text(out)


async def test_the_wall_limit_stops_the_conversion_and_frees_the_instance(tmp_path: Path) -> None:
    from tests.converters.tools.office.test_office_pool import long_odt

    with running_pool(instances=1) as pool:
        with pytest.raises(SandboxError, match="longer than 1 s") as caught:
            workdir = tmp_path / "job"
            workdir.mkdir()
            async with office_broker.serve_job(workdir, 1, pool=pool):
                await sandbox.run(
                    "document", "odt", "pdf", {}, [long_odt(tmp_path / "long.odt")], workdir,
                    limits=Limits(memory_bytes=office.MEMORY_BYTES, cpu_seconds=60, wall_seconds=1),
                )  # fmt: skip
        assert caught.value.kind == "timeout"
        assert pool.instances[0].recycled == {"abandoned": 1}
        assert not (tmp_path / "job" / "long.pdf").exists()


async def test_an_output_over_the_limit_is_refused(
    pool: office_pool.Pool, no_child: list[dict[str, Any]], tmp_path: Path
) -> None:
    workdir = tmp_path / "job"
    workdir.mkdir()
    async with office_broker.serve_job(workdir, 1, pool=pool):
        with pytest.raises(SandboxError, match="wrote more than 100 bytes") as caught:
            await sandbox.run(
                "document", "odt", "pdf", {}, [short_odt(tmp_path / "n.odt")], workdir,
                limits=Limits(memory_bytes=office.MEMORY_BYTES, output_bytes=100),
            )  # fmt: skip
    assert caught.value.kind == "output_size"
    assert not (workdir / "n.pdf").exists()
