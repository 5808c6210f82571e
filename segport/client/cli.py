"""`segport export` and `segport jobs show`: the client's commands, talking to a server over HTTP.

They need no data dir: only ``--server`` and ``--token`` (or ``SEGPORT_SERVER`` / ``SEGPORT_TOKEN``). Progress
goes to stderr (a live display on a terminal, one line per change otherwise); the written paths go to stdout,
unless ``-o -`` sends the file itself there. Exit codes follow segport's CLI: 0 done, 2 bad input, 3 auth,
4 not found or expired, 5 server busy, 6 job failed, 7 timed out, 8 server unreachable or download failed,
1 anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.filesize import decimal
from rich.progress import BarColumn, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from segport.client import Client, ClientError, Progress
from segport.client.core import DEFAULT_TIMEOUT_S, FILE_FORMATS, HEADER_TYPES

ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server", envvar="SEGPORT_SERVER", show_envvar=True, help="Base URL of the API, e.g. http://127.0.0.1:8000."
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="SEGPORT_TOKEN", show_envvar=True, help="API token (sent as Authorization: Bearer)."
    ),
]
RetriesOpt = Annotated[
    int,
    typer.Option(
        "--retries", min=0, help="Retries of one request (429/503, dropped connections) and resumes of one download."
    ),
]


def fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def export(
    project: Annotated[str, typer.Option("--project", "-P", help="Project id, e.g. WlGk4Daj.")],
    segment: Annotated[str | None, typer.Option("--segment", "-s", help="Segment key to export.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", "-t", help="Tag key to export (instead of --segment).")] = None,
    properties: Annotated[
        list[str] | None,
        typer.Option("--property", "-p", help="Key to export (repeat, or comma-separated): id_..., usr_..., tag_..."),
    ] = None,
    file_format: Annotated[str, typer.Option("--format", "-f", help="csv or json (JSON Lines).")] = "csv",
    header: Annotated[str, typer.Option("--header", help="CSV header: key or name (display names).")] = "key",
    output: Annotated[
        str, typer.Option("--output", "-o", help="File to write, a directory (server's file names), or - for stdout.")
    ] = ".",
    server: ServerOpt = None,
    token: TokenOpt = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Seconds to wait for the job.")
    ] = DEFAULT_TIMEOUT_S,
    retries: RetriesOpt = 4,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Export a segment (or a tag) to a file: submit, wait with progress, download."""
    if (segment is None) == (tag is None):
        raise fail("give exactly one of --segment or --tag", 2)
    if file_format not in FILE_FORMATS:
        raise fail(f"--format must be csv or json, not {file_format!r}", 2)
    if header not in HEADER_TYPES:
        raise fail(f"--header must be key or name, not {header!r}", 2)
    to_stdout = output == "-"
    if not to_stdout:
        _check_output(output)
    keys = [k.strip() for p in properties or [] for k in p.split(",") if k.strip()]
    display = Display(Console(stderr=True), quiet)
    with (
        _client(server, token, retries) as client,
        display,
        # -o -: the file is downloaded completely into a temporary folder, then copied to stdout
        tempfile.TemporaryDirectory(prefix="segport-") if to_stdout else contextlib.nullcontext(output) as dest,
    ):
        kind_export = client.export_segment if segment is not None else client.export_tag
        target = segment if segment is not None else tag
        assert target is not None  # exactly one of them was given (checked above)
        paths = _run(
            lambda: kind_export(
                project, target, keys, file_format, header, dest=dest, timeout=timeout, progress=display
            )
        )
        if to_stdout:
            display.stop()
            out = sys.stdout.buffer
            for path in paths:
                with open(path, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
            out.flush()
            return
    for path in paths:
        typer.echo(str(path))


def jobs_show(
    job_id: Annotated[str, typer.Argument(help="Job id, as the submit answered.")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    retries: RetriesOpt = 4,
) -> None:
    """Print a job's result (via the server's GET /v1/api/job/result/{id}) as JSON."""
    with _client(server, token, retries) as client:
        result = _run(lambda: client.job_result(job_id))
    typer.echo(json.dumps(dict(result.raw), ensure_ascii=False, indent=2))


def register(cli: typer.Typer, jobs: typer.Typer) -> None:
    """Add ``segport export`` and ``segport jobs show`` to segport's CLI."""
    cli.command("export")(export)
    jobs.command("show")(jobs_show)


def _check_output(output: str) -> None:
    """``-o`` is an existing directory, or a file in one: anything else is refused before a job is submitted
    (the client library would create the missing directories; the CLI takes a typo for one)."""
    path = Path(output)
    try:
        if path.is_dir():
            return
        if output.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)):
            raise fail(f"-o {output}: no such directory", 2)
        for folder in [*reversed(path.parent.parents), path.parent]:
            if not folder.exists():
                raise fail(f"-o {output}: directory {folder} does not exist", 2)
            if not folder.is_dir():
                raise fail(f"-o {output}: {folder} is not a directory", 2)
    except OSError as exc:  # e.g. a folder on the way that may not be read
        raise fail(f"-o {output}: {exc.strerror or exc}", 2) from None


def _client(server: str | None, token: str | None, retries: int) -> Client:
    if not server:
        raise fail("--server (or SEGPORT_SERVER) is required", 2)
    if not token:
        raise fail("--token (or SEGPORT_TOKEN) is required", 2)
    try:
        return Client(server, token, retries=retries, resumes=retries)
    except ClientError as exc:
        raise fail(exc.message, exc.exit_code) from None


def _run(call: Any) -> Any:
    try:
        return call()
    except ClientError as exc:
        raise fail(str(exc), exc.exit_code) from None
    except OSError as exc:
        raise fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), 1) from None


class Display:
    """Progress on stderr: a live rich display on a terminal, otherwise one plain line per change."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self.bar: RichProgress | None = None
        self.job_task: TaskID | None = None
        self.files: dict[str, TaskID] = {}
        self.stage: str | None = None
        self.file: tuple[str, int, float] | None = None  # plain mode: file being downloaded, bytes, elapsed

    def __enter__(self) -> Display:
        if self.live:
            self.bar = RichProgress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(bar_width=24),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self.bar.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __call__(self, event: Progress) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self._live(self.bar, event)
        else:
            self._plain(event)

    def _live(self, bar: RichProgress, event: Progress) -> None:
        if event.phase in ("submitted", "waiting"):
            label = f"job {event.job.id}" if event.job else "job"
            detail = event.stage or "submitted"
            if event.rows is not None:
                detail += f" · {event.rows:,} rows"
            if self.job_task is None:
                self.job_task = bar.add_task(label, total=None, detail=detail)
            finished = event.stage == "FINISH"
            bar.update(self.job_task, detail=detail, total=1 if finished else None, completed=1 if finished else 0)
        elif event.phase == "downloading" and event.file:
            task = self.files.get(event.file)
            if task is None:
                task = self.files[event.file] = bar.add_task(event.file, total=event.total, detail="")
            size = f"{decimal(event.downloaded)}" + (f" / {decimal(event.total)}" if event.total else "")
            bar.update(task, completed=event.downloaded, total=event.total, detail=size)

    def _plain(self, event: Progress) -> None:
        say = self.console.print
        if event.phase == "submitted" and event.job:
            say(f"submitted job {event.job.id} ({event.job.name})", highlight=False)
        elif event.phase == "waiting" and event.stage != self.stage:
            self.stage = event.stage
            rows = f": {event.rows:,} rows" if event.rows is not None else ""
            say(f"{event.stage} after {event.elapsed_s:.1f}s{rows}", highlight=False)
        elif event.phase == "downloading" and event.file:
            if self.file is None or self.file[0] != event.file:
                self._file_done()
                say(
                    f"downloading {event.file}" + (f" ({decimal(event.total)})" if event.total else ""), highlight=False
                )
            self.file = (event.file, event.downloaded, event.elapsed_s)
        elif event.phase == "done":
            self._file_done()
            say(f"done in {event.elapsed_s:.1f}s", highlight=False)

    def _file_done(self) -> None:
        if self.file is not None:
            name, size, _ = self.file
            self.console.print(f"downloaded {name}: {decimal(size)}", highlight=False)
            self.file = None
