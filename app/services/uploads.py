"""Uploaded files: claimed from the request into the account's storage, found again by path."""

from __future__ import annotations

import contextlib
import secrets
from typing import TYPE_CHECKING

from app.errors import ConvertdError, ErrorCode
from app.models import Upload
from app.services import storage_use

if TYPE_CHECKING:
    from app.auth.principal import Principal
    from app.runtime import Runtime
    from app.storage import IncomingFile


def check_size(rt: Runtime, principal: Principal, files: list[IncomingFile]) -> None:
    limit = principal.plan.max_file_size
    for f in files:
        if limit is not None and f.size > limit:
            raise ConvertdError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"'{f.filename}' is {f.size:,} bytes; the {principal.plan.name} plan allows "
                f"{limit:,} bytes per file.",
                hint="Send a smaller file or move to a plan with a larger file limit.",
            )


async def store(
    rt: Runtime, principal: Principal, files: list[IncomingFile], *, quota_checked: bool = False
) -> list[Upload]:
    if not files:
        raise ConvertdError(
            ErrorCode.BAD_REQUEST,
            "No file was sent.",
            hint='Send the file as a multipart field named "file" (repeat it for several files).',
            field="file",
        )
    check_size(rt, principal, files)
    if not quota_checked:  # a conversion checks it before charging (jobs.convert)
        await storage_use.check_quota(rt, principal, sum(f.size for f in files))
    # every file goes into the store first, then the rows in one statement: a store or
    # database failure half-way leaves neither rows without files nor files without rows
    tokens = [secrets.token_hex(6) for _ in files]
    keys: list[str] = []
    try:
        for f, token in zip(files, tokens, strict=True):
            keys.append(await rt.storage.claim_upload(f, principal.account_id, token))
        # one statement, so one round trip and all rows or none
        inserted = await rt.pool.fetch(
            _INSERT_UPLOADS,
            principal.account_id,
            tokens,
            [f.filename for f in files],
            [f.size for f in files],
            [f.content_type for f in files],
            keys,
        )
        by_token = {row["token"]: row for row in inserted}
        rows = [by_token[token] for token in tokens]
    except BaseException:
        with contextlib.suppress(Exception):  # the store may be the thing that is down
            await rt.storage.files.delete(keys)
        raise
    return [Upload.from_row(row) for row in rows]


_INSERT_UPLOADS = (
    "INSERT INTO uploads (account_id, token, file_name, file_size, content_type, storage_path)"
    " SELECT $1::bigint, * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])"
    " RETURNING *"
)


async def find(rt: Runtime, principal: Principal, file_path: str) -> Upload:
    token, _, name = file_path.strip().partition("/")
    row = await rt.pool.fetchrow(
        "SELECT * FROM uploads WHERE token = $1 AND file_name = $2 AND account_id = $3",
        token,
        name,
        principal.account_id,
    )
    if row is None:
        raise ConvertdError(
            ErrorCode.NOT_FOUND,
            f"No uploaded file at '{file_path}'.",
            hint="Pass a file_path exactly as POST /v1/upload (or the upload mutation) returned it.",
            field="file_path",
        )
    return Upload.from_row(row)


async def find_by_token(rt: Runtime, principal: Principal, token: str) -> Upload:
    """An upload by its token alone (ConvertAPI's FileId); another account's is as absent."""
    row = await rt.pool.fetchrow(
        "SELECT * FROM uploads WHERE token = $1 AND account_id = $2", token.strip(), principal.account_id
    )
    if row is None:
        raise ConvertdError(
            ErrorCode.NOT_FOUND,
            f"No uploaded file with id '{token}'.",
            hint="Pass a FileId exactly as the upload returned it; uploads are per account.",
            field="File",
        )
    return Upload.from_row(row)
