"""A bad setting, from a flag or a SEGPORT_* variable, is one line naming it and exit 2, not a traceback."""

from __future__ import annotations

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
    result = runner.invoke(cli, ["--data-dir", str(tmp_path / "d"), "project", "list"],
                           env={"SEGPORT_MAX_PROPERTIES": "sixty"})
    assert result.exit_code == 2
    assert result.stderr.startswith("error: setting max_properties (SEGPORT_MAX_PROPERTIES): ")
    assert result.stderr.count("\n") == 1 and "'sixty'" in result.stderr
