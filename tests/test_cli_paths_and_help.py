"""`segport export -o` refuses a path it cannot write to as bad input (exit 2, one line, no job submitted, no
folder made), and no command's --help labels a flag `<bool>` as if it took a value (issue 16 item 7)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from segport.cli import cli
from tests.client_support import ThreadServer
from tests.conftest import PROJECT, SEGMENT, Seeded
from tests.expected import expected_csv


@pytest.fixture
def running(seeded: Seeded) -> Iterator[ThreadServer]:
    with ThreadServer(seeded.app, run_workers=True) as server:
        yield server


def export(server: ThreadServer, token: str, output: str) -> Result:
    args = ["export", "-P", PROJECT, "-s", SEGMENT, "-p", "usr_gender", "-q", "-o", output]
    return CliRunner().invoke(cli, args, env={"SEGPORT_SERVER": server.url, "SEGPORT_TOKEN": token})


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("missing/out.csv", "directory {tmp}/missing does not exist"),
        ("missing/deeper/out.csv", "directory {tmp}/missing does not exist"),
        ("missing/", "no such directory"),
        ("a_file/out.csv", "{tmp}/a_file is not a directory"),
        ("a_file/deeper/out.csv", "{tmp}/a_file is not a directory"),
    ],
)
def test_export_to_an_impossible_path_is_bad_input(
    running: ThreadServer, seeded: Seeded, tmp_path: Path, output: str, message: str
) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    before = sorted(tmp_path.rglob("*"))
    result = export(running, seeded.token, f"{tmp_path}/{output}")
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: -o {tmp_path}/{output}: {message.format(tmp=tmp_path)}\n"
    assert sorted(tmp_path.rglob("*")) == before  # no mkdir -p, no partial file
    assert seeded.app.queue.list(PROJECT) == []  # refused before anything was submitted


def test_export_into_an_existing_folder_or_file_still_works(
    running: ThreadServer, seeded: Seeded, tmp_path: Path
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "old.csv").write_text("replaced")
    for output in (f"{tmp_path}/sub/out.csv", f"{tmp_path}/old.csv", f"{tmp_path}/sub/"):
        result = export(running, seeded.token, output)
        assert result.exit_code == 0, result.stderr
        assert Path(result.stdout.strip()).read_bytes() == expected_csv(["usr_gender"])


def command_paths() -> list[list[str]]:
    """Every command and group of segport's CLI, as the words that name it."""
    root = typer.main.get_command(cli)
    found: list[list[str]] = []

    def walk(command: typer.core.TyperGroup | typer.core.TyperCommand, path: list[str]) -> None:
        found.append(path)
        if isinstance(command, typer.core.TyperGroup):
            ctx = typer.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, [*path, name])  # type: ignore[arg-type]

    walk(root, [])  # type: ignore[arg-type]
    return found


def test_the_walk_sees_every_command() -> None:
    paths = {" ".join(p) for p in command_paths()}
    assert {"", "serve", "worker", "demo", "export", "jobs show", "jobs list", "users import", "token create"} <= paths
    assert len(paths) >= 25


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "segport")
def test_help_shows_no_bool_metavar(path: list[str]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "--help" in result.output
    assert "<bool>" not in result.output and "BOOLEAN" not in result.output


def test_flags_show_no_type_but_options_still_do() -> None:
    def row(output: str, flag: str) -> str:
        (line,) = [line for line in output.splitlines() if f" {flag} " in line]
        return line

    top = CliRunner().invoke(cli, ["--help"]).output
    assert "<path>" in row(top, "--data-dir") and "<" not in row(top, "--verbose")
    export_help = CliRunner().invoke(cli, ["export", "--help"]).output
    assert "<float range>" in row(export_help, "--timeout") and "<" not in row(export_help, "--quiet")
    worker_help = CliRunner().invoke(cli, ["worker", "--help"]).output
    assert "--no-once" in row(worker_help, "--once") and "<" not in row(worker_help, "--once")
