"""What the API family's routes share: their FastAPI dependencies (the app's query use cases, paging, the
``properties[]`` list) and the router settings every family route carries."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from segport.http.paging import PageParams, language_header, page_params, page_properties
from segport.http.schemas import ERRORS
from segport.services.queries import QueryService


def queries(request: Request) -> QueryService:
    """FastAPI dependency: the family's use cases, of the app the process's role built."""
    service: QueryService = request.app.state.segport.queries
    return service


Queries = Annotated[QueryService, Depends(queries)]
Paging = Annotated[PageParams, Depends(page_params)]
Properties = Annotated[list[str], Depends(page_properties)]

# Every route of the family documents the ``language`` header GrowingIO's clients send, and the 409 a busy
# detector answers: as a router's settings (family_router), or spread into one route's decorator (FAMILY_ROUTE).
_DETECTOR_BUSY: dict[int | str, dict[str, Any]] = {409: ERRORS[400] | {"description": "Detector busy"}}
FAMILY_ROUTE: dict[str, Any] = {"responses": _DETECTOR_BUSY, "dependencies": [Depends(language_header)]}


def family_router() -> APIRouter:
    """A router whose every route is a family route."""
    return APIRouter(responses={**ERRORS, **_DETECTOR_BUSY}, dependencies=[Depends(language_header)])
