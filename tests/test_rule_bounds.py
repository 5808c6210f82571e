"""Rule values the engine cannot hold, and rules nested past any limit, are one-line errors, not tracebacks."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from segport.app import App
from segport.cli import cli
from segport.errors import InvalidRule
from segport.services.data import SegmentSpec
from tests.conftest import PROJECT, Seeded

runner = CliRunner()


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, "99999999999999999999999", 1e30])
def test_int_rule_value_beyond_64_bits_is_an_invalid_rule_and_creates_nothing(
    app: App, seeded: Seeded, value: object
) -> None:
    rule = {"key": "usr_age", "op": "gt", "value": value}
    with pytest.raises(InvalidRule, match="not a valid int"):
        app.data.create_segment(PROJECT, SegmentSpec(key="seg_huge", name="huge", rule=rule))
    assert "seg_huge" not in {s.key for s in app.meta.segments(PROJECT)[0]}


def test_int_rule_value_at_the_64_bit_edges_is_accepted(app: App, seeded: Seeded) -> None:
    rule = {
        "and": [{"key": "usr_age", "op": "gt", "value": -(2**63)}, {"key": "usr_age", "op": "lt", "value": 2**63 - 1}]
    }
    app.data.create_segment(PROJECT, SegmentSpec(key="seg_edges", name="edges", rule=rule))
    assert app.meta.segment(PROJECT, "seg_edges").total_users == 6  # every user with an age


def test_rule_nested_past_the_json_parsers_depth_is_one_line_error(app: App, seeded: Seeded) -> None:
    data = app.settings.data_dir
    app.close()  # the CLI opens the data dir itself
    deep = '{"not": ' * 5000 + '{"key": "usr_age", "op": "is_null"}' + "}" * 5000
    result = runner.invoke(
        cli,
        [
            "--data-dir",
            str(data),
            "segment",
            "create",
            "--project",
            PROJECT,
            "--key",
            "seg_deep",
            "--name",
            "deep",
            "--rule",
            deep,
        ],
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: rule is too large") and result.stderr.count("\n") == 1
