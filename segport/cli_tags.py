"""`segport tag ...`: tags computed from events (docs/tags.md), on the data dir directly or through the running
server's admin API (as cli_data.py does for segments)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from segport.app import App
from segport.cli_common import ProjectOpt, cli, handled
from segport.cli_data import _p, dispatch
from segport.http.admin_tags import tag_out
from segport.services.tags import TagService, TagSpec, definition_json

tag_cli = typer.Typer(help="Tags computed from events: create, list, show, recompute, delete.", no_args_is_help=True)
cli.add_typer(tag_cli, name="tag")

TagArg = Annotated[str, typer.Argument(help="Tag key, e.g. tag_pay_30d.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (the admin API's answer).")]


def _service(app: App) -> TagService:
    return TagService(app.data)


def _line(out: dict[str, Any]) -> str:
    detector = out.get("detector")
    state = f"{detector['stage']}, {detector['totalUsers']} users" if detector else "imported with the profiles"
    return f"{out['key']}\t{out['name']}\t{out['type']}\t{out['valueType']['type']}\t{state}"


def _echo(out: Any, as_json: bool, line: str) -> None:
    typer.echo(json.dumps(out, ensure_ascii=False, indent=2) if as_json else line)


@tag_cli.command("create")
@handled
def tag_create(
    project: ProjectOpt,
    key: Annotated[str, typer.Option(help="Tag key, e.g. tag_pay_30d.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    definition: Annotated[
        str, typer.Option(help="JSON definition: AGGREGATED, ATTRIBUTION_ATTRIBUTE, ... (docs/tags.md).")
    ],
    description: Annotated[str, typer.Option(help="Description.")] = "",
    scheduler: Annotated[str | None, typer.Option(help="DAILY (default) or ONCE.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a tag computed from events and compute it."""
    parsed = definition_json(definition)
    spec = TagSpec(key, name, parsed, description, scheduler, creator="cli")

    def remote(c: Any) -> Any:
        body = {"key": key, "name": name, "description": description, "definition": parsed, "scheduler": scheduler}
        return c.call("POST", _p(project, "/tags"), json={k: v for k, v in body.items() if v is not None})

    out = dispatch(remote, lambda app: tag_out(_service(app).create(project, spec)).model_dump())
    _echo(out, as_json, "created " + _line(out))


@tag_cli.command("list")
@handled
def tag_list(project: ProjectOpt, as_json: JsonOpt = False) -> None:
    """List the project's tags (imported and computed): key, name, type, value type, detector."""
    rows = dispatch(
        lambda c: c.call("GET", _p(project, "/tags")),
        lambda app: [tag_out(v).model_dump() for v in _service(app).views(project)],
    )
    _echo(rows, as_json, "\n".join(_line(r) for r in rows))


@tag_cli.command("show")
@handled
def tag_show(project: ProjectOpt, key: TagArg) -> None:
    """Show one tag as JSON (definition and detector)."""
    out = dispatch(
        lambda c: c.call("GET", _p(project, f"/tags/{key}")),
        lambda app: tag_out(_service(app).view(project, key)).model_dump(),
    )
    typer.echo(json.dumps(out, ensure_ascii=False, indent=2))


@tag_cli.command("recompute")
@handled
def tag_recompute(project: ProjectOpt, key: TagArg, as_json: JsonOpt = False) -> None:
    """Recompute a computed tag now, from the events stored now."""

    def local(app: App) -> Any:
        service = _service(app)
        service.recompute_if_idle(project, service.view(project, key).entry.key)
        return tag_out(service.view(project, key)).model_dump()

    out = dispatch(lambda c: c.call("POST", _p(project, f"/tags/{key}/recompute")), local)
    _echo(out, as_json, "recomputed " + _line(out))


@tag_cli.command("delete")
@handled
def tag_delete(project: ProjectOpt, key: TagArg) -> None:
    """Delete a computed tag: its definition, its catalogue entry and its values."""
    dispatch(lambda c: c.call("DELETE", _p(project, f"/tags/{key}")), lambda app: _service(app).delete(project, key))
    typer.echo(f"deleted tag {key}")
