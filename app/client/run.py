"""`convertd convert` and `convertd formats`: exit 0 when every file converted, 1 when any
failed (each with its error and hint), 2 on a usage or connection error, the credential's
refusal included (nothing could have worked)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp

from app.client import pairs
from app.client.api import Api, ApiError, Unreachable, Updates
from app.client.progress import Display, display

OK, FAILED, USAGE = 0, 1, 2
PARALLEL_UPLOADS = 4  # files upload a few at a time; all are followed at once
FORMATS_HINT = "`convertd formats` lists what this server converts."


class UsageError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclasses.dataclass
class Outcome:
    file: str
    ok: bool = False
    job_id: str | None = None
    status: str | None = None
    filetype: str | None = None
    output: str | None = None
    size: int | None = None
    error: str | None = None
    hint: str | None = None
    error_code: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)  # what the output lacks, and why

    def failed(self, message: str, hint: str | None = None, code: str | None = None) -> Outcome:
        self.ok, self.error, self.hint, self.error_code = False, message, hint, code
        return self


def convert_command(args: argparse.Namespace) -> None:
    _exit_with(_convert(args))


def formats_command(args: argparse.Namespace) -> None:
    _exit_with(_formats(args))


def _exit_with(work: Any) -> None:
    try:
        code = asyncio.run(_guarded(work))
    except KeyboardInterrupt:
        print("interrupted: jobs already queued go on on the server", file=sys.stderr)
        code = 130
    sys.exit(code)


async def _guarded(work: Awaitable[int]) -> int:
    """Usage and connection errors as one message, hint and exit status 2."""
    try:
        return await work
    except UsageError as err:
        _complain(err.message, err.hint)
    except ApiError as err:
        _complain(err.message, err.hint)
    except Unreachable as err:
        _complain(str(err), "Check --server (or CONVERTD_SERVER) and that `convertd serve` runs there.")
    return USAGE


def _complain(message: str, hint: str | None) -> None:
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def _need_key(args: argparse.Namespace) -> str:
    if not args.key:
        raise UsageError("No API key.", "Pass --key, or set CONVERTD_API_KEY.")
    return str(args.key)


async def _formats(args: argparse.Namespace) -> int:
    async with aiohttp.ClientSession() as http:
        found = await Api(args.server, _need_key(args), http).formats()
    if args.filetype and not any(g["filetype"] == args.filetype for g in found):
        known = ", ".join(g["filetype"] for g in found)
        raise UsageError(f"No filetype '{args.filetype}' on this server.", f"One of: {known}.")
    if args.json:
        print(json.dumps([g for g in found if not args.filetype or g["filetype"] == args.filetype]))
    else:
        for line in pairs.listing(found, args.filetype):
            print(line)
    return OK


def parse_options(pairs_given: list[str], as_json: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if as_json:
        try:
            options = json.loads(as_json)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"--options is not valid JSON: {exc}", "For example --options '{\"quality\": 80}'."
            ) from None
        if not isinstance(options, dict):
            raise UsageError("--options must be a JSON object.", "For example --options '{\"quality\": 80}'.")
    for item in pairs_given:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--option '{item}' is not KEY=VALUE.", "For example --option quality=80.")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value  # plain text: --option background=white
    return options


async def _convert(args: argparse.Namespace) -> int:
    key = _need_key(args)
    files = [Path(f) for f in args.files]
    for f in files:
        if not f.is_file():
            raise UsageError(f"No such file: {f}", None)
    options = parse_options(args.option, args.options)
    target = args.to.lower().lstrip(".")
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    async with aiohttp.ClientSession() as http:
        api = Api(args.server, key, http)
        found = await api.formats()  # checks the server and the key before any upload
        if target not in pairs.all_outputs(found):
            raise UsageError(f"This server converts nothing to '{target}'.", FORMATS_HINT)
        if args.filetype and not any(g["filetype"] == args.filetype for g in found):
            raise UsageError(
                f"No filetype '{args.filetype}' on this server.",
                f"One of: {', '.join(g['filetype'] for g in found)}.",
            )
        run = Run(api, found, target, options, args.filetype, out_dir, args.force)
        with display(args.json) as shown:
            for f in files:
                shown.add(f.name)
            async with api.updates() as updates:
                outcomes = await asyncio.gather(*(run.one(f, updates, shown) for f in files))
    return OK if all(o.ok for o in outcomes) else FAILED


@dataclasses.dataclass
class Run:
    api: Api
    formats: list[dict[str, Any]]
    target: str
    options: dict[str, Any]
    filetype: str | None
    out_dir: Path | None
    force: bool
    uploads: asyncio.Semaphore = dataclasses.field(
        default_factory=lambda: asyncio.Semaphore(PARALLEL_UPLOADS)
    )
    claimed: set[Path] = dataclasses.field(default_factory=set)  # results of this run so far

    def destination(self, path: Path, name: str) -> Path:
        return (self.out_dir or path.parent) / Path(name).name

    def taken(self, dest: Path) -> bool:
        return (not self.force and dest.exists()) or dest.resolve() in self.claimed

    async def one(self, path: Path, updates: Updates, shown: Display) -> Outcome:
        outcome = await self._one(path, updates, shown)
        shown.finish(path.name, dataclasses.asdict(outcome))
        return outcome

    async def _one(self, path: Path, updates: Updates, shown: Display) -> Outcome:
        outcome = Outcome(str(path))
        source = pairs.input_format(path)
        choices = [self.filetype] if self.filetype else pairs.filetypes_for(self.formats, source, self.target)
        if not choices or self.target not in pairs.outputs_of(self.formats, choices[0], source):
            where = f" as {self.filetype}" if self.filetype else ""
            return outcome.failed(
                f"This server cannot convert {source or 'a file without an extension'} to "
                f"{self.target}{where}.",
                FORMATS_HINT,
                "UNSUPPORTED_CONVERSION",
            )
        outcome.filetype = choices[0]
        expected = self.destination(path, f"{path.stem}.{self.target}")
        if self.taken(expected):
            return outcome.failed(f"{expected} exists.", "Pass --force to replace it, or -o DIR.", "EXISTS")
        self.claimed.add(expected.resolve())
        try:
            shown.update(path.name, "uploading", 0.0)
            async with self.uploads:
                outcome.job_id = await self.api.convert(path, outcome.filetype, self.target, self.options)
            job: dict[str, Any] = {}
            async for job in updates.follow(outcome.job_id):
                shown.update(path.name, job["status"], job["progress"])
            outcome.status = job.get("status")
            if outcome.status != "FINISHED":
                return outcome.failed(
                    job.get("error") or "The conversion failed.", job.get("errorHint"), "CONVERSION_FAILED"
                )
            dest = self.destination(path, job["outputName"] or expected.name)
            if dest != expected and self.taken(dest):
                return outcome.failed(f"{dest} exists.", "Pass --force to replace it, or -o DIR.", "EXISTS")
            self.claimed.add(dest.resolve())
            shown.update(path.name, "downloading", 1.0)
            try:
                outcome.size = await self.api.download(job["downloadUrl"], dest, force=self.force)
            except FileExistsError:
                return outcome.failed(f"{dest} exists.", "Pass --force to replace it, or -o DIR.", "EXISTS")
            except OSError as exc:  # the converted file is on the server; only writing it failed
                return outcome.failed(
                    f"Cannot write {dest}: {exc.strerror or exc}",
                    "Choose a folder you can write to with -o DIR.",
                    "WRITE_FAILED",
                )
            outcome.ok, outcome.output = True, str(dest)
            outcome.notes = job.get("outputNotes") or []
            return outcome
        except ApiError as err:
            return outcome.failed(err.message, err.hint, err.code)
