"""The public API as the command-line client uses it: REST upload+convert, GraphQL queries,
the jobUpdates subscription (graphql-transport-ws, through gql), signed downloads."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from gql import Client, gql
from gql.transport.aiohttp_websockets import AIOHTTPWebsocketsTransport
from gql.transport.exceptions import TransportError, TransportQueryError

FORMATS = """query Formats {
  formats {
    filetype
    inputFormats
    outputFormats
    conversions { inputFormat outputFormats options { outputFormat schema } }
  }
}"""

JOB_UPDATES = """subscription JobUpdates($jobId: ID!) {
  jobUpdates(jobId: $jobId) {
    id status progress error errorHint outputName outputSize outputNotes downloadUrl
  }
}"""

# refusals of the credential itself: nothing will work, whichever file
CREDENTIAL_CODES = frozenset({"UNAUTHENTICATED", "FORBIDDEN", "HTTPS_REQUIRED"})
TERMINAL = frozenset({"FINISHED", "FAILED"})


class ApiError(Exception):
    """The server refused a request: its message, hint and error code."""

    def __init__(self, message: str, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint, self.code = message, hint, code

    @property
    def credential(self) -> bool:
        return self.code in CREDENTIAL_CODES


class Unreachable(Exception):
    """No answer from the server (refused connection, broken socket, not Convertd)."""


def _from_graphql(errors: list[Mapping[str, Any]]) -> ApiError:
    first = errors[0] if errors else {}
    ext = first.get("extensions") or {}
    return ApiError(str(first.get("message", "The request failed.")), ext.get("hint"), ext.get("code"))


class Api:
    """One server and one credential (an API key or a JWT; sent as a Bearer token)."""

    def __init__(self, server: str, credential: str | None, http: aiohttp.ClientSession) -> None:
        self.server = server.rstrip("/")
        self.credential = credential
        self.http = http

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"} if self.credential else {}

    async def graphql(self, document: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            async with self.http.post(
                f"{self.server}/graphql",
                json={"query": document, "variables": variables or {}},
                headers=self.headers,
            ) as resp:
                body = await _json(resp)
        except aiohttp.ClientError as exc:
            raise Unreachable(f"cannot reach {self.server}: {exc}") from exc
        if body.get("errors"):
            raise _from_graphql(body["errors"])
        if not isinstance(body.get("data"), dict):
            raise Unreachable(f"{self.server}/graphql did not answer as Convertd does")
        data: dict[str, Any] = body["data"]
        return data

    async def formats(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await self.graphql(FORMATS))["formats"]
        return found

    async def convert(self, path: Path, filetype: str, output_format: str, options: Mapping[str, Any]) -> str:
        """Upload the file and queue its conversion in one request (POST /v1/convert); the job id."""
        try:
            with path.open("rb") as f:
                form = aiohttp.FormData()
                form.add_field("filetype", filetype)
                form.add_field("output_format", output_format)
                if options:
                    form.add_field("options", json.dumps(dict(options)))
                form.add_field("file", f, filename=path.name, content_type="application/octet-stream")
                async with self.http.post(
                    f"{self.server}/v1/convert", data=form, headers=self.headers
                ) as resp:
                    body = await _json(resp)
        except aiohttp.ClientError as exc:
            raise Unreachable(f"cannot reach {self.server}: {exc}") from exc
        if "job_id" not in body:
            raise ApiError(
                str(body.get("message", f"HTTP {resp.status}")), body.get("hint"), body.get("error_code")
            )
        return str(body["job_id"])

    @contextlib.asynccontextmanager
    async def updates(self) -> AsyncIterator[Updates]:
        """One websocket (graphql-transport-ws) that every job of a run is followed on."""
        url = self.server.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/graphql"
        transport = AIOHTTPWebsocketsTransport(
            url=url,
            subprotocols=[AIOHTTPWebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
            init_payload=self.headers,
            heartbeat=30,
        )
        client = Client(transport=transport)
        try:
            session = await client.connect_async()  # type: ignore[no-untyped-call]  # gql: unannotated
        except (TransportError, aiohttp.ClientError, OSError) as exc:
            raise Unreachable(f"the job updates connection to {url} failed: {exc}") from exc
        try:
            yield Updates(session)
        finally:
            with contextlib.suppress(TransportError, aiohttp.ClientError, OSError):
                await client.close_async()  # type: ignore[no-untyped-call]  # gql: unannotated

    async def download(self, url: str, dest: Path, *, force: bool) -> int:
        """The result into `dest`; without `force` an existing file is never replaced
        (created exclusively, so a file appearing meanwhile is not clobbered either)."""
        part = dest.with_name(f".{dest.name}.part")
        try:
            async with self.http.get(url) as resp:
                if resp.status != 200:
                    body = await _json(resp)
                    raise ApiError(
                        str(body.get("message", f"HTTP {resp.status}")),
                        body.get("hint"),
                        body.get("error_code"),
                    )
                size = 0
                with part.open("wb") as out:
                    async for chunk in resp.content.iter_chunked(256 * 1024):
                        out.write(chunk)
                        size += len(chunk)
        except aiohttp.ClientError as exc:
            part.unlink(missing_ok=True)
            raise Unreachable(f"the download from {self.server} failed: {exc}") from exc
        try:
            if force:
                os.replace(part, dest)
            else:
                os.link(part, dest)  # fails if dest exists: the no-clobber rename
        finally:
            part.unlink(missing_ok=True)
        return size


class Updates:
    def __init__(self, session: Any) -> None:
        self.session = session

    async def follow(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        """Each version of the job until it ends (the first is how it stands now)."""
        document = gql(JOB_UPDATES)
        try:
            async for result in self.session.subscribe(document, variable_values={"jobId": job_id}):
                job = result["jobUpdates"]
                yield job
                if job["status"] in TERMINAL:
                    return
        except TransportQueryError as exc:
            errors = exc.errors or [{"message": str(exc)}]
            raise _from_graphql(errors) from exc
        except (TransportError, aiohttp.ClientError, OSError) as exc:
            raise Unreachable(f"the job updates connection broke: {exc}") from exc


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await resp.json(content_type=None)
    except (json.JSONDecodeError, UnicodeDecodeError, aiohttp.ContentTypeError) as exc:
        raise Unreachable(f"{resp.url} answered HTTP {resp.status} with something other than JSON") from exc
    if not isinstance(body, dict):
        raise Unreachable(f"{resp.url} answered HTTP {resp.status} with unexpected JSON")
    return body
