"""The admin API (``/admin/v1/...``): catalogue, profile imports and segments while the server runs.

Only admin tokens (``segport token create --admin``) may call it; a project token gets 403. The CLI uses it
when it finds a running server for its data dir (``server.json``), since DuckDB lets one process write.
Uploads (users files, id lists) are streamed to a temp file in the data dir, never held in memory; their
size limit is ``max_upload_bytes``, not ``max_body_bytes``.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from segport.domain.formats import detect_format
from segport.errors import Forbidden, InvalidBody, PayloadTooLarge, SegportError
from segport.http.admin_schemas import (
    CatalogEntryBody,
    CatalogEntryOut,
    CatalogImportOut,
    CatalogPatch,
    ImportOut,
    SegmentBody,
    SegmentOut,
    catalog_out,
    segment_out,
)
from segport.http.auth import principal
from segport.http.errors import parse_body
from segport.http.schemas import ERRORS
from segport.services.data import SegmentSpec, catalog_entry
from segport.store.meta import Principal

PREFIX = "/admin/v1"
UPLOAD_PATHS = (PREFIX + "/projects/", ("/users/import", "/segments/from_file", "/events/import"))
router = APIRouter(prefix=PREFIX, responses=ERRORS, tags=["admin"])


async def admin(request: Request) -> Principal:
    """FastAPI dependency: an authenticated admin token (401 without a token, 403 with a project token)."""
    who = await principal(request)
    if not who.admin:
        raise Forbidden("the admin API needs an admin token (segport token create --admin)")
    return who


Admin = Annotated[Principal, Depends(admin)]


def is_upload(path: str) -> bool:
    """Whether a request path is an admin upload (bounded by ``max_upload_bytes`` instead of the body limit)."""
    return path.startswith(UPLOAD_PATHS[0]) and path.endswith(UPLOAD_PATHS[1])


def sweep_uploads(data_dir: Path) -> None:
    """Delete uploads left by a server that died mid-request (called when `segport serve` starts)."""
    for p in (data_dir / "uploads").glob("upload-*"):
        p.unlink(missing_ok=True)


def _json_doc(model: Any, *, required: bool = True) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route that reads its JSON body itself (:func:`_json_body`)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


def _app(request: Request) -> Any:
    return request.app.state.segport


async def _json_body(request: Request, model: Any) -> Any:
    return parse_body(model, await request.body() or b"{}")


async def _spool(request: Request, suffix: str) -> Path:
    """Stream the request body into a temp file in the data dir's ``uploads`` folder."""
    app = _app(request)
    folder = app.settings.data_dir / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    limit = app.settings.max_upload_bytes
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=folder)
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"upload is larger than max_upload_bytes ({limit} bytes)")
                f.write(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


@contextmanager
def api_words(spool: Path | None, filename: str) -> Iterator[None]:
    """Errors raised inside speak of the user's file, not the server's spool file, and of this API's query
    parameters (``?match=``), not the CLI's flags (the CLI turns them back: segport.remote)."""
    try:
        yield
    except SegportError as exc:
        message = exc.message
        if spool is not None:
            shown = filename or "the uploaded file"
            message = message.replace(str(spool), shown).replace(spool.name, shown)
        exc.message = _FLAG.sub(lambda m: f"?{m.group(1)}=", message)
        exc.args = (exc.message,)
        raise


@asynccontextmanager
async def uploaded(request: Request, filename: str, format: str | None) -> AsyncIterator[tuple[Path, str]]:
    """An import's raw body spooled to a file of its format (``format``, else ``filename``'s extension), and
    that format; what goes wrong while it is read names the upload, and the file is gone afterwards."""
    with api_words(None, filename):
        format = detect_format(Path(filename), format)
    path = await _spool(request, "." + format + (".gz" if filename.lower().endswith(".gz") else ""))
    try:
        with api_words(path, filename):
            yield path, format
    finally:
        path.unlink(missing_ok=True)


# an import's query parameters and its raw body, as the OpenAPI document names them
UploadFormat = Annotated[
    str | None,
    Query(
        description="csv, parquet or jsonl (default: by `filename`'s extension)",
        pattern="^(csv|parquet|jsonl|json|ndjson)$",
    ),
]
UploadName = Annotated[str, Query(max_length=200, description="Original file name (for messages).")]
RAW_BODY: dict[str, Any] = {
    "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
}


# an identity key, as the catalogue spells it (``$basic_userId``) or as its column (``id_…``/``ids_…``)
IDENTITY_PARAM = r"^\s*(ids?_)?[A-Za-z_$][A-Za-z0-9_$]*\s*$"
_FLAG = re.compile(r"--(match|format|identity|key|name|description|scheduler)\b ?")


def _not_the_import(key: str) -> None:
    """``…/catalog/import`` is the import's address, not a key's (no key is spelled ``import``): another
    method there is a 405, its ``Allow`` naming the import's method."""
    if key == "import":
        raise HTTPException(405)


# --- catalogue --------------------------------------------------------------------------------------
@router.get("/projects/{project_id}/catalog", response_model=list[CatalogEntryOut], summary="List the catalogue")
def list_catalog(project_id: str, request: Request, _who: Admin) -> list[CatalogEntryOut]:
    app = _app(request)
    app.meta.project(project_id)
    return [catalog_out(e) for e in app.meta.catalog(project_id).entries.values()]


@router.post(
    "/projects/{project_id}/catalog",
    response_model=CatalogEntryOut,
    status_code=201,
    summary="Add (or update the name/description of) one key",
    openapi_extra=_json_doc(CatalogEntryBody),
)
async def add_catalog_key(project_id: str, request: Request, _who: Admin) -> CatalogEntryOut:
    _app(request).meta.project(project_id)
    body: CatalogEntryBody = await _json_body(request, CatalogEntryBody)
    entry = catalog_entry(body.key, body.name or "", body.type, body.description)
    await run_in_threadpool(_app(request).data.add_catalog_entries, project_id, [entry])
    return catalog_out(entry)


@router.post(
    "/projects/{project_id}/catalog/import",
    response_model=CatalogImportOut,
    summary="Import catalogue CSV (key,name,type[,description]); all or nothing",
    openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def import_catalog(project_id: str, request: Request, _who: Admin) -> CatalogImportOut:
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidBody("catalogue CSV must be UTF-8") from None
    added, updated = await run_in_threadpool(_app(request).data.import_catalog_csv, project_id, text)
    return CatalogImportOut(added=added, updated=updated)


@router.patch(
    "/projects/{project_id}/catalog/{key}",
    response_model=CatalogEntryOut,
    summary="Rename a key (display name) or describe it",
    openapi_extra=_json_doc(CatalogPatch, required=False),
)
async def patch_catalog_key(project_id: str, key: str, request: Request, _who: Admin) -> CatalogEntryOut:
    _not_the_import(key)
    _app(request).meta.project(project_id)
    body: CatalogPatch = await _json_body(request, CatalogPatch)
    entry = await run_in_threadpool(
        lambda: _app(request).data.update_catalog_entry(project_id, key, name=body.name, description=body.description)
    )
    return catalog_out(entry)


@router.delete(
    "/projects/{project_id}/catalog/{key}", status_code=204, summary="Remove a key (refused while a segment uses it)"
)
async def delete_catalog_key(project_id: str, key: str, request: Request, _who: Admin) -> None:
    _not_the_import(key)
    _app(request).meta.project(project_id)
    await run_in_threadpool(_app(request).data.remove_catalog_key, project_id, key)


# --- users --------------------------------------------------------------------------------------------
@router.post(
    "/projects/{project_id}/users/import",
    response_model=ImportOut,
    summary="Import user profiles (the raw file as the body); all or nothing",
    openapi_extra=RAW_BODY,
)
async def import_users(
    project_id: str,
    request: Request,
    _who: Admin,
    format: UploadFormat = None,
    match: Annotated[str, Query(max_length=110, description="Identity users are matched on.")] = "id_$basic_userId",
    filename: UploadName = "",
) -> ImportOut:
    app = _app(request)
    app.meta.project(project_id)
    async with uploaded(request, filename, format) as (path, format):
        report = await run_in_threadpool(app.data.import_users, project_id, path, file_format=format, match=match)
    return ImportOut(
        rowsRead=report.rows_read,
        inserted=report.inserted,
        updated=report.updated,
        elapsedSeconds=round(report.elapsed_s, 3),
        segments=report.segments,
        file=filename or None,
    )


# --- segments -----------------------------------------------------------------------------------------
@router.get("/projects/{project_id}/segments", response_model=list[SegmentOut], summary="List segments")
def list_segments(project_id: str, request: Request, _who: Admin) -> list[SegmentOut]:
    app = _app(request)
    app.meta.project(project_id)
    rows, _ = app.meta.segments(project_id)
    return [segment_out(r) for r in rows]


@router.get("/projects/{project_id}/segments/{key}", response_model=SegmentOut, summary="Show a segment")
def show_segment(project_id: str, key: str, request: Request, _who: Admin) -> SegmentOut:
    return segment_out(_app(request).meta.segment(project_id, key))


@router.post(
    "/projects/{project_id}/segments",
    response_model=SegmentOut,
    status_code=201,
    summary="Create a DIRECT segment from a rule tree (computed at once)",
    openapi_extra=_json_doc(SegmentBody),
)
async def create_segment(project_id: str, request: Request, who: Admin) -> SegmentOut:
    _app(request).meta.project(project_id)
    body: SegmentBody = await _json_body(request, SegmentBody)
    spec = SegmentSpec(
        key=body.key,
        name=body.name,
        description=body.description,
        rule=body.rule,
        scheduler=body.scheduler,
        creator=f"admin token {who.token_id}",
    )
    row = await run_in_threadpool(_app(request).data.create_segment, project_id, spec)
    return segment_out(row)


@router.post(
    "/projects/{project_id}/segments/from_file",
    response_model=SegmentOut,
    status_code=201,
    summary="Create a FROM_FILES segment (the id list, one per line, as the body)",
    openapi_extra={"requestBody": {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def create_segment_from_file(
    project_id: str,
    request: Request,
    who: Admin,
    key: Annotated[str, Query(max_length=100)],
    name: Annotated[str, Query(max_length=200)],
    identity: Annotated[str, Query(max_length=110, pattern=IDENTITY_PARAM)] = "$basic_userId",
    description: Annotated[str, Query(max_length=2000)] = "",
    scheduler: Annotated[str | None, Query(pattern="^(DAILY|ONCE|daily|once)$")] = None,
) -> SegmentOut:
    app = _app(request)
    app.meta.project(project_id)
    path = await _spool(request, ".txt")
    spec = SegmentSpec(
        key=key,
        name=name,
        description=description,
        members=path,
        identity=identity,
        scheduler=scheduler,
        creator=f"admin token {who.token_id}",
    )
    try:
        with api_words(path, "the uploaded id list"):
            row = await run_in_threadpool(app.data.create_segment, project_id, spec)
    finally:
        path.unlink(missing_ok=True)
    return segment_out(row)


@router.post(
    "/projects/{project_id}/segments/{key}/recompute",
    response_model=SegmentOut,
    summary="Recompute a segment's membership now",
)
async def recompute_segment(project_id: str, key: str, request: Request, _who: Admin) -> SegmentOut:
    app = _app(request)
    await run_in_threadpool(app.data.recompute_segment, project_id, key)
    return segment_out(app.meta.segment(project_id, key))


@router.delete("/projects/{project_id}/segments/{key}", status_code=204, summary="Delete a segment")
async def delete_segment(project_id: str, key: str, request: Request, _who: Admin) -> None:
    await run_in_threadpool(_app(request).data.delete_segment, project_id, key)
