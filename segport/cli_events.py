"""`segport events ...`: history from files and the event attribute catalogue, on the data dir directly or
through the running server's admin API (as cli_data.py does for profiles)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from segport.app import App
from segport.cli_common import ProjectOpt, cli, handled
from segport.cli_data import _p, dispatch, send_file
from segport.domain.formats import detect_format
from segport.http.admin_events import import_out, key_out
from segport.remote import AdminClient
from segport.services.events import EventService

events_cli = typer.Typer(help="Events: history from files, the event attribute catalogue.", no_args_is_help=True)
keys_cli = typer.Typer(help="The event attribute catalogue (key, display name, type).", no_args_is_help=True)
events_cli.add_typer(keys_cli, name="keys")
cli.add_typer(events_cli, name="events")


def _service(app: App) -> EventService:
    return EventService(app.meta, app.engine, app.data)


@events_cli.command("import")
@handled
def events_import(
    project: ProjectOpt,
    file: Annotated[Path, typer.Argument(help="CSV, Parquet or JSON Lines: event, time, userId|deviceId|gio_id, ...")],
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv, parquet or jsonl (default: by extension).")
    ] = None,
) -> None:
    """Import events from a file: all or nothing (docs/events.md)."""
    fmt = detect_format(file, file_format)
    if not file.is_file():
        raise FileNotFoundError(2, "No such file", str(file))

    def remote(c: AdminClient) -> dict[str, Any]:
        return send_file(c, _p(project, "/events/import"), file, {"format": fmt, "filename": file.name})

    def local(app: App) -> dict[str, Any]:
        report = _service(app).import_events(project, file, file_format=fmt)
        return import_out(report, file.name).model_dump()

    out = dispatch(remote, local)
    typer.echo(
        f"imported {file.name}: {out['stored']} of {out['rowsRead']} events stored, {out['usersCreated']} new users, "
        f"{len(out['events'])} event names in {out['elapsedSeconds']:.2f}s"
    )
    for key in out["newAttributes"]:
        typer.echo(f"  new attribute {key}")


@keys_cli.command("add")
@handled
def keys_add(
    project: ProjectOpt,
    key: Annotated[str, typer.Argument(help="Attribute key, e.g. amount.")],
    name: Annotated[str, typer.Option(help="Display name (default: the key).")] = "",
    type_: Annotated[str, typer.Option("--type", help="string, int, double or date.")] = "string",
    description: Annotated[str, typer.Option(help="Description.")] = "",
) -> None:
    """Declare an event attribute (or rename it); its type cannot change once values are stored."""
    body = {"key": key, "name": name, "type": type_, "description": description}
    out = dispatch(
        lambda c: c.call("POST", _p(project, "/events/keys"), json=body),
        lambda app: key_out(_service(app).declare(project, key, name, type_, description), True).model_dump(),
    )
    typer.echo(f"event attribute {out['key']} ({out['name']}): {out['type']}")


@keys_cli.command("list")
@handled
def keys_list(project: ProjectOpt) -> None:
    """List the event attributes: key, display name, type, declared or seen."""

    def local(app: App) -> list[dict[str, Any]]:
        service = _service(app)
        app.meta.project(project)
        return [key_out(a.attribute, a.declared).model_dump() for a in service.catalog.attribute_rows(project)]

    rows = dispatch(lambda c: c.call("GET", _p(project, "/events/keys")), local)
    for r in rows:
        typer.echo(f"{r['key']}\t{r['name']}\t{r['type']}\t{'declared' if r['declared'] else 'seen'}")
