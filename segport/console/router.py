"""The console's pages under ``/console``: sign in and out, segments, a segment's export form, jobs, downloads.

Handlers are thin: find the session, check the CSRF token of a form, call :class:`ConsoleService` in the thread
pool (the services read the databases synchronously), render a template. A :class:`SegportError` from a
service is shown on the page with its code and message, with the status the API would answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from segport.console import web
from segport.console.rule_text import rule_lines, tag_lines
from segport.console.service import PREVIEW_ROWS, ConsoleService
from segport.console.sessions import Session, SessionStore
from segport.console.web import PREFIX, Page, first, redirect
from segport.domain.jobs import Stage
from segport.domain.tags import IMPORTED_TYPE
from segport.errors import InvalidBody, SegportError, Unauthorized
from segport.http.files import ResultFileResponse
from segport.http.job_result import job_result
from segport.services.exports import ExportRequest
from segport.services.queries import MAX_PAGE_PROPERTIES
from segport.store.queue import job_files

T = TypeVar("T")
router = APIRouter(prefix=PREFIX, include_in_schema=False)
FINAL = (Stage.FINISH, Stage.ERROR, Stage.EXPIRED)


def _sessions(request: Request) -> SessionStore:
    return request.app.state.console_sessions  # type: ignore[no-any-return]


def _service(request: Request) -> ConsoleService:
    return ConsoleService(request.app.state.segport)


async def _run(fn: Callable[..., T], *args: Any) -> T:
    return await run_in_threadpool(fn, *args)


async def _session(request: Request) -> Session | None:
    return await _run(_sessions(request).get, request.cookies.get(web.SESSION_COOKIE))


def _to_signin(request: Request) -> Response:
    target = request.url.path if request.method == "GET" else ""
    return redirect(f"{PREFIX}/signin" + (f"?next={quote(target, safe='/')}" if target else ""))


async def _project_page(
    request: Request,
    project_id: str,
    load: Callable[[ConsoleService, Any], T],
    render: Callable[[Page, Any, T], Response],
) -> Response:
    """A page of one project: signed in (else to the sign-in page), the project and what ``load(service, who)``
    reads of it (off the event loop), then ``render(page, project, loaded)``; a refusal of either is the error
    page."""
    session = await _session(request)
    if session is None:
        return _to_signin(request)
    page = Page(request, session)
    service = _service(request)
    try:
        project = await _run(service.project, session.who, project_id)
        loaded = await _run(load, service, session.who)
    except SegportError as exc:
        return page.error(exc)
    return render(page, project, loaded)


# --- signing in and out ----------------------------------------------------------------------------------
@router.get("")
@router.get("/")
async def home(request: Request) -> Response:
    session = await _session(request)
    return redirect(f"{PREFIX}/projects" if session else f"{PREFIX}/signin")


@router.get("/signin")
async def signin_form(request: Request, next: Annotated[str, Query(max_length=300)] = "") -> Response:
    page = Page(request)
    csrf = web.new_csrf()
    response = page.render("signin.html", signin_csrf=csrf, next=web.safe_next(next))
    # sign-in has no session yet: its form is bound to this browser by a short-lived cookie instead
    response.set_cookie(web.SIGNIN_CSRF_COOKIE, csrf, max_age=3600, path=PREFIX, httponly=True, samesite="strict")
    return response


@router.post("/signin")
async def signin(request: Request) -> Response:
    page = Page(request)
    fields: dict[str, list[str]] = {}
    try:
        fields = await web.form(request)
        web.check_csrf(request.cookies.get(web.SIGNIN_CSRF_COOKIE, ""), fields)
        session_id, session = await _run(_sessions(request).sign_in, first(fields, "token").strip())
    except SegportError as exc:
        csrf = web.new_csrf()
        status = exc.status
        response = page.render(
            "signin.html", status, signin_csrf=csrf, next=web.safe_next(first(fields, "next")), error=exc
        )
        response.set_cookie(web.SIGNIN_CSRF_COOKIE, csrf, max_age=3600, path=PREFIX, httponly=True, samesite="strict")
        return response
    previous = request.cookies.get(web.SESSION_COOKIE)
    if previous:  # signing in again (another token): the old session ends rather than lingering until expiry
        await _run(_sessions(request).sign_out, previous)
    response = redirect(web.safe_next(first(fields, "next")) or f"{PREFIX}/projects")
    web.set_session_cookie(request, response, session_id, _sessions(request).ttl_s)
    response.delete_cookie(web.SIGNIN_CSRF_COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    session = await _session(request)
    try:
        fields = await web.form(request)
    except SegportError as exc:
        return Page(request, session).error(exc)
    if session is not None:
        try:
            web.check_csrf(session.csrf, fields)
        except SegportError as exc:
            return Page(request, session).error(exc)
        await _run(_sessions(request).sign_out, request.cookies.get(web.SESSION_COOKIE, ""))
    response = redirect(f"{PREFIX}/signin")
    response.delete_cookie(web.SESSION_COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


# --- projects and segments -------------------------------------------------------------------------------
@router.get("/projects")
async def projects(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _to_signin(request)
    visible = await _run(_service(request).projects, session.who)
    if len(visible) == 1:
        return redirect(f"{PREFIX}/p/{visible[0].id}/segments")
    return Page(request, session).render("projects.html", projects=visible)


@router.get("/p/{project_id}/segments")
async def segments(request: Request, project_id: str, q: Annotated[str, Query(max_length=200)] = "") -> Response:
    return await _project_page(
        request,
        project_id,
        lambda service, who: service.segments(who, project_id, q),
        lambda page, project, rows: page.render(
            "segments.html", project=project, segments=rows, q=q, time=web.local_time
        ),
    )


@router.get("/p/{project_id}/events")
async def events(request: Request, project_id: str) -> Response:
    def render(page: Page, project: Any, loaded: Any) -> Response:
        names, attributes, collect_key, sources = loaded
        return page.render(
            "events.html",
            project=project,
            names=names,
            attributes=attributes,
            collect_key=collect_key,
            sources=sources,
            time=web.local_time,
        )

    return await _project_page(request, project_id, lambda service, who: service.events(who, project_id), render)


@router.get("/p/{project_id}/tags")
async def tags(request: Request, project_id: str) -> Response:
    return await _project_page(
        request,
        project_id,
        lambda service, who: service.tags(who, project_id),
        lambda page, project, views: page.render(
            "tags.html", project=project, tags=views, time=web.local_time, imported=IMPORTED_TYPE
        ),
    )


@router.get("/p/{project_id}/tags/{key}")
async def tag(request: Request, project_id: str, key: str) -> Response:
    """A tag: a computed one's definition in words (as a segment's rule) with its JSON, type, value type and
    detector; an imported one says so."""

    def render(page: Page, project: Any, view: Any) -> Response:
        definition = json.loads(view.definition.definition) if view.definition is not None else None
        return page.render(
            "tag.html",
            project=project,
            tag=view,
            imported=IMPORTED_TYPE,
            definition_lines=tag_lines(definition, page.lang) if definition is not None else [],
            definition_json=json.dumps(definition, ensure_ascii=False, indent=2) if definition is not None else "",
            time=web.local_time,
        )

    return await _project_page(request, project_id, lambda service, who: service.tag(who, project_id, key), render)


@router.get("/p/{project_id}/segments/{key}")
async def segment(request: Request, project_id: str, key: str) -> Response:
    session = await _session(request)
    if session is None:
        return _to_signin(request)
    return await _segment_page(request, session, project_id, key, None, {})


@router.post("/p/{project_id}/segments/{key}")
async def segment_action(request: Request, project_id: str, key: str) -> Response:
    """One form, two buttons: ``action=preview`` shows the chosen columns, ``action=export`` submits the job."""
    session = await _session(request)
    if session is None:
        return _to_signin(request)
    page = Page(request, session)
    try:
        fields = await web.form(request)
        web.check_csrf(session.csrf, fields)
    except SegportError as exc:
        return page.error(exc)
    chosen = fields.get("p", [])
    if first(fields, "action") == "export":
        req = ExportRequest(
            properties=chosen,
            file_format=first(fields, "fileFormat", "csv"),
            header=first(fields, "csvHeaderType", "key"),
            bom=first(fields, "bom") == "1",
            compression="gzip" if first(fields, "gzip") == "1" else "none",
        )
        try:
            job = await _run(_service(request).export, session.who, project_id, key, req)
        except SegportError as exc:
            return await _segment_page(request, session, project_id, key, exc, fields)
        return redirect(f"{PREFIX}/p/{project_id}/jobs/{job.id}")
    return await _segment_page(request, session, project_id, key, None, fields)


async def _segment_page(
    request: Request,
    session: Session,
    project_id: str,
    key: str,
    error: SegportError | None,
    fields: dict[str, list[str]],
) -> Response:
    page = Page(request, session)
    service = _service(request)
    try:
        project = await _run(service.project, session.who, project_id)
        row = await _run(service.segment, session.who, project_id, key)
        groups = await _run(service.catalog, session.who, project_id)
    except SegportError as exc:
        return page.error(exc)
    chosen = fields.get("p") if fields else [e.key for e in groups.identities]
    preview_error = None
    preview = None
    try:
        # the preview shows what the export would hold, but a page is limited to 20 columns
        valid = [k for k in chosen or [] if k] if error is None else []
        preview = await _run(service.preview, session.who, project_id, key, valid)
    except SegportError as exc:
        preview_error = exc
    return page.render(
        "segment.html",
        status=error.status if error else 200,
        project=project,
        segment=row,
        groups=groups,
        chosen=chosen or [],
        fmt=first(fields, "fileFormat", "csv"),
        header=first(fields, "csvHeaderType", "key"),
        bom=first(fields, "bom") == "1",
        gzip=first(fields, "gzip") == "1",
        cap=request.app.state.segport.settings.max_properties,
        error=error,
        preview=preview,
        preview_error=preview_error,
        preview_rows=PREVIEW_ROWS,
        rule_lines=rule_lines(json.loads(row.rule), page.lang) if row.rule else [],
        rule_json=json.dumps(json.loads(row.rule), ensure_ascii=False, indent=2) if row.rule else "",
        preview_cols=MAX_PAGE_PROPERTIES,
        time=web.local_time,
    )


# --- jobs ------------------------------------------------------------------------------------------------
@router.get("/p/{project_id}/jobs")
async def jobs(request: Request, project_id: str) -> Response:
    return await _project_page(
        request,
        project_id,
        lambda service, who: service.jobs(who, project_id),
        lambda page, project, rows: page.render("jobs.html", project=project, jobs=rows, time=web.local_time),
    )


@router.get("/p/{project_id}/jobs/{job_id}")
async def job(request: Request, project_id: str, job_id: str) -> Response:
    session = await _session(request)
    if session is None:
        return _to_signin(request)
    return await _job_page(request, session, project_id, job_id, None)


async def _job_page(
    request: Request, session: Session, project_id: str, job_id: str, error: SegportError | None
) -> Response:
    page = Page(request, session)
    service = _service(request)
    try:
        project = await _run(service.project, session.who, project_id)
        row = await _run(service.job, session.who, project_id, job_id)
    except SegportError as exc:
        return page.error(exc)
    elapsed = web.elapsed_s(row.created_at, row.started_at, row.finished_at)
    return page.render(
        "job.html",
        status=error.status if error else 200,
        project=project,
        job=row,
        files=list(zip(service.uris(row), job_files(row), strict=False)) if row.stage == Stage.FINISH else [],
        final=row.stage in FINAL,
        elapsed=web.human_elapsed(elapsed),
        error=error,
        time=web.local_time,
    )


@router.get("/p/{project_id}/jobs/{job_id}/status")
async def job_status(request: Request, project_id: str, job_id: str) -> Response:
    """What the job page polls: the API's job result, plus the elapsed time the page shows."""
    session = await _session(request)
    if session is None:
        exc: SegportError = Unauthorized("the console session ended: sign in again")
        return JSONResponse(exc.to_dict(), status_code=exc.status)
    service = _service(request)
    try:
        row = await _run(service.job, session.who, project_id, job_id)
    except SegportError as exc:
        return JSONResponse(exc.to_dict(), status_code=exc.status)
    body = job_result(service.exports, row).model_dump(exclude_none=True)
    seconds = web.elapsed_s(row.created_at, row.started_at, row.finished_at)
    body["elapsed"] = web.human_elapsed(seconds)
    return JSONResponse(body)


@router.post("/p/{project_id}/jobs/{job_id}/cancel")
async def cancel(request: Request, project_id: str, job_id: str) -> Response:
    session = await _session(request)
    if session is None:
        return _to_signin(request)
    try:
        fields = await web.form(request)
        web.check_csrf(session.csrf, fields)
        await _run(_service(request).cancel, session.who, project_id, job_id)
    except SegportError as exc:
        if isinstance(exc, (web.CsrfRefused, InvalidBody)):
            return Page(request, session).error(exc)
        return await _job_page(request, session, project_id, job_id, exc)
    return redirect(f"{PREFIX}/p/{project_id}/jobs/{job_id}")


@router.get("/download")
async def download(request: Request, file: Annotated[str, Query(max_length=1024)]) -> Response:
    """``/download`` for a console session: the same lookup (job by name, visibility, expiry), the same file."""
    session = await _session(request)
    if session is None:
        return _to_signin(request)
    try:
        found = await _run(_service(request).download, session.who, file)
        return ResultFileResponse(found.path, media_type=found.media_type, filename=found.file_name)
    except SegportError as exc:
        return Page(request, session).error(exc)
