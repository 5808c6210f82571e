"""Result files: ``GET /download?file=<uri>`` (the seed's download address) and its ``HEAD``.

The file is resolved through its job, never from a filesystem path in the query; a local file is streamed from
disk (segport/http/files.py), an object in S3 streamed or redirected to (segport/http/remote_files.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from segport.http.auth import Who
from segport.http.files import ResultFileResponse
from segport.http.remote_files import remote_response
from segport.http.schemas import ERRORS

router = APIRouter(responses=ERRORS)


@router.get(
    "/download",
    response_class=FileResponse,
    tags=["jobs"],
    summary="Download a result file",
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}, "application/gzip": {}}}},
)
def download(request: Request, who: Who, file: Annotated[str, Query(max_length=1024)]) -> Response:
    found = request.app.state.segport.exports.download(who, file)
    if found.remote is not None:  # object storage: streamed from it, or a redirect to it
        return remote_response(found.remote, media_type=found.media_type, filename=found.file_name)
    return ResultFileResponse(found.path, media_type=found.media_type, filename=found.file_name)


# HEAD answers what GET would, without the body (curl -I, download managers checking the size first)
router.head("/download", include_in_schema=False)(download)
