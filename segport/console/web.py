"""The console's plumbing: templates, language, the session cookie, CSRF, security headers, formatting."""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from segport.console import i18n
from segport.console.sessions import Session
from segport.errors import InvalidBody, SegportError
from segport.store.models import utcnow

HERE = Path(__file__).parent
PREFIX = "/console"
SESSION_COOKIE = "segport_session"
SIGNIN_CSRF_COOKIE = "segport_signin"
LANG_COOKIE = "segport_lang"

# No inline script or style anywhere in the console: everything comes from /console/static.
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
# Swagger UI and ReDoc set style attributes and inject <style> elements (React, styled-components), and
# ReDoc runs its search index in a worker made from a blob: URL. Scripts still come only from this server.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


class CsrfRefused(SegportError):
    status = 403
    code = "CSRF_REFUSED"
    exit_code = 3


class SecurityHeaders:
    """What console and docs answers carry beyond :class:`segport.http.guard.EdgeGuard`'s common headers.

    EdgeGuard (outermost) adds ``nosniff`` and ``no-store`` to every answer; this adds the console's tighter
    policy and the frame and referrer headers (pages, redirects, static files, errors alike)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == PREFIX or path.startswith(PREFIX + "/"):
            csp = CONSOLE_CSP
        elif path in ("/docs", "/redoc") or path.startswith("/docs/"):
            csp = DOCS_CSP
        else:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                extra = {
                    b"content-security-policy": csp.encode(),
                    b"x-frame-options": b"DENY",
                    b"referrer-policy": b"same-origin",
                }
                headers += [(k, v) for k, v in extra.items() if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = lambda value: human_size(value)
    env.filters["urlpart"] = lambda value: quote(str(value), safe="")
    return env


ENV = _environment()


class Page:
    """What every template gets: the request's language and strings, and the session's CSRF token."""

    def __init__(self, request: Request, session: Session | None = None) -> None:
        self.request = request
        self.session = session
        self.lang = i18n.pick(
            request.query_params.get("lang"),
            request.cookies.get(LANG_COOKIE),
            request.headers.get("accept-language"),
        )
        self.t = i18n.translator(self.lang)

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        other = "zh" if self.lang == "en" else "en"
        html = ENV.get_template(template).render(
            t=self.t,
            lang=self.lang,
            switch_url=f"{self.request.url.path}?lang={other}",
            csrf=self.session.csrf if self.session else "",
            signed_in=self.session is not None,
            prefix=PREFIX,
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        self.remember_lang(response)
        return response

    def error(self, exc: SegportError, **context: Any) -> HTMLResponse:
        return self.render("error.html", exc.status, error=exc, **context)

    def remember_lang(self, response: Response) -> None:
        chosen = self.request.query_params.get("lang")
        if chosen in i18n.LANGS:
            response.set_cookie(LANG_COOKIE, chosen, max_age=365 * 86400, path=PREFIX, samesite="strict")


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


MAX_FORM_FIELDS = 500  # the largest console form (an export of every catalogue key) has far fewer


async def form(request: Request) -> dict[str, list[str]]:
    """The urlencoded body of a console form (the body size is bounded by the app's limit).

    A body that is not UTF-8 reads as an empty form (its CSRF check then refuses it); one with more than
    ``MAX_FORM_FIELDS`` fields is :class:`InvalidBody`, which each handler shows like any other refusal."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    try:
        return parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:  # the only refusal parse_qs makes without strict_parsing: too many fields
        raise InvalidBody(f"the form has more than {MAX_FORM_FIELDS} fields") from None


def first(fields: dict[str, list[str]], name: str, default: str = "") -> str:
    values = fields.get(name)
    return values[0] if values else default


def check_csrf(expected: str, fields: dict[str, list[str]]) -> None:
    """Every console form carries the session's CSRF token; a form from elsewhere does not."""
    sent = first(fields, "csrf")
    if not expected or not sent or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise CsrfRefused("the form's CSRF token is missing or wrong: reload the page and try again")


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def set_session_cookie(request: Request, response: Response, value: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=max_age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def safe_next(value: str) -> str:
    """Where to go after signing in: a console page of this server, nothing else (no open redirect)."""
    if value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value and "//" not in value:
        return value
    return ""


def human_size(value: int | None) -> str:
    if value is None:
        return "–"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def local_time(value: datetime | None, tz: str) -> str:
    if value is None:
        return "–"
    return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")


def elapsed_s(created: datetime, started: datetime | None, finished: datetime | None) -> float:
    """Seconds the job has taken so far: from its start (or, while queued, its submission) to its end."""
    begin = started or created
    return max(0.0, ((finished or utcnow()) - begin).total_seconds())


def human_elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
