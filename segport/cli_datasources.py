"""`segport datasources`: the data sources GrowingIO's SDKs send events with (docs/events.md).

They live in the metadata store alone, so these commands work the same with or without a running server.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from segport.app import Stores
from segport.cli_common import ProjectOpt, cli, handled, with_stores
from segport.store.events import DataSource, DataSources

datasources_cli = typer.Typer(help="Data sources of the collect endpoints (SDK events).", no_args_is_help=True)
cli.add_typer(datasources_cli, name="datasources")


@datasources_cli.command("add")
@handled
def datasources_add(
    project: ProjectOpt,
    name: Annotated[str, typer.Option(help="A note on what sends with it (web, app, server...).")] = "",
    as_json: Annotated[bool, typer.Option("--json", help='Print {"projectKey": ..., "dataSourceId": ...}.')] = False,
) -> None:
    """Add a data source; prints the project's collection key and the new dataSourceId."""
    key, source = with_stores(lambda stores: DataSources(stores.db).add(project, name))
    if as_json:
        typer.echo(json.dumps({"projectKey": key, "dataSourceId": source}))
        return
    typer.echo(f"projectKey:   {key}")
    typer.echo(f"dataSourceId: {source}")


@datasources_cli.command("list")
@handled
def datasources_list(
    project: ProjectOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List a project's data sources (id, name, created, state) after its collection key."""

    def read(stores: Stores) -> tuple[str | None, list[DataSource]]:
        sources = DataSources(stores.db)
        return sources.collect_key(project), sources.list(project)

    key, rows = with_stores(read)
    if as_json:
        typer.echo(json.dumps({"projectKey": key, "dataSources": [_out(r) for r in rows]}))
        return
    typer.echo(f"projectKey: {key or '(none yet: add a data source)'}")
    for r in rows:
        out = _out(r)
        state = "revoked" if out["revokedAt"] else "active"
        typer.echo(f"{out['dataSourceId']}\t{out['name']}\t{out['createdAt']}\t{state}")


@datasources_cli.command("revoke")
@handled
def datasources_revoke(
    datasource_id: Annotated[str, typer.Argument(help="The dataSourceId.")],
) -> None:
    """Revoke a data source: collect requests with it are refused (403) within 1 s."""
    with_stores(lambda stores: DataSources(stores.db).revoke(datasource_id))
    typer.echo("revoked")


def _out(r: DataSource) -> dict[str, object]:
    return {
        "dataSourceId": r.id,
        "name": r.name,
        "createdAt": r.created_at.isoformat(),
        "revokedAt": r.revoked_at.isoformat() if r.revoked_at else None,
    }
