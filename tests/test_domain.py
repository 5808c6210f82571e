"""Pure domain rules: key grammar, naming, the transition table."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from segport.domain.jobs import TRANSITIONS, Stage, TargetKind, check_transition
from segport.domain.keys import KeyKind, canonical_key, identity_column, parse_key
from segport.domain.naming import new_job_id, new_job_name, parse_result_path, result_file_names, result_uri
from segport.errors import InvalidKey, InvalidTransition


def test_job_name_follows_growingio_in_project_timezone() -> None:
    # 2022-05-23 17:36:58.534 UTC is 01:36:58.534 on 05-24 in Shanghai: second 5818 of the day
    now = datetime(2022, 5, 23, 17, 36, 58, 534000, tzinfo=UTC)
    name = new_job_name(TargetKind.SEGMENT, now, "Asia/Shanghai")
    assert re.fullmatch(r"DES-202205240136-5818534\d{6}", name), name
    assert new_job_name(TargetKind.TAG, now, "UTC").startswith("DET-202205231736-63418534")


def test_job_ids_are_8_alphanumerics() -> None:
    ids = {new_job_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9]{8}", i) for i in ids)


def test_seed_uri_is_reproduced_exactly() -> None:
    name = result_file_names("zxm_用户_字符串_加密", "2022-04-26", "csv", 1)[0]
    assert result_uri("DES-202205240136-5818534160000", name) == (
        "%2Fjobs%2Fresults%2FDES-202205240136-5818534160000%2Fzxm_%E7%94%A8%E6%88%B7_%E5%AD%97%E7%AC%A6%E4%B8%B2_"
        "%E5%8A%A0%E5%AF%86_2022-04-26_UserList.csv"
    )


@pytest.mark.parametrize(
    ("raw", "safe"),
    [("a/b", "a_b"), ('x"y', "x_y"), ("..", "segment"), ("a\nb", "a_b"), ("c:\\d", "c__d"), ("会员 列表", "会员 列表")],
)
def test_segment_names_are_made_safe_in_file_names(raw: str, safe: str) -> None:
    assert result_file_names(raw, "2026-01-01", "csv", 1) == [f"{safe}_2026-01-01_UserList.csv"]


def test_parts_are_numbered() -> None:
    assert result_file_names("s", "2026-01-01", "json", 2) == [
        "s_2026-01-01_UserList_1.json",
        "s_2026-01-01_UserList_2.json",
    ]


def test_result_path_parsing_accepts_only_result_uris() -> None:
    assert parse_result_path("/jobs/results/DES-202205240136-1/a.csv") == ("DES-202205240136-1", "a.csv")
    assert parse_result_path("%2Fjobs%2Fresults%2FDES-202205240136-1%2Fa.csv") == ("DES-202205240136-1", "a.csv")
    for bad in [
        "/jobs/results/../x",
        "/etc/passwd",
        "/jobs/results/DES-1/a.csv",
        "/jobs/results/DES-202205240136-1/a/b",
    ]:
        assert parse_result_path(bad) is None


def test_key_grammar() -> None:
    assert parse_key("ids_$basic_userId") == (KeyKind.IDENTITY, "id_$basic_userId")
    assert parse_key("usr_gender") == (KeyKind.PROPERTY, "usr_gender")
    assert parse_key("tag_rfm") == (KeyKind.TAG, "tag_rfm")
    assert canonical_key("ids_x") == "id_x"
    assert identity_column("$basic_userId") == "id_$basic_userId"
    for bad in ["gender", "usr_", "usr_1abc", 'usr_a"b', "usr_a b", "x_" + "a" * 120]:
        with pytest.raises(InvalidKey):
            parse_key(bad)


def test_transition_table_is_the_only_way() -> None:
    check_transition(Stage.NONE, Stage.RUNNING)
    check_transition(Stage.RUNNING, Stage.NONE)  # lease lost
    with pytest.raises(InvalidTransition):
        check_transition(Stage.FINISH, Stage.RUNNING)
    with pytest.raises(InvalidTransition):
        check_transition(Stage.NONE, Stage.FINISH)
    assert TRANSITIONS[Stage.EXPIRED] == frozenset()


@pytest.mark.parametrize("name", ["名" * 200, "a" * 300, "é" * 200, "名" * 49 + "ab" + "名" * 10, "x" * 149 + "名"])
def test_result_file_names_fit_in_255_bytes_and_are_cut_between_characters(name: str) -> None:
    (file_name,) = result_file_names(name, "2026-11-29", "json.gz", 1)
    assert len(file_name.encode()) + len(".bom") <= 255
    stem = file_name.removesuffix("_2026-11-29_UserList.json.gz")
    assert name.startswith(stem) and len(stem.encode()) <= 150
