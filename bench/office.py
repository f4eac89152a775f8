"""Office conversions side by side: Convertd's warm pool against LibreOffice cold and warm.

One run measures, on the same generated files and interleaved round by round:

- cold:      `soffice --convert-to pdf` with a fresh profile per file (what every office
             job cost before the pool);
- unoserver: one warm soffice driven by unoserver's XML-RPC `convert` (what Gotenberg,
             JODConverter and unoserver users get), called directly from this script;
- pool:      the worker's warm pool alone, through a job's door from this process (no
             sandbox child, no service): what the pool itself costs;
- converter: Convertd's converter path as the worker runs it (door to the warm pool +
             `sandbox.run`), without HTTP, database or storage;
- whole job: the running service (embedded PostgreSQL and Redis, REST API, in-process
             worker with its pool): POST /v1/convert, follow the job's events over the
             GraphQL subscription until it ends, download the PDF;
- with wait: the same service in one call, POST /v1/convert with `wait`, whose answer
             is the PDF (README: a small file converts in one call).

and then throughput at concurrency 4: whole jobs from 4 clients, and the pool alone, against
4 clients spread over two unoserver instances driven directly. Figures are printed as ratios to unoserver.

unoserver's server must run under Debian's python (it imports `uno` from python3-uno):

    /usr/bin/python3 -m venv --system-site-packages .bench/unoserver-venv
    .bench/unoserver-venv/bin/pip install unoserver==3.7

then (bytecode allowed, as on users' machines; see PITFALLS.md):

    env -u PYTHONDONTWRITEBYTECODE .venv/bin/python bench/office.py   # --help: rounds, jobs, slots
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import openpyxl
import pypandoc
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import db, embedded  # noqa: E402
from app.api.server import build_app  # noqa: E402
from app.config import QueueSettings, Settings  # noqa: E402
from app.runtime import Runtime  # noqa: E402
from app.services.keys import create_account_with_key  # noqa: E402
from app.worker import build_worker  # noqa: E402
from converters.sandbox import parent as sandbox  # noqa: E402
from converters.tools.office import broker as office_broker  # noqa: E402
from converters.tools.office import pool as office_pool  # noqa: E402
from converters.tools.office import soffice as office  # noqa: E402
from tests.office_samples import odf_bytes  # noqa: E402

UNOSERVER_VENV = ROOT / ".bench" / "unoserver-venv"


# ----------------------------------------------------------------------- documents


def make_documents(root: Path, uno: Unoserver) -> dict[str, Path]:
    docs: dict[str, Path] = {}
    one = "# Quarterly note\n\n" + "A one-page letter with a heading and a few paragraphs of text. " * 12
    docs["docx-1p"] = root / "one-page.docx"
    pypandoc.convert_text(one, "docx", format="md", outputfile=str(docs["docx-1p"]))
    long = "\n\n".join(
        f"## Section {n}\n\n" + "This is a long report with many paragraphs of plain text. " * 40
        for n in range(120)
    )
    docs["docx-60p"] = root / "long.docx"
    pypandoc.convert_text(long, "docx", format="md", outputfile=str(docs["docx-60p"]))
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Item", "Quantity", "Price", "Total"])
    for n in range(1, 200):
        ws.append([f"item {n}", n % 17, 3.5 + n % 9, f"=B{n + 1}*C{n + 1}"])
    odp = root / "slides.odp"
    odp.write_bytes(_odp(12))
    docs["pptx"] = root / "slides.pptx"
    uno.convert(odp, docs["pptx"], "pptx")
    docs["xlsx"] = root / "sheet.xlsx"  # last: unoserver's soffice may crash on it
    wb.save(docs["xlsx"])
    return docs


def _odp(slides: int) -> bytes:
    pages = "".join(
        f'<draw:page draw:name="p{n}"><draw:frame svg:x="2cm" svg:y="2cm" svg:width="20cm" '
        f'svg:height="4cm"><draw:text-box><text:p>Slide {n}: quarterly figures</text:p>'
        "</draw:text-box></draw:frame></draw:page>"
        for n in range(slides)
    )
    return odf_bytes("presentation", pages)


# ------------------------------------------------------------------------- engines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Unoserver:
    """One unoserver (one warm soffice), driven over its XML-RPC API."""

    def __init__(self, root: Path) -> None:
        exe = UNOSERVER_VENV / "bin" / "unoserver"
        if not exe.exists():
            sys.exit(f"unoserver is not installed in {UNOSERVER_VENV}: see this script's docstring")
        self.port, uno_port = free_port(), free_port()
        profile = root / f"unoserver-profile-{self.port}"
        self.proc = subprocess.Popen(
            [str(exe), "--interface", "127.0.0.1", "--port", str(self.port), "--uno-port", str(uno_port),
             "--user-installation", str(profile)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.port}", allow_none=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                self.rpc.info()
                break
            except (OSError, xmlrpc.client.Fault):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("unoserver did not start") from None
                time.sleep(0.2)

    def convert(self, src: Path, dest: Path, fmt: str = "pdf") -> None:
        # a client of its own per call: ServerProxy is not safe to share between threads
        rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.port}", allow_none=True)
        rpc.convert(str(src), None, str(dest), fmt)
        if not dest.exists() or dest.stat().st_size == 0:
            raise RuntimeError(f"unoserver wrote nothing for {src.name}")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 9)
        self.proc.wait()


def cold_soffice(src: Path, outdir: Path) -> None:
    profile = outdir / "profile"
    soffice = office.soffice_path()
    assert soffice
    subprocess.run(
        [soffice, f"-env:UserInstallation={profile.as_uri()}", "--headless", "--norestore",
         "--convert-to", "pdf", "--outdir", str(outdir), str(src)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    if not (outdir / f"{src.stem}.pdf").exists():
        raise RuntimeError(f"cold soffice wrote nothing for {src.name}")


def pool_direct(pool: office_pool.Pool, src: Path, work: Path, account: object = "bench") -> None:
    """The pool alone, through a job's door, from this process (no sandbox child)."""
    broker = office_broker.JobBroker(pool, work, account)  # the converter column's account too
    try:
        door = office_broker.find(work)
        assert door is not None
        office_broker.convert(door, src, src.suffix[1:], "pdf", "", work / "out.pdf")
    finally:
        broker.close()


class Service:
    """The whole Convertd service in this process: embedded servers, API, worker + pool."""

    def __init__(self, tmp: Path, slots: int = 2) -> None:
        self.tmp = tmp
        self.slots = slots  # jobs the worker runs at once (its pool keeps 2 instances)

    async def __aenter__(self) -> Service:
        self.servers = embedded.start(self.tmp / "data")
        settings = Settings(
            data_dir=self.tmp / "data",
            database_url=self.servers.database_url,
            redis_url=self.servers.redis_url,
            public_url=None,
            secret="bench",
            max_upload_bytes=50 * 1024**2,
            download_url_ttl=600,
            trusted_proxies=(),
            require_https=False,
            queue=QueueSettings(concurrency=self.slots),
        )
        await db.migrate(self.servers.database_url)
        self.rt = await Runtime.open(settings)
        created = await create_account_with_key(self.rt.pool, "bench")
        self.key, self.account = created.secret, created.key.account_id
        self.runner = web.AppRunner(build_app(self.rt), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        self.worker = build_worker(self.rt)
        self.task = asyncio.create_task(self.worker.start())
        self.http = aiohttp.ClientSession()
        while (pool := office_pool.current()) is None:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(pool.wait_ready)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()
        await self.worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.runner.cleanup()
        await self.rt.close()
        self.servers.stop()

    async def job(self, src: Path, wait: bool = False) -> int:
        """POST, follow the events to the end, download; returns the PDF's size. With
        `wait`, one call whose answer is the PDF (README: a small file converts in one call)."""
        form = aiohttp.FormData()
        form.add_field("file", src.read_bytes(), filename=src.name)
        form.add_field("filetype", "document")
        form.add_field("output_format", "pdf")
        headers = {"X-API-Key": self.key}
        if wait:
            form.add_field("wait", "60")
            async with self.http.post(f"{self.base}/v1/convert", data=form, headers=headers) as r:
                body = await r.read()
                if r.status != 200 or not body.startswith(b"%PDF"):
                    raise RuntimeError(f"convert with wait: {r.status} {body[:200]!r}")
            return len(body)
        async with self.http.post(f"{self.base}/v1/convert", data=form, headers=headers) as r:
            job = await r.json()
            if r.status >= 300:
                raise RuntimeError(job)
        async with self.http.ws_connect(f"{self.base}/graphql", protocols=["graphql-transport-ws"]) as ws:
            await ws.send_json({"type": "connection_init", "payload": {"apiKey": self.key}})
            await ws.receive_json()
            query = "subscription($id: ID!) { jobUpdates(jobId: $id) { status error } }"
            await ws.send_json(
                {"id": "1", "type": "subscribe",
                 "payload": {"query": query, "variables": {"id": job["job_id"]}}}
            )  # fmt: skip
            while True:
                msg = await ws.receive_json()
                if msg["type"] == "complete":
                    break
                if msg["type"] == "next" and msg["payload"]["data"]["jobUpdates"]["status"] == "FAILED":
                    raise RuntimeError(msg["payload"]["data"]["jobUpdates"]["error"])
        async with self.http.get(f"{self.base}/v1/download/{job['job_id']}", headers=headers) as r:
            body = await r.read()
            if r.status != 200 or not body.startswith(b"%PDF"):
                raise RuntimeError(f"download failed: {r.status}")
        return len(body)


# ---------------------------------------------------------------------- measuring


@contextlib.contextmanager
def scratch(root: Path) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def latency(args: argparse.Namespace, root: Path, docs: dict[str, Path], svc: Service) -> None:
    pool = office_pool.current()
    assert pool is not None
    uno = [Unoserver(root)]

    async def cold(src: Path) -> None:
        with scratch(root) as out:
            await asyncio.to_thread(cold_soffice, src, out)

    async def warm(src: Path) -> None:
        with scratch(root) as out:
            await asyncio.to_thread(uno[0].convert, src, out / "out.pdf")

    async def door(src: Path) -> None:
        with scratch(root) as work:
            await asyncio.to_thread(pool_direct, pool, src, work)

    async def converter(src: Path) -> None:
        with scratch(root) as work:
            async with office_broker.serve_job(work, "bench", pool=pool):
                await sandbox.run("document", src.suffix[1:], "pdf", {}, [src], work)

    engines: dict[str, Callable[[Path], Awaitable[object]]] = {
        "cold": cold, "unoserver": warm, "pool": door, "converter": converter, "whole job": svc.job,
        "wait": lambda src: svc.job(src, wait=True),
    }  # fmt: skip
    results: dict[str, dict[str, list[float]]] = {d: {e: [] for e in engines} for d in docs}
    failed: dict[tuple[str, str], str] = {}
    try:
        for name, src in docs.items():
            for _ in range(args.rounds + 1):  # the first round is untimed: caches, lazy imports
                for engine, fn in engines.items():
                    if (name, engine) in failed:
                        continue
                    try:
                        took = await timed(lambda fn=fn, src=src: fn(src))  # type: ignore[misc]
                    except Exception as exc:  # reported, not fatal: the others still compare
                        failed[(name, engine)] = f"{type(exc).__name__}: {str(exc)[:90]}"
                        if engine == "unoserver":  # its soffice may be gone: a new one
                            uno[0].stop()
                            uno[0] = Unoserver(root)
                        continue
                    if _ > 0:
                        results[name][engine].append(took)
    finally:
        uno[0].stop()
    print(f"\nlatency, one client, median of {args.rounds} (ms; ratio to unoserver)")
    print(
        f"{'document':<10} {'cold':>14} {'unoserver':>10} {'pool':>16} {'converter':>16} {'whole job':>16}"
        f" {'with wait':>16}"
    )
    for name, per in results.items():
        med = {e: statistics.median(v) * 1000 if v else float("nan") for e, v in per.items()}
        base = med["unoserver"]
        print(
            f"{name:<10} {med['cold']:>7.0f} ({med['cold'] / base:4.1f}x) {base:>10.0f} "
            f"{med['pool']:>8.0f} ({med['pool'] / base:4.2f}x) "
            f"{med['converter']:>8.0f} ({med['converter'] / base:4.2f}x) "
            f"{med['whole job']:>8.0f} ({med['whole job'] / base:4.2f}x)"
            f" {med['wait']:>8.0f} ({med['wait'] / base:4.2f}x)"
        )
    for (name, engine), why in failed.items():
        print(f"  {name} through {engine} failed: {why}")


async def throughput(args: argparse.Namespace, root: Path, src: Path, svc: Service) -> None:
    unos = [Unoserver(root), Unoserver(root)]
    try:
        for uno in unos:
            await asyncio.to_thread(uno.convert, src, root / "warmup.pdf")

        async def run(clients: int, one: Callable[[int], Awaitable[object]]) -> float:
            todo = list(range(args.jobs))

            async def client() -> None:
                while todo:
                    await one(todo.pop())

            # untimed warm-up: in the default reuse=account mode the first jobs of an account
            # restart instances that served another account (the latency runs' accounts)
            await asyncio.gather(*(one(-1 - k) for k in range(clients)))
            start = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            return args.jobs / (time.perf_counter() - start)

        async def via_unoserver(n: int) -> None:
            with scratch(root) as out:
                await asyncio.to_thread(unos[n % 2].convert, src, out / "out.pdf")

        async def via_pool(n: int) -> None:
            with scratch(root) as work:
                # the service's account: in the default reuse=account mode another account
                # would restart both instances at every switch between engines
                await asyncio.to_thread(pool_direct, pool, src, work, svc.account)

        pool = office_pool.current()
        assert pool is not None
        engines: dict[str, Callable[[int], Awaitable[object]]] = {
            "unoserver": via_unoserver,
            "whole job": lambda n: svc.job(src),
            "with wait": lambda n: svc.job(src, wait=True),
            "pool": via_pool,
        }
        # round by round, each engine in turn: a shared machine's load drifts over minutes,
        # so each engine's figure spans the same stretch of time as the others'
        rates: dict[str, list[float]] = {name: [] for name in engines}
        for _round in range(args.repeats):
            for name, one in engines.items():
                rates[name].append(await run(4, one))
    finally:
        for uno in unos:
            uno.stop()
    base = rates["unoserver"]
    print(f"\nthroughput, {src.name} -> pdf, 4 clients, {args.jobs} jobs a run, {args.repeats} rounds")
    print(f"two unoservers driven directly: docs/s per round {_figures(base)}")
    labels = {
        "whole job": f"Convertd whole jobs ({svc.slots} job slots, {len(pool.instances)} pool instances)",
        "with wait": "Convertd whole jobs with wait (one call each)",
        "pool": "the worker's pool alone, through job doors",
    }
    for name, label in labels.items():
        # each round's ratio to the unoserver run of the same round, then their median
        ratio = statistics.median(r / b for r, b in zip(rates[name], base, strict=True))
        print(f"{label}: {ratio:.2f}x (docs/s per round {_figures(rates[name])})")
    recycled: dict[str, int] = {}
    for slot in pool.status()["slots"]:
        for why, n in slot["recycled"].items():
            recycled[why] = recycled.get(why, 0) + n
    print(f"pool restarts during the whole run, by reason: {recycled or 'none'}")


def _figures(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


async def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("CONVERTD_OFFICE_INSTANCES", "2")
    with tempfile.TemporaryDirectory(prefix="cdoffice") as tmp:
        root = Path(tmp)
        uno = Unoserver(root)
        try:
            docs = make_documents(root, uno)  # pptx is written by LibreOffice itself
        finally:
            uno.stop()
        async with Service(root, args.slots) as svc:
            if "latency" in args.parts:
                await latency(args, root, docs, svc)
            if "throughput" in args.parts:
                await throughput(args, root, docs["docx-1p"], svc)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3, help="throughput rounds")
    parser.add_argument("--slots", type=int, default=2, help="the worker's job concurrency")
    parser.add_argument("--parts", default="latency,throughput", help="what to measure (comma separated)")
    asyncio.run(main(parser.parse_args()))
