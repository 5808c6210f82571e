"""The engine's cheap paths stay correct: the cached data version moves with every write; a missing segment
membership is reported as such."""

from __future__ import annotations

from pathlib import Path

import pytest

from segport.domain.export import ExportSpec
from segport.engine.base import Target
from segport.errors import SegmentNotFound
from tests.conftest import PROJECT, USERS, Seeded, write_users_csv


def test_data_version_moves_after_an_import_even_when_read_before(seeded: Seeded, tmp_path: Path) -> None:
    engine = seeded.app.engine
    before = engine.data_version(PROJECT)
    assert engine.data_version(PROJECT) == before  # served from the cache now
    seeded.app.data.import_users(PROJECT, write_users_csv(tmp_path / "again.csv", USERS[:1]))
    after = engine.data_version(PROJECT)
    assert after > before
    assert engine.data_version("NoSuch01") == 0


def test_a_failed_import_leaves_the_data_version_alone(seeded: Seeded, tmp_path: Path) -> None:
    engine = seeded.app.engine
    before = engine.data_version(PROJECT)
    bad = tmp_path / "bad.csv"
    bad.write_text("id_$basic_userId,usr_age\nC001,not-a-number\n", encoding="utf-8")
    with pytest.raises(Exception, match="not a valid int"):
        seeded.app.data.import_users(PROJECT, bad)
    assert engine.data_version(PROJECT) == before


def test_export_of_a_segment_without_membership_is_segment_not_found(seeded: Seeded, tmp_path: Path) -> None:
    with pytest.raises(SegmentNotFound):
        seeded.app.engine.export(
            PROJECT, Target("segment", "seg_missing"), [], ExportSpec(), tmp_path, lambda parts: ["x.csv"]
        )
    with pytest.raises(SegmentNotFound):
        seeded.app.engine.count(PROJECT, Target("segment", "seg_missing"))
