"""What segport's command modules share: the typer app and its groups, the global options, and the helpers
every command uses (settings(), handled, with_app, with_stores, fail). segport/cli.py is the entry that imports the command
modules (cli.py's own commands, cli_data.py's, the client's); none of them imports it back.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import typer.core
from pydantic import ValidationError

from segport.app import EngineApp, Stores, open_stores
from segport.errors import InvalidParameter, SegportError
from segport.settings import Settings

_option_type: Callable[[typer.core.TyperOption, Any], str | None] | None = getattr(
    typer.core.TyperOption, "display_type_rich", None
)


def _flag_shows_no_type(option: typer.core.TyperOption, ctx: Any) -> str | None:
    # typer's rich help labels every flag (--help, -q, --once/--no-once) `<bool>`, as if it took a value; its
    # plain help already leaves a flag's type out, so the rich one is made to do the same
    assert _option_type is not None
    return None if option.is_flag and option.metavar is None else _option_type(option, ctx)


if _option_type is not None:  # a typer without it has its own help (tests/test_cli_paths_and_help.py checks)
    typer.core.TyperOption.display_type_rich = _flag_shows_no_type  # type: ignore[method-assign,assignment]

cli = typer.Typer(
    help="segport: self-hosted segment exports, wire-compatible with GrowingIO.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
project_cli = typer.Typer(help="Projects.", no_args_is_help=True)
token_cli = typer.Typer(help="API tokens.", no_args_is_help=True)
catalog_cli = typer.Typer(help="The catalogue of identities, user properties and tags.", no_args_is_help=True)
users_cli = typer.Typer(help="User profiles.", no_args_is_help=True)
segment_cli = typer.Typer(help="Segments.", no_args_is_help=True)
jobs_cli = typer.Typer(help="Export jobs.", no_args_is_help=True)
for sub, name in (
    (project_cli, "project"),
    (token_cli, "token"),
    (catalog_cli, "catalog"),
    (users_cli, "users"),
    (segment_cli, "segment"),
    (jobs_cli, "jobs"),
):
    cli.add_typer(sub, name=name)

F = TypeVar("F", bound=Callable[..., Any])
ProjectOpt = Annotated[str, typer.Option("--project", "-P", help="Project id, e.g. WlGk4Daj.")]


class State:
    data_dir: Path | None = None


@cli.callback()
def _main(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", envvar="SEGPORT_DATA_DIR", help="Data folder (default ./segport-data).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    State.data_dir = data_dir
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def settings(**overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if State.data_dir is not None:
        values["data_dir"] = State.data_dir
    try:
        return Settings(**values)
    except ValidationError as exc:  # a bad flag or SEGPORT_* variable: one line naming it, not a traceback
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"])
        raise InvalidParameter(
            f"setting {name} (SEGPORT_{name.upper()}): {err['msg']}, not {err.get('input')!r}"
        ) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def handled(fn: F) -> F:
    """Turn segport errors into one line on stderr and their exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SegportError as exc:
            raise fail(exc.message, exc.exit_code) from None
        except OSError as exc:
            raise fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), 1) from None

    return wrapper  # type: ignore[return-value]


def with_app(fn: Callable[[EngineApp], Any]) -> Any:
    """Run ``fn`` with the data dir open in this process, the engine included (the one-process form)."""
    from segport.roles import inline  # the engine and its role: not for the commands that never open it

    app = inline.build(settings())
    try:
        return fn(app)
    finally:
        app.close()


def with_stores(fn: Callable[[Stores], Any]) -> Any:
    """Run ``fn`` with the metadata store alone open (projects, tokens, jobs: no engine needed)."""
    stores = open_stores(settings())
    try:
        return fn(stores)
    finally:
        stores.close()
