"""The admin API's data sources (``/admin/v1/projects/{project_id}/datasources``): what `segport datasources`
does, while the server runs. Admin tokens only, like the rest of the admin API (segport/http/admin.py)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from segport.errors import DataSourceNotFound
from segport.http.admin import PREFIX, Admin
from segport.http.errors import parse_body
from segport.http.schemas import ERRORS
from segport.store.events import DataSource, DataSources

router = APIRouter(prefix=PREFIX, responses=ERRORS, tags=["admin"])


class DataSourceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=200, description="A note on what sends with it (web, app, server...).")


class DataSourceOut(BaseModel):
    dataSourceId: str
    name: str
    createdAt: datetime
    revokedAt: datetime | None


class NewDataSourceOut(BaseModel):
    projectKey: str = Field(description="The project's collection key (the SDKs' product id / project key).")
    dataSourceId: str


class DataSourcesOut(BaseModel):
    projectKey: str | None = Field(description="The project's collection key; null before its first data source.")
    dataSources: list[DataSourceOut]


def _sources(request: Request) -> DataSources:
    return DataSources(request.app.state.segport.db)


def _out(r: DataSource) -> DataSourceOut:
    return DataSourceOut(dataSourceId=r.id, name=r.name, createdAt=r.created_at, revokedAt=r.revoked_at)


@router.get(
    "/projects/{project_id}/datasources",
    response_model=DataSourcesOut,
    summary="List a project's data sources and its collection key",
)
def list_datasources(project_id: str, request: Request, _who: Admin) -> DataSourcesOut:
    sources = _sources(request)
    rows = sources.list(project_id)
    return DataSourcesOut(projectKey=sources.collect_key(project_id), dataSources=[_out(r) for r in rows])


@router.post(
    "/projects/{project_id}/datasources",
    response_model=NewDataSourceOut,
    status_code=201,
    summary="Add a data source: the collection key and dataSourceId an SDK is set up with",
)
async def add_datasource(project_id: str, request: Request, _who: Admin) -> NewDataSourceOut:
    body: DataSourceBody = parse_body(DataSourceBody, await request.body() or b"{}")
    key, source = await run_in_threadpool(_sources(request).add, project_id, body.name)
    return NewDataSourceOut(projectKey=key, dataSourceId=source)


@router.post(
    "/projects/{project_id}/datasources/{datasource_id}/revoke",
    response_model=DataSourceOut,
    summary="Revoke a data source: its collect requests are refused (403) within 1 s",
)
async def revoke_datasource(project_id: str, datasource_id: str, request: Request, _who: Admin) -> DataSourceOut:
    sources = _sources(request)
    found = await run_in_threadpool(sources.get, datasource_id)
    if found.project_id != project_id:
        raise DataSourceNotFound(f"data source {datasource_id!r} not found in project {project_id!r}")
    return _out(await run_in_threadpool(sources.revoke, datasource_id))
