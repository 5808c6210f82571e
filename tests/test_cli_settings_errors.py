"""Settings on the command line: a bad one is one line naming it (exit 2, not a traceback), and every command
reads SEGPORT_* the same way."""

from __future__ import annotations

import socket
from pathlib import Path

from typer.testing import CliRunner

from segport.cli import cli

runner = CliRunner()


def test_out_of_range_port_flag_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    result = runner.invoke(cli, ["--data-dir", str(tmp_path / "d"), "serve", "--port", "99999"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: setting port (SEGPORT_PORT): Input should be less than or equal to 65535, not 99999\n"
    )


def test_malformed_environment_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = runner.invoke(
        cli, ["--data-dir", str(tmp_path / "d"), "project", "list"], env={"SEGPORT_MAX_PROPERTIES": "sixty"}
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: setting max_properties (SEGPORT_MAX_PROPERTIES): ")
    assert result.stderr.count("\n") == 1 and "'sixty'" in result.stderr


def test_demo_takes_host_and_port_from_the_environment_like_every_setting(tmp_path: Path) -> None:
    result = runner.invoke(
        cli, ["--data-dir", str(tmp_path / "d"), "demo", "--users", "20", "--no-serve"], env={"SEGPORT_PORT": "9123"}
    )
    assert result.exit_code == 0, result.output
    assert (
        "'http://127.0.0.1:9123/v1/api/projects/WlGk4Daj/segment_profiles/seg_51activity/export_jobs'" in result.stdout
    )
    assert ":8000" not in result.stdout


def test_serve_on_a_busy_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "d"), "serve", "--port", str(port)])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert not (tmp_path / "d").exists()  # nothing was opened
