"""Export jobs: poll one (the seed's address, and the project-scoped one of the 4.x docs), and cancel one (a
segport extension)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from segport.http.auth import Who, quick
from segport.http.dependencies import FAMILY_ROUTE
from segport.http.job_result import job_result
from segport.http.schemas import ERRORS, ErrorBody, JobResult

router = APIRouter(responses=ERRORS)
# every route here answers the job as its result reads (the seed's shape, extra fields left out when empty)
ANSWERS_THE_JOB: dict[str, Any] = {"response_model": JobResult, "response_model_exclude_none": True, "tags": ["jobs"]}


@router.get("/v1/api/job/result/{id}", summary="Poll an export job", **ANSWERS_THE_JOB)
async def get_job_result(id: str, request: Request, who: Who) -> JobResult:
    exports = request.app.state.segport.exports
    return job_result(exports, await quick(exports.queue.db, exports.job, who, id))


@router.get(
    "/v1/api/projects/{project_ID}/job/result/{id}",
    summary="Poll an export job through its project (4.x address)",
    **ANSWERS_THE_JOB,
    **FAMILY_ROUTE,
)
def get_project_job_result(project_ID: str, id: str, request: Request, who: Who) -> JobResult:
    exports = request.app.state.segport.exports
    return job_result(exports, exports.job(who, id, project_id=project_ID))


@router.post(
    "/v1/api/job/{id}/cancel",
    summary="Cancel a queued or running export job (segport extension)",
    description="Stops the job and removes its partial files. The job then reads `stage: ERROR` with "
    "`error.code: JOB_CANCELLED`. Cancelling it again answers the same; a job that already finished or failed "
    "is a 409.",
    responses={409: {"model": ErrorBody, "description": "The job already finished or failed"}},
    **ANSWERS_THE_JOB,
)
def cancel_job(id: Annotated[str, Path(max_length=64)], request: Request, who: Who) -> JobResult:
    exports = request.app.state.segport.exports
    return job_result(exports, exports.cancel(who, id))
