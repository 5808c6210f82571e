"""`segport catalog|users|segment ...`: data in, on the data dir directly or through the running server.

Commands that write profiles or memberships need the DuckDB file, which a running `segport serve` owns. When
``server.json`` in the data dir names a live server, these commands go through its admin API
(:mod:`segport.remote`); otherwise they open the data dir themselves. Read-only commands that need only the
metadata store (``list``, ``show``) always read it directly.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from segport.app import App, Stores
from segport.cli_common import (
    ProjectOpt,
    catalog_cli,
    handled,
    segment_cli,
    settings,
    users_cli,
    with_app,
    with_stores,
)
from segport.domain.formats import detect_format
from segport.errors import Conflict, ExportFailed
from segport.http.admin_schemas import catalog_out, segment_out
from segport.remote import AdminClient, admin_client, running_server
from segport.services.data import SegmentSpec, catalog_entry

T = TypeVar("T")
KeyArg = Annotated[str, typer.Argument(help="Catalogue key, e.g. usr_gender or id_$basic_userId.")]
SegmentArg = Annotated[str, typer.Argument(help="Segment key, e.g. seg_51activity.")]


def dispatch(remote: Callable[[AdminClient], T], local: Callable[[App], T]) -> T:
    """Run ``remote`` against the live server of the data dir, or ``local`` on the data dir itself."""
    s = settings()
    url = running_server(s.data_dir)
    if url:
        with admin_client(s, url) as client:
            return remote(client)
    try:
        return with_app(local)  # type: ignore[no-any-return]
    except ExportFailed as exc:
        if "lock" in exc.message:
            raise Conflict(
                "the profile database is in use by another process (a `segport serve` without "
                "server.json, or another command); stop it or retry when it is done"
            ) from None
        raise


def _p(project: str, rest: str = "") -> str:
    return f"/projects/{project}{rest}"


# --- catalogue ------------------------------------------------------------------------------------
@catalog_cli.command("import")
@handled
def catalog_import(
    project: ProjectOpt, file: Annotated[Path, typer.Argument(help="CSV: key,name,type[,description].")]
) -> None:
    """Import catalogue entries from CSV (all or nothing)."""
    text = file.read_text(encoding="utf-8")
    out = dispatch(
        lambda c: c.call(
            "POST", _p(project, "/catalog/import"), content=text.encode(), headers={"Content-Type": "text/csv"}
        ),
        lambda app: dict(zip(("added", "updated"), app.data.import_catalog_csv(project, text), strict=True)),
    )
    typer.echo(f"catalogue of {project}: {out['added']} added, {out['updated']} updated")


@catalog_cli.command("add")
@handled
def catalog_add(
    project: ProjectOpt,
    key: KeyArg,
    name: Annotated[str | None, typer.Option(help="Display name (default: the key).")] = None,
    type_: Annotated[
        str, typer.Option("--type", help="string, int, double or date; add [] for multi-valued.")
    ] = "string",
    description: Annotated[str, typer.Option(help="Description.")] = "",
) -> None:
    """Add a key to the catalogue (or update its display name and description)."""
    entry = catalog_entry(key, name or "", type_, description)
    out = dispatch(
        lambda c: c.call(
            "POST",
            _p(project, "/catalog"),
            json={"key": entry.key, "name": entry.name, "type": type_, "description": description},
        ),
        lambda app: (app.data.add_catalog_entries(project, [entry]), catalog_out(entry).model_dump())[1],
    )
    typer.echo(f"{out['key']}\t{out['name']}\t{out['type']}")


def _patch(project: str, key: str, **fields: str) -> dict[str, Any]:
    return dispatch(  # type: ignore[no-any-return]
        lambda c: c.call("PATCH", _p(project, f"/catalog/{key}"), json=fields),
        lambda app: catalog_out(app.data.update_catalog_entry(project, key, **fields)).model_dump(),
    )


@catalog_cli.command("rename")
@handled
def catalog_rename(
    project: ProjectOpt, key: KeyArg, name: Annotated[str, typer.Argument(help="New display name.")]
) -> None:
    """Change a key's display name (used by csvHeaderType=name)."""
    out = _patch(project, key, name=name)
    typer.echo(f"{out['key']}\t{out['name']}")


@catalog_cli.command("describe")
@handled
def catalog_describe(
    project: ProjectOpt, key: KeyArg, description: Annotated[str, typer.Argument(help="New description.")]
) -> None:
    """Set a key's description."""
    out = _patch(project, key, description=description)
    typer.echo(f"{out['key']}\t{out['description']}")


@catalog_cli.command("remove")
@handled
def catalog_remove(project: ProjectOpt, key: KeyArg) -> None:
    """Remove a key and its column of values; refused while a segment rule (or id list) uses it."""
    dispatch(
        lambda c: c.call("DELETE", _p(project, f"/catalog/{key}")),
        lambda app: app.data.remove_catalog_key(project, key),
    )
    typer.echo(f"removed {key}")


@catalog_cli.command("list")
@handled
def catalog_list(project: ProjectOpt) -> None:
    """List a project's keys: key, display name, type, description."""

    def read(stores: Stores) -> Any:
        stores.meta.project(project)
        return stores.meta.catalog(project)

    for e in with_stores(read).entries.values():
        typer.echo(f"{e.key}\t{e.name}\t{e.type.value}{'[]' if e.multi else ''}\t{e.description}")


# --- users ----------------------------------------------------------------------------------------
def send_file(c: AdminClient, path: str, file: Path, params: dict[str, str]) -> dict[str, Any]:
    """Upload ``file`` to the running server's import at ``path``, saying on the terminal that it is on its way."""
    progress = _Progress()
    progress(f"sending {file.name} ({file.stat().st_size / 1e6:.1f} MB) to the running server, which imports it")
    try:
        return c.upload(path, file, params)  # type: ignore[no-any-return]
    finally:
        progress.stop()


class _Progress:
    """Phase lines on stderr with the elapsed time, so a long import shows where it is; while one phase
    lasts, a line every ``tick_s`` says it is still going."""

    def __init__(self, tick_s: float = 10.0) -> None:
        self.started = time.perf_counter()
        self.phase = ""
        self.tick_s = tick_s
        self._done = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, message: str) -> None:
        self.phase = message
        self._print(message)
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def stop(self) -> None:
        self._done.set()

    def _tick(self) -> None:
        while not self._done.wait(self.tick_s):
            self._print(f"... still {self.phase}")

    def _print(self, message: str) -> None:
        print(f"  [{time.perf_counter() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)


@users_cli.command("import")
@handled
def users_import(
    project: ProjectOpt,
    file: Annotated[Path, typer.Argument(help="CSV, Parquet or JSON Lines; columns are catalogue keys.")],
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv, parquet or jsonl (default: by extension).")
    ] = None,
    match: Annotated[str, typer.Option(help="Identity users are matched on.")] = "id_$basic_userId",
) -> None:
    """Import user profiles: all or nothing; DAILY segments are recomputed in the same transaction."""
    fmt = detect_format(file, file_format)
    if not file.is_file():
        raise FileNotFoundError(2, "No such file", str(file))

    def remote(c: AdminClient) -> dict[str, Any]:
        return send_file(c, _p(project, "/users/import"), file, {"format": fmt, "match": match, "filename": file.name})

    def local(app: App) -> dict[str, Any]:
        progress = _Progress()
        try:
            r = app.data.import_users(project, file, file_format=fmt, match=match, progress=progress)
        finally:
            progress.stop()
        return {
            "rowsRead": r.rows_read,
            "inserted": r.inserted,
            "updated": r.updated,
            "elapsedSeconds": r.elapsed_s,
            "segments": r.segments,
        }

    out = dispatch(remote, local)
    typer.echo(
        f"imported {file.name}: {out['rowsRead']} rows read, {out['inserted']} users inserted, "
        f"{out['updated']} updated in {out['elapsedSeconds']:.2f}s"
    )
    for key, total in out["segments"].items():
        typer.echo(f"  segment {key}: {total} users")


# --- segments -------------------------------------------------------------------------------------
def _segment_line(out: dict[str, Any]) -> str:
    extra = f", {out['unmatchedIds']} ids matched no user" if out.get("unmatchedIds") is not None else ""
    return f"segment {out['key']} ({out['name']}): {out['detector']['totalUsers']} users{extra}"


@segment_cli.command("create")
@handled
def segment_create(
    project: ProjectOpt,
    key: Annotated[str, typer.Option(help="Segment key, e.g. seg_51activity.")],
    name: Annotated[str, typer.Option(help="Display name (used in file names).")],
    rule: Annotated[str | None, typer.Option(help="JSON rule tree.")] = None,
    members: Annotated[Path | None, typer.Option(help="File of ids, one per line.")] = None,
    identity: Annotated[
        str | None, typer.Option(help="Identity the ids in --members are (e.g. id_$basic_userId).")
    ] = None,
    description: Annotated[str, typer.Option(help="Description.")] = "",
    scheduler: Annotated[
        str | None, typer.Option(help="DAILY (default for rules) or ONCE (default for id lists).")
    ] = None,
) -> None:
    """Create a segment from a rule (--rule) or an id list (--members --identity) and compute it."""
    from segport.domain.rules import parse_rule_text

    parsed = parse_rule_text(rule) if rule is not None else None
    spec = SegmentSpec(
        key=key,
        name=name,
        description=description,
        rule=parsed,
        members=members,
        identity=identity,
        scheduler=scheduler,
        creator="cli",
    )

    def remote(c: AdminClient) -> Any:
        if members is None:
            body = {"key": key, "name": name, "description": description, "rule": parsed, "scheduler": scheduler}
            return c.call("POST", _p(project, "/segments"), json={k: v for k, v in body.items() if v is not None})
        params = {
            "key": key,
            "name": name,
            "identity": identity or "$basic_userId",
            "description": description,
            **({"scheduler": scheduler} if scheduler else {}),
        }
        return c.upload(_p(project, "/segments/from_file"), members, params)

    out = dispatch(remote, lambda app: segment_out(app.data.create_segment(project, spec)).model_dump())
    typer.echo("created " + _segment_line(out))


@segment_cli.command("list")
@handled
def segment_list(project: ProjectOpt) -> None:
    """List segments: key, name, createdBy, scheduler, detector stage, total users, detectedAt."""

    def read(stores: Stores) -> Any:
        stores.meta.project(project)
        return stores.meta.segments(project)[0]

    for r in with_stores(read):
        d = segment_out(r)
        typer.echo(
            f"{r.key}\t{r.name}\t{r.created_by}\t{r.scheduler}\t{r.detector_stage}\t{r.total_users}\t"
            f"{d.detector.detectedAt or ''}"
        )


@segment_cli.command("show")
@handled
def segment_show(project: ProjectOpt, key: SegmentArg) -> None:
    """Show one segment as JSON (definition and detector)."""
    row = with_stores(lambda stores: stores.meta.segment(project, key))
    typer.echo(json.dumps(segment_out(row).model_dump(), ensure_ascii=False, indent=2))


@segment_cli.command("recompute")
@handled
def segment_recompute(project: ProjectOpt, key: SegmentArg) -> None:
    """Recompute a segment's membership now (the only way an ONCE segment changes)."""
    out = dispatch(
        lambda c: c.call("POST", _p(project, f"/segments/{key}/recompute")),
        lambda app: (
            app.data.recompute_segment(project, key),
            segment_out(app.meta.segment(project, key)).model_dump(),
        )[1],
    )
    typer.echo("recomputed " + _segment_line(out))


@segment_cli.command("delete")
@handled
def segment_delete(project: ProjectOpt, key: SegmentArg) -> None:
    """Delete a segment and its membership snapshot."""
    dispatch(
        lambda c: c.call("DELETE", _p(project, f"/segments/{key}")), lambda app: app.data.delete_segment(project, key)
    )
    typer.echo(f"deleted segment {key}")
