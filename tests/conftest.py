"""Real PostgreSQL and Redis (the embedded servers' pip packages), a running app, real clients."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from app import db, embedded
from app.api.server import build_app
from app.config import QueueSettings, Settings
from app.runtime import Runtime
from app.services.keys import KeySpec, create_account_with_key
from app.services.plans import set_plan
from app.worker import build_worker
from tests.helpers import Receiver, start_local, wait_until_sync

# pytest keeps each test module's assertion-rewritten bytecode in __pycache__; where
# PYTHONDONTWRITEBYTECODE=1 is set (as on our CI machines) every run rewrote all of them
# again, ~5 s of every test process's start
sys.dont_write_bytecode = False

# pgserver keeps a lock file in the runtime dir, which platformdirs wants private
_RUNTIME_DIR = Path(tempfile.gettempdir()) / f"convertd-tests-{os.getuid()}"
_RUNTIME_DIR.mkdir(mode=0o700, exist_ok=True)
os.environ.setdefault("XDG_RUNTIME_DIR", str(_RUNTIME_DIR))

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ROOT / "graphql"


def operation(name: str) -> str:
    """A GraphQL document from graphql/, the same ones clients and docs use."""
    return (OPERATIONS / f"{name}.graphql").read_text()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # short path: PostgreSQL's socket path has a length limit
    return tmp_path_factory.mktemp("cd")


@pytest.fixture(scope="session")
def servers(data_dir: Path) -> Any:
    started = embedded.start(data_dir)
    yield started
    started.stop()


@pytest.fixture(scope="session")
def settings(servers: Any, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        public_url=None,
        secret="test-secret",
        max_upload_bytes=5 * 1024 * 1024,
        download_url_ttl=600,
        trusted_proxies=(),
        require_https=False,
        queue=QueueSettings(job_timeout=120, heartbeat=3, retries=3, sweep_interval=2),
        allow_private_urls=True,  # webhooks are delivered to receivers on this machine
    )


@pytest.fixture(scope="session")
async def rt(settings: Settings) -> AsyncIterator[Runtime]:
    await db.migrate(settings.database_url)  # type: ignore[arg-type]
    runtime = await Runtime.open(settings)
    yield runtime
    await runtime.close()


@pytest.fixture(scope="session")
async def worker(rt: Runtime) -> AsyncIterator[None]:
    w = build_worker(rt)
    task = asyncio.create_task(w.start())
    yield
    await w.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture(scope="session")
async def base_url(rt: Runtime, worker: None) -> AsyncIterator[str]:
    """The whole service on a real port, with in-process workers."""
    runner, url = await start_local(build_app(rt))
    yield url
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclasses.dataclass
class Account:
    key: str
    key_id: int
    kid: str
    name: str
    account_id: int = 0
    signing_secret: str = ""
    webhook_secret: str = ""


@pytest.fixture
async def make_account(rt: Runtime) -> Callable[..., Any]:
    """A new account with one key; keyword arguments go to the key's KeySpec (restrictions)."""

    async def make(name: str = "tester", plan: str = "pro", **spec: Any) -> Account:
        created = await create_account_with_key(
            rt.pool, name, plan=plan, spec=KeySpec(name=name, **spec), server_secret=rt.settings.secret
        )
        key = created.key
        signing, hooks = created.signing_secret or "", created.webhook_secret or ""
        return Account(created.secret, key.id, str(key.kid), name, key.account_id, signing, hooks)

    return make


@pytest.fixture
async def make_plan(rt: Runtime) -> Callable[..., Any]:
    """A plan of its own for one test: limits are per account, plans are shared."""

    async def make(**limits: Any) -> str:
        name = f"t-{uuid.uuid4().hex[:12]}"
        await set_plan(rt.pool, name, **limits)
        return name

    return make


@pytest.fixture
async def make_server(rt: Runtime) -> AsyncIterator[Callable[..., Any]]:
    """Another app on its own port over the same servers, with some settings changed."""
    runners: list[web.AppRunner] = []

    async def start(host: str = "127.0.0.1", **changes: Any) -> str:
        settings = dataclasses.replace(rt.settings, **changes)
        runner, url = await start_local(build_app(dataclasses.replace(rt, settings=settings)), host)
        runners.append(runner)
        return url

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def account(make_account: Callable[..., Any]) -> Account:
    return await make_account()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook endpoint on a local port (POST /hook) recording what it is sent."""
    got = Receiver("", [])

    async def hook(request: web.Request) -> web.Response:
        got.calls.append((dict(request.headers), await request.read()))
        if len(got.calls) <= got.fail_first:
            return web.Response(status=503)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner, base = await start_local(app)
    got.url = f"{base}/hook"
    yield got
    await runner.cleanup()


def png_bytes(size: tuple[int, int] = (64, 48), color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


class GraphQL:
    """A plain HTTP GraphQL client on aiohttp (Strawberry's test client drops headers)."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http, self.url = http, f"{base_url}/graphql"

    async def __call__(
        self,
        document: str,
        variables: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        all_headers = {**({"X-API-Key": key} if key else {}), **(headers or {})}
        async with self.http.post(
            self.url, json={"query": document, "variables": variables or {}}, headers=all_headers
        ) as resp:
            return await resp.json()

    async def multipart(
        self,
        document: str,
        variables: dict[str, Any],
        files: dict[str, tuple[str, bytes]],
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """GraphQL multipart request spec: files maps "variables.path" -> (name, bytes)."""
        form = aiohttp.FormData()
        form.add_field("operations", json.dumps({"query": document, "variables": variables}))
        form.add_field("map", json.dumps({str(i): [path] for i, path in enumerate(files)}))
        for i, (name, data) in enumerate(files.values()):
            form.add_field(str(i), data, filename=name, content_type="application/octet-stream")
        all_headers = {**({"X-API-Key": key} if key else {}), **(headers or {})}
        async with self.http.post(self.url, data=form, headers=all_headers) as resp:
            return resp.status, await resp.json(content_type=None)


@pytest.fixture
def gql(http: aiohttp.ClientSession, base_url: str) -> GraphQL:
    return GraphQL(http, base_url)


async def wait_for_status(
    http: aiohttp.ClientSession, base_url: str, key: str, job_id: str, timeout: float = 60
) -> dict[str, Any]:
    """Poll REST status until the job ends (what the seed's own example does)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with http.get(f"{base_url}/v1/status/{job_id}", headers={"X-API-Key": key}) as r:
            body = await r.json()
        if body["status"] in ("finished", "failed"):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} still {body['status']} after {timeout}s")
        await asyncio.sleep(0.1)


@dataclasses.dataclass
class S3Server:
    """moto's standalone S3 server in its own process: a real S3 protocol endpoint."""

    endpoint: str
    bucket: str
    proc: subprocess.Popen[bytes]

    def client(self) -> Any:
        import boto3  # moto's dependency: the tests read the bucket with the plain AWS SDK

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    # the AWS SDKs read these; moto accepts any (the services started by tests inherit them)
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        os.environ.setdefault(name, value)
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    log.close()
    server = S3Server(f"http://127.0.0.1:{port}", "convertd-test", proc)

    def bucket_made() -> bool:
        assert proc.poll() is None, "moto's server exited"
        try:
            server.client().create_bucket(Bucket=server.bucket)
        except Exception:  # not listening yet
            return False
        return True

    try:
        wait_until_sync(bucket_made, 60, "moto's server answering")
        yield server
    finally:
        proc.terminate()
        proc.wait(30)
