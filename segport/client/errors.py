"""The client's one exception tree.

Every error the client raises is a :class:`ClientError`. An error answer from the server becomes the
:class:`ApiError` subclass named by its ``code`` (segport's stable codes, see ``segport/errors.py``), or, for a
code the client does not know (another GrowingIO-compatible server), the class for its HTTP status. Each class
carries the CLI exit code ``segport export`` uses for it.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any, ClassVar

import httpx

from segport.client.models import JobResult
from segport.errors import decode_error


class ClientError(Exception):
    """Base of every error the client raises."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ClientError, ValueError):
    """A call the client refuses before asking the server (e.g. ``file_format="xml"``)."""

    exit_code = 2


class ConnectionFailed(ClientError):
    """The server could not be reached, or kept dropping the connection after every retry."""

    exit_code = 8


class DownloadFailed(ClientError):
    """A download could not be completed (resumes exhausted, or the server sent inconsistent ranges)."""

    exit_code = 8


class UnexpectedResponse(ClientError):
    """The server answered 2xx with something that is not the API's shape."""

    exit_code = 1


class WaitTimeout(ClientError, TimeoutError):
    """The job did not finish within the time given to :meth:`wait`; ``result`` is the last answer seen."""

    exit_code = 7

    def __init__(self, message: str, result: JobResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class JobFailed(ClientError):
    """The job ended in stage ``ERROR``; ``code`` and ``message`` are the server's when it gave them."""

    exit_code = 6

    def __init__(self, message: str, result: JobResult, code: str | None = None) -> None:
        super().__init__(message)
        self.result = result
        self.code = code


# --- error answers from the server ----------------------------------------------------------------
class ApiError(ClientError):
    """An error answer. ``status`` is the HTTP status, ``code`` the server's code (or a generic one).

    A subclass names the server code it stands for (and its exit code, else its parent's) in its class line:
    ``class TagNotFound(NotFound, code="TAG_NOT_FOUND")`` — so the list below reads as the table it is."""

    server_code: ClassVar[str] = "HTTP_ERROR"

    def __init_subclass__(cls, *, code: str, exit_code: int | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.server_code = code
        if exit_code is not None:
            cls.exit_code = exit_code

    def __init__(self, message: str, *, status: int, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or self.server_code
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})"


class BadRequest(ApiError, code="BAD_REQUEST", exit_code=2): ...


class InvalidBody(BadRequest, code="INVALID_BODY"): ...


class InvalidParameter(BadRequest, code="INVALID_PARAMETER"): ...


class TooManyProperties(BadRequest, code="TOO_MANY_PROPERTIES"): ...


class UnknownKey(BadRequest, code="UNKNOWN_KEY"): ...


class InvalidKey(BadRequest, code="INVALID_KEY"): ...


class PayloadTooLarge(BadRequest, code="PAYLOAD_TOO_LARGE"): ...


class AuthError(ApiError, code="AUTH_ERROR", exit_code=3):
    """HTTP 401/403: the token is missing, wrong, revoked, or may not do this."""


class Unauthorized(AuthError, code="UNAUTHORIZED"): ...


class Forbidden(AuthError, code="FORBIDDEN"): ...


class NotFound(ApiError, code="NOT_FOUND", exit_code=4): ...


class ProjectNotFound(NotFound, code="PROJECT_NOT_FOUND"): ...


class SegmentNotFound(NotFound, code="SEGMENT_NOT_FOUND"): ...


class TagNotFound(NotFound, code="TAG_NOT_FOUND"): ...


class JobNotFound(NotFound, code="JOB_NOT_FOUND"): ...


class FileNotFound(NotFound, code="FILE_NOT_FOUND"): ...


class JobExpired(ApiError, code="JOB_EXPIRED", exit_code=4):
    """HTTP 410: the job's results were deleted after their time to live."""


class Conflict(ApiError, code="CONFLICT", exit_code=2): ...


class TooManyRequests(ApiError, code="TOO_MANY_REQUESTS", exit_code=5):
    """HTTP 429; ``retry_after`` holds the server's ``Retry-After`` in seconds when it sent one."""


class TooManyJobs(TooManyRequests, code="TOO_MANY_JOBS"): ...


class ServerError(ApiError, code="INTERNAL_ERROR", exit_code=1):
    """HTTP 5xx."""


class MetadataUnavailable(ServerError, code="METADATA_UNAVAILABLE", exit_code=5):
    """HTTP 503: the server's metadata store is down for a while; retried (``Retry-After``) like a 429, then
    raised. Nothing was changed by the request."""


class ResourceExhausted(ServerError, code="RESOURCE_EXHAUSTED", exit_code=5):
    """HTTP 503: the server ran out of a resource for the moment; ``retry_after`` says when to try again (the
    client retries these itself, as it does every 503 with a ``Retry-After``)."""


class EngineOverloaded(ResourceExhausted, code="ENGINE_OVERLOADED"):
    """The engine's memory budget is taken and its wait queue full (or the wait ran out)."""


class OutOfMemory(ResourceExhausted, code="OUT_OF_MEMORY"): ...


class TooManyOpenFiles(ResourceExhausted, code="TOO_MANY_OPEN_FILES"): ...


class MetadataBusy(ResourceExhausted, code="METADATA_BUSY"):
    """Every metadata connection of the server stayed taken (a bounded pool)."""


class StorageFull(ServerError, code="STORAGE_FULL", exit_code=6):
    """HTTP 507 (or a job's error code): a disk of the server is full."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: JobExpired,
    413: PayloadTooLarge,
    422: BadRequest,
    429: TooManyRequests,
}


def _subclasses(cls: type[ApiError]) -> list[type[ApiError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out


BY_CODE: dict[str, type[ApiError]] = {cls.server_code: cls for cls in _subclasses(ApiError)}


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date; ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_response(response: httpx.Response) -> ApiError:
    """The exception for an error answer (the response body must have been read)."""
    status = response.status_code
    wire = decode_error(response.content)
    code, message = wire.code, wire.message or response.reason_phrase or f"HTTP {status}"
    cls = BY_CODE.get(code or "") or _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    # a code we know under a status that contradicts it (a foreign server) still picks the class by code
    return cls(message, status=status, code=code, retry_after=parse_retry_after(response.headers.get("retry-after")))
