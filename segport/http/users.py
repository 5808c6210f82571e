"""Single-user lookup by identity (E10 platform level, E11 project level).

``identityKey`` is written without the column prefix (``$basic_userId``); ``id_``/``ids_`` prefixes are
accepted too. A user that is not found is HTTP 200 ``{"gioId": "0", "identifications": {}, "properties": {}}``,
as GrowingIO's docs show; an identity key the project does not have is a 400.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from segport.http.auth import Who
from segport.http.dependencies import Queries
from segport.http.family_schemas import UserValue, looked_up_user
from segport.http.paging import language_header
from segport.http.schemas import ERRORS

router = APIRouter(responses=ERRORS, dependencies=[Depends(language_header)])


@router.get(
    "/v1/api/users/{identityKey}/{value:path}",
    response_model=UserValue,
    tags=["users"],
    summary="Look up one user by an identity (E10, platform level: a token of one project)",
)
def lookup_platform(identityKey: str, value: str, who: Who, q: Queries) -> UserValue:
    return looked_up_user(*q.lookup(who, None, identityKey, value))


@router.get(
    "/v1/api/projects/{project_ID}/users/{identityKey}/{value:path}",
    response_model=UserValue,
    tags=["users"],
    summary="Look up one user of a project by an identity (E11)",
)
def lookup_project(project_ID: str, identityKey: str, value: str, who: Who, q: Queries) -> UserValue:
    return looked_up_user(*q.lookup(who, project_ID, identityKey, value))
