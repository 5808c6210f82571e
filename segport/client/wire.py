"""The server's answers read into the client's models: the one place where a 2xx answer of the wrong shape
becomes :class:`UnexpectedResponse`. (It sits between :mod:`errors` and :mod:`models`, which the errors carry:
the models themselves know nothing of errors, so the two import in one direction only.)"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from segport.client.errors import UnexpectedResponse
from segport.client.models import Job, JobError, JobResult


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise UnexpectedResponse(f"expected JSON from {response.request.url}, got: {response.text[:200]!r}") from None


def submitted_job(response: httpx.Response) -> Job:
    """The submit's answer, ``{"id", "name"}``."""
    data = json_body(response)
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise UnexpectedResponse(f"not a submitted job: {response.text[:200]}")
    return Job(id=data["id"], name=str(data.get("name") or ""))


def job_result(data: Any) -> JobResult:
    """A decoded ``GET /v1/api/job/result/{id}`` answer: ``stage`` and ``uris`` required, the rest when sent."""
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("stage"), str)
        or not isinstance(data.get("uris", []), list)
    ):
        raise UnexpectedResponse(f"not a job result: {str(data)[:200]}")
    err = data.get("error")
    error = None
    if isinstance(err, dict):
        error = JobError(_opt(err.get("code"), str), str(err.get("message") or "export failed"))
    elif isinstance(err, str) and err:
        error = JobError(None, err)
    return JobResult(
        stage=data["stage"],
        uris=tuple(u for u in data.get("uris") or [] if isinstance(u, str)),
        id=_opt(data.get("id"), str),
        name=_opt(data.get("name"), str),
        rows=_opt(data.get("rows"), int),
        bytes=_opt(data.get("bytes"), int),
        attempts=_opt(data.get("attempts"), int),
        error=error,
        created_at=_time(data.get("createdAt")),
        started_at=_time(data.get("startedAt")),
        finished_at=_time(data.get("finishedAt")),
        expires_at=_time(data.get("expiresAt")),
        raw=data,
    )


def _opt(value: Any, kind: type) -> Any:
    if kind is int and isinstance(value, bool):
        return None
    return value if isinstance(value, kind) else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
