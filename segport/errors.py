"""One exception hierarchy for the whole service, and the one reader of its wire shape.

Every error a caller can cause is a :class:`SegportError` subclass carrying an HTTP status and a stable
``code``. The HTTP layer renders them all as ``{"error": {"code": ..., "message": ...}}``; the CLI prints the
message on one line and exits with :attr:`SegportError.exit_code`. :func:`decode_error` reads that shape back
(for the Python client, the CLI's admin client and the engine client), and :func:`class_of_code` /
:func:`class_of_status` name the class an answer stands for.
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from typing import Any, ClassVar


class SegportError(Exception):
    """Base of every error segport raises on purpose.

    ``code`` is the class's stable code; an instance made from another process's answer keeps that answer's
    code when it is more precise than its class's (``code=``)."""

    status: ClassVar[int] = 500
    code: str = "INTERNAL_ERROR"
    exit_code: ClassVar[int] = 1

    def __init__(
        self, message: str, *, headers: dict[str, str] | None = None, code: str | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.details = details
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


# --- 400: the request itself is wrong -------------------------------------------------------------
class BadRequest(SegportError):
    status = 400
    code = "BAD_REQUEST"
    exit_code = 2


class InvalidBody(BadRequest):
    code = "INVALID_BODY"


class InvalidParameter(BadRequest):
    code = "INVALID_PARAMETER"


class TooManyProperties(BadRequest):
    code = "TOO_MANY_PROPERTIES"


class UnknownKey(BadRequest):
    code = "UNKNOWN_KEY"


class InvalidKey(BadRequest):
    code = "INVALID_KEY"


class InvalidRule(BadRequest):
    code = "INVALID_RULE"


class ImportRejected(BadRequest):
    code = "IMPORT_REJECTED"


class InvalidEvent(BadRequest):
    """An event of a collect request is refused (its message names the event's index); the batch is not stored."""

    code = "INVALID_EVENT"


class ProjectRequired(BadRequest):
    """A platform-level path was called with a token that does not see exactly one project."""

    code = "PROJECT_REQUIRED"


class KeyInUse(BadRequest):
    code = "KEY_IN_USE"
    status = 409


class AlreadyExists(SegportError):
    status = 409
    code = "ALREADY_EXISTS"
    exit_code = 2


class Conflict(SegportError):
    status = 409
    code = "CONFLICT"
    exit_code = 2


class DetectorBusy(Conflict):
    """A recompute was asked while the segment's detector is not FINISH or ERROR."""

    code = "DETECTOR_BUSY"


class PayloadTooLarge(SegportError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"
    exit_code = 2


class RangeNotSatisfiable(SegportError):
    """A download's ``Range`` starts past the end of the file."""

    status = 416
    code = "RANGE_NOT_SATISFIABLE"
    exit_code = 2


# --- 401/403: who is asking ----------------------------------------------------------------------
class Unauthorized(SegportError):
    status = 401
    code = "UNAUTHORIZED"
    exit_code = 3


class Forbidden(SegportError):
    status = 403
    code = "FORBIDDEN"
    exit_code = 3


class DataSourceRefused(Forbidden):
    """A collect request's dataSourceId is not one of the project's data sources, or it is revoked."""

    code = "DATA_SOURCE_REFUSED"


# --- 404/410: what is asked for ------------------------------------------------------------------
class NotFound(SegportError):
    status = 404
    code = "NOT_FOUND"
    exit_code = 4


class ProjectNotFound(NotFound):
    code = "PROJECT_NOT_FOUND"


class SegmentNotFound(NotFound):
    code = "SEGMENT_NOT_FOUND"


class TagNotFound(NotFound):
    code = "TAG_NOT_FOUND"


class JobNotFound(NotFound):
    code = "JOB_NOT_FOUND"


class FileNotFound(NotFound):
    code = "FILE_NOT_FOUND"


class TokenNotFound(NotFound):
    code = "TOKEN_NOT_FOUND"


class DataSourceNotFound(NotFound):
    code = "DATA_SOURCE_NOT_FOUND"


class CollectKeyNotFound(NotFound):
    """A collect request names a collection key no project has."""

    code = "COLLECT_KEY_NOT_FOUND"


class JobExpired(SegportError):
    status = 410
    code = "JOB_EXPIRED"
    exit_code = 4


# --- 429: slow down ------------------------------------------------------------------------------
class ComputeFailed(SegportError):
    """A segment's membership could not be computed from the current profiles (e.g. a column it reads is gone)."""

    status = 409
    code = "COMPUTE_FAILED"
    exit_code = 6


class EngineBusy(SegportError):
    """The profile database is held by another process (one writer per embedded file)."""

    status = 503
    code = "ENGINE_BUSY"
    exit_code = 5


class MetadataBusy(SegportError):
    """Every metadata connection of this process stayed taken for the pool's timeout (a bounded pool)."""

    status = 503
    code = "METADATA_BUSY"
    exit_code = 5

    def __init__(self, message: str = "the server is busy: try again in a few seconds", **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": "5"})
        super().__init__(message, **kw)


class MetadataUnavailable(SegportError):
    """The metadata store (PostgreSQL) cannot be reached: stopped, restarting, or the connection was cut. Every
    request answers this until it is back; the process reconnects by itself (segport/store/db.py)."""

    status = 503
    code = "METADATA_UNAVAILABLE"
    exit_code = 5

    def __init__(
        self, message: str = "the metadata store is unavailable: try again in a few seconds", **kw: Any
    ) -> None:
        kw.setdefault("headers", {"Retry-After": "5"})
        super().__init__(message, **kw)


class ResultStoreUnavailable(SegportError):
    """The result store (S3) cannot be reached or refuses us: a download is a 503 (with ``Retry-After``), an
    export ends ERROR."""

    status = 503
    code = "RESULT_STORE_UNAVAILABLE"
    exit_code = 5

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": "10"})
        super().__init__(message, **kw)


class EngineUnavailable(SegportError):
    """The engine process is down, restarting or not configured (an API process answers without it)."""

    status = 503
    code = "ENGINE_UNAVAILABLE"
    exit_code = 8

    def __init__(self, message: str, *, retry_after_s: int = 2, **details: Any) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)}, **details)


class ClientGone(SegportError):
    """The client closed its connection before its request was carried out: nothing was done (a submit created
    no job). Nobody reads the answer; 499 is the status proxies log for it."""

    status = 499
    code = "CLIENT_GONE"
    exit_code = 8


class TooManyJobs(SegportError):
    status = 429
    code = "TOO_MANY_JOBS"
    exit_code = 5


# --- 503: a resource ran out for now: retry after the time given -----------------------------------
class ResourceExhausted(SegportError):
    """A resource of the server ran out for the moment (memory, file descriptors, room in the engine's queue):
    503 with ``Retry-After``; the same request later is expected to succeed. The client retries it."""

    status = 503
    code = "RESOURCE_EXHAUSTED"
    exit_code = 5

    def __init__(self, message: str, *, retry_after_s: int = 5, **details: Any) -> None:
        details.setdefault("headers", {"Retry-After": str(retry_after_s)})
        super().__init__(message, **details)


class EngineOverloaded(ResourceExhausted):
    """The engine's memory budget is taken by running work and its wait queue is full, or the work waited
    longer than ``engine_queue_wait_s`` for its turn."""

    code = "ENGINE_OVERLOADED"


class OutOfMemory(ResourceExhausted):
    """The engine (or the process) ran out of memory for this work: an export is retried by the queue, a
    request answers 503."""

    code = "OUT_OF_MEMORY"


class TooManyOpenFiles(ResourceExhausted):
    """The process hit its open-file limit (EMFILE/ENFILE)."""

    code = "TOO_MANY_OPEN_FILES"


# --- failures inside a job or a backend ----------------------------------------------------------
class ExportFailed(SegportError):
    status = 500
    code = "EXPORT_FAILED"
    exit_code = 6


class StorageFull(ExportFailed):
    """A disk segport writes to is full (ENOSPC, EFBIG, EDQUOT): an export ends ERROR with this code; an HTTP
    request that needed the disk (an upload, a metadata write, an import) answers 507."""

    status = 507
    code = "STORAGE_FULL"


class SchemaChangeFailed(SegportError):
    """The profile engine refused a catalogue change (its ``ALTER TABLE`` failed); the catalogue is unchanged."""

    status = 503
    code = "SCHEMA_CHANGE_FAILED"
    exit_code = 6


class JobCancelled(SegportError):
    status = 409
    code = "JOB_CANCELLED"
    exit_code = 6


class UnsafeDataDir(SegportError):
    """The data dir is another user's, or group or others may write it: segport refuses to start on it."""

    status = 500
    code = "UNSAFE_DATA_DIR"
    exit_code = 1


class InvalidTransition(SegportError):
    """A job stage change that the transition table forbids: a bug or a lost race, never user input."""

    status = 409
    code = "INVALID_TRANSITION"


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
_FD_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})
# how drivers word the same conditions when they do not hand us an errno (SQLite, DuckDB, chDB)
_FULL_WORDS = ("no space left on device", "database or disk is full", "disk quota exceeded", "file too large")
_FD_WORDS = ("too many open files",)
_MEMORY_WORDS = (
    "out of memory",
    "failed to allocate",
    "failed to pin block",
    "memory limit exceeded",
    "memory_limit_exceeded",
)


def exhaustion_of(exc: BaseException) -> SegportError | None:
    """The :class:`SegportError` for an exception that means a resource ran out (memory, file descriptors,
    disk), looking through its causes; ``None`` for anything else. The one place that tells a full disk or a
    missing file descriptor from a bug, so that neither is ever answered as a 500."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ResourceExhausted, StorageFull)):
            return current
        if isinstance(current, MemoryError):
            return OutOfMemory("the server ran out of memory for this request; retry soon")
        err = getattr(current, "errno", None)
        if isinstance(current, OSError) and err in _FULL_ERRNOS:
            return StorageFull(f"the server's disk is full: {current.strerror or current}")
        if isinstance(current, OSError) and err in _FD_ERRNOS:
            return TooManyOpenFiles("the server has too many open files; retry soon")
        text = str(current).lower()
        if any(w in text for w in _FULL_WORDS):
            return StorageFull(f"the server's disk is full: {str(current).splitlines()[0]}")
        if any(w in text for w in _FD_WORDS):
            return TooManyOpenFiles("the server has too many open files; retry soon")
        if type(current).__name__ in ("OutOfMemoryException",) or any(w in text for w in _MEMORY_WORDS):
            return OutOfMemory("the engine ran out of memory for this work; retry soon")
        current = current.__cause__ or current.__context__
    return None


def all_error_classes() -> list[type[SegportError]]:
    """Every error class, :class:`SegportError` first, each before its subclasses."""
    seen: list[type[SegportError]] = []
    stack: list[type[SegportError]] = [SegportError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen


# --- the wire shape, read back ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WireError:
    """An error answer as read off the wire."""

    code: str | None  # None: the answer names no code (not JSON, or a shape without one)
    message: str | None  # None: the answer carries no message


def decode_error(body: bytes) -> WireError:
    """Read an error answer's body: segport's ``{"error": {"code", "message"}}``, or a shape GrowingIO's servers
    answer (``{"code", "message"}``, ``{"error": "...", "message"}``). A body that is not JSON is its own message
    (its first 300 characters: a proxy's error page, say)."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return WireError(None, text[:300] or None)
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):  # segport's
            return WireError(_text(err.get("code")), _text(err.get("message")))
        if isinstance(err, str):
            return WireError(_text(data.get("code")), _text(data.get("message")) or err)
        if "message" in data or "code" in data:  # GrowingIO's
            return WireError(_text(data.get("code")), _text(data.get("message")))
    return WireError(None, None)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


_BY_CODE: dict[str, type[SegportError]] = {}
for _cls in reversed(all_error_classes()):  # subclasses first: a class keeps its own code
    _BY_CODE.setdefault(_cls.code, _cls)
_BY_STATUS: dict[int, type[SegportError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: TooManyJobs,
}


def class_of_code(code: str) -> type[SegportError]:
    """The class whose code ``code`` is (:class:`SegportError` for a code segport does not define)."""
    return _BY_CODE.get(code, SegportError)


def class_of_status(status: int) -> type[SegportError]:
    """The general class of an HTTP status (:class:`SegportError` for any other status)."""
    return _BY_STATUS.get(status, SegportError)
