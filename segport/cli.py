"""`segport`: the entry point, and the operator commands for projects, tokens, jobs and running the service.

Each command builds the same App and calls one service. The typer app and the helpers live in
segport/cli_common.py; this module imports the other command modules (cli_data.py, client/cli.py) so that
importing it registers every command.

Errors a user can cause print one line (``error: ...``) and exit non-zero: 2 bad input, 3 auth, 4 not
found, 5 busy, 6 job failed, 7 timed out, 8 server unreachable or download failed, 1 anything else.
(``segport export`` and ``segport jobs show`` talk to a server over HTTP: see segport/client/cli.py.)
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from segport import (
    cli_data,  # noqa: F401 - registers the catalog/users/segment commands
    cli_datasources,  # noqa: F401 - registers the datasources commands
    cli_events,  # noqa: F401 - registers the events commands
    cli_tags,  # noqa: F401 - registers the tag commands
)
from segport.app import open_stores
from segport.cli_common import State, cli, fail, handled, jobs_cli, project_cli, settings, token_cli, with_stores
from segport.client.cli import register
from segport.datadir import private_umask
from segport.settings import Settings

__all__ = ["cli", "main", "run_server"]


# --- projects -------------------------------------------------------------------------------------
@project_cli.command("create")
@handled
def project_create(
    project_id: Annotated[str, typer.Argument(help="8 letters or digits, e.g. WlGk4Daj.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    timezone: Annotated[
        str,
        typer.Option(
            "--timezone",
            "--time-zone",
            help="IANA time zone: job names, file dates, and the days of event conditions (docs/behaviour.md).",
        ),
    ] = "Asia/Shanghai",
) -> None:
    """Create a project."""
    row = with_stores(lambda stores: stores.meta.create_project(project_id, name, timezone))
    typer.echo(f"created project {row.id} ({row.name}, {row.timezone})")


@project_cli.command("list")
@handled
def project_list() -> None:
    """List projects."""
    for p in with_stores(lambda stores: stores.meta.projects()):
        typer.echo(f"{p.id}\t{p.name}\t{p.timezone}")


# --- tokens ---------------------------------------------------------------------------------------
@token_cli.command("create")
@handled
def token_create(
    project: Annotated[
        list[str] | None, typer.Option("--project", "-P", help="Project the token may see (repeat).")
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="An admin token (all projects, admin API).")] = False,
    label: Annotated[str, typer.Option(help="A note on what the token is for.")] = "",
) -> None:
    """Create a token; it is printed once, as the last line."""
    token_id, raw = with_stores(lambda stores: stores.meta.create_token(project or [], admin=admin, label=label))
    scope = "admin" if admin else ", ".join(project or [])
    typer.echo(f"token {token_id} for {scope} (shown once; only its hash is stored):")
    typer.echo(raw)


@token_cli.command("revoke")
@handled
def token_revoke(token: Annotated[str, typer.Argument(help="The token, or its numeric id.")]) -> None:
    """Revoke a token; it stops working at once."""
    with_stores(lambda stores: stores.meta.revoke_token(token))
    typer.echo("revoked")


@token_cli.command("list")
@handled
def token_list() -> None:
    """List tokens (id, first characters, scope, state)."""
    for row, projects in with_stores(lambda stores: stores.meta.tokens()):
        state = "revoked" if row.revoked_at else "active"
        scope = "admin" if row.admin else ",".join(projects)
        typer.echo(f"{row.id}\t{row.hint}…\t{scope}\t{state}\t{row.label}")


# catalogue, users and segment commands live in segport/cli_data.py


# --- jobs -----------------------------------------------------------------------------------------
@jobs_cli.command("list")
@handled
def jobs_list(project: Annotated[str | None, typer.Option("--project", "-P")] = None) -> None:
    """List recent export jobs."""
    for j in with_stores(lambda stores: stores.queue.list(project)):
        typer.echo(f"{j.id}\t{j.name}\t{j.project_id}\t{j.target_key}\t{j.stage}\t{j.rows or ''}")


# --- running --------------------------------------------------------------------------------------
@cli.command()
@handled
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
) -> None:
    """Serve the HTTP API: API processes on one port, and an engine process running the exports."""
    run_server(settings(host=host, port=port))


def run_server(s: Settings) -> None:
    """Bind the public socket, then supervise the API processes and the engine process (segport/processes.py)."""
    from segport.http.admin import sweep_uploads
    from segport.processes import Supervisor
    from segport.remote import remove_server_file, write_server_file
    from segport.roles.parts import open_results

    sock = _listen(s)  # bind first: a busy port is a one-line error before anything is opened
    from segport.http.protocol import raise_descriptor_limit

    raise_descriptor_limit(s.max_connections + 512)  # the connections, plus the files and pools the app opens
    try:
        open_stores(s).close()  # migrate once here, not in every child at the same moment
        open_results(s).check()  # a missing bucket or refused credentials: one line now, not a failed export
        _preload()
        sweep_uploads(s.data_dir)
        write_server_file(s)
        typer.echo(f"segport serve {os.getpid()}: {s.api_process_count()} API processes on {s.host}:{s.port}")
        Supervisor(s, sock).run()
    finally:
        remove_server_file(s)
        sock.close()


def _preload() -> None:
    """Import what the children run before forking them: each then starts without a second of imports."""
    import uvicorn.lifespan.on  # noqa: F401
    import uvicorn.protocols.http.h11_impl  # noqa: F401

    import segport.roles.api  # noqa: F401
    import segport.roles.engine  # noqa: F401

    if settings().engine == "duckdb":
        import segport.engine.duckdb.engine  # noqa: F401


@cli.command()
@handled
def api(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
) -> None:
    """Serve the HTTP API alone; engine reads and imports go to SEGPORT_ENGINE_URL (a `segport worker --listen`)."""
    from segport.roles import api

    s = settings(host=host, port=port)
    sock = _listen(s)
    typer.echo(f"segport api on {s.base_url()} (engine: {s.engine_url or 'none: engine endpoints answer 503'})")
    try:
        api.run(s, sock)
    finally:
        sock.close()


def _listen(s: Settings) -> socket.socket:
    """The public socket on ``s.host:s.port``; a busy or refused address is a one-line error."""
    from segport.roles.sockets import listen_socket

    try:
        return listen_socket(s.host, s.port)
    except OSError as exc:
        raise fail(f"cannot listen on {s.host}:{s.port}: {exc.strerror or exc}", 1) from None


@cli.command()
@handled
def worker(
    once: Annotated[bool, typer.Option(help="Run queued jobs, then exit.")] = False,
    listen: Annotated[
        str | None, typer.Option(help="Also serve the engine's internal API on HOST:PORT (for `segport api`).")
    ] = None,
    uds: Annotated[str | None, typer.Option(help="Serve the engine's internal API on this Unix socket.")] = None,
) -> None:
    """Run export workers without the HTTP API (the engine process: with --listen/--uds, API processes use it)."""
    from segport.roles import engine
    from segport.worker import Worker

    if listen or uds:
        if listen:
            typer.echo(f"segport worker: engine API on http://{listen}")
        engine.run(settings(), uds=uds, listen=listen)
        return
    app = engine.build(settings())
    try:
        app.results.check()
        w = Worker(app)
        if once:
            typer.echo(f"ran {w.run_until_empty()} jobs")
            return
        w.start()
        typer.echo(f"worker {w.node} running {w.threads} threads; Ctrl-C stops")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            w.stop()
    finally:
        app.close()


@cli.command()
@handled
def demo(
    users: Annotated[int, typer.Option(help="Synthetic users to generate.")] = 100_000,
    host: Annotated[str | None, typer.Option(help="Listen address (default: SEGPORT_HOST, else 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default: SEGPORT_PORT, else 8000).")] = None,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Build the data dir, print, and exit.")] = False,
) -> None:
    """Build a demo data dir (project WlGk4Daj, segment seg_51activity), print a token and curl lines, serve."""
    from segport.demo import build_demo, curl_examples
    from segport.roles import inline

    s = settings(host=host, port=port)
    if State.data_dir is None:
        s = s.model_copy(update={"data_dir": Path("demo-data")})
    app = inline.build(s)
    try:
        typer.echo(f"building the demo in {s.data_dir} ({users} users)…")
        token = build_demo(app, users)
    finally:
        app.close()
    typer.echo("\n" + curl_examples(s.base_url(), token) + "\n")
    typer.echo(f"token for project WlGk4Daj:\n{token}")
    if not no_serve:
        typer.echo(
            f"serving on {s.base_url()} (web console: {s.base_url()}/console, OpenAPI page: {s.base_url()}/docs); "
            "Ctrl-C stops"
        )
        run_server(s)


# --- client commands (over HTTP, no data dir): segport export, segport jobs show ------------------------
register(cli, jobs_cli)


def main() -> None:
    private_umask()  # before anything is created: files 0600, folders 0700 (segport/datadir.py)
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
