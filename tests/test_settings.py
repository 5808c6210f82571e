"""Every setting is in the typed object, readable as SEGPORT_<NAME>, and listed in the settings table of docs/configuration.md."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import ValidationError

from segport.settings import TABLE_END, TABLE_START, Settings, settings_table, with_settings_table

ROOT = Path(__file__).resolve().parent.parent
CONFIG_PAGE = ROOT / "docs" / "configuration.md"


def test_documented_settings_table_matches_the_code() -> None:
    text = CONFIG_PAGE.read_text(encoding="utf-8")
    assert TABLE_START in text and TABLE_END in text
    block = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert block == settings_table(), (
        "docs/configuration.md settings table is stale: run `python -m segport.settings docs/configuration.md`"
    )
    assert with_settings_table(text) == text


def test_settings_table_lists_every_field_with_env_name_default_and_help() -> None:
    table = settings_table()
    for name, field in Settings.model_fields.items():
        assert f"| `{name}` | `SEGPORT_{name.upper()}` |" in table
        assert field.description, f"setting {name} has no help line"
        assert not field.is_required(), f"setting {name} has no default"


def _other_value(name: str, default: object, annotation: object) -> tuple[str, object]:
    """A valid non-default value for a field, as an env string and as the parsed value."""
    if typing.get_origin(annotation) is typing.Literal:
        choices = [c for c in typing.get_args(annotation) if c != default]
        if not choices:  # one backend so far: a wrong name must then be refused, which proves it is read
            return "no-such-backend", ValidationError
        return str(choices[0]), choices[0]
    if isinstance(default, bool):
        return str(not default).lower(), not default
    if isinstance(default, int):
        return str(default + 7), default + 7
    if isinstance(default, float):
        return str(default + 1.5), default + 1.5
    if isinstance(default, Path):
        return "/tmp/segport-elsewhere", Path("/tmp/segport-elsewhere")
    return "sqlite:///x.db" if name == "metadata_url" else "4GB", "sqlite:///x.db" if name == "metadata_url" else "4GB"


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_each_setting_is_read_from_its_environment_variable(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    field = Settings.model_fields[name]
    raw, parsed = _other_value(name, field.default, field.annotation)
    monkeypatch.setenv(f"SEGPORT_{name.upper()}", raw)
    if parsed is ValidationError:
        with pytest.raises(ValidationError, match=name):
            Settings()
        return
    assert getattr(Settings(), name) == parsed
