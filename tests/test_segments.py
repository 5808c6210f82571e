"""Segments: every rule op against an independent Python evaluation, validation, FROM_FILES, schedulers."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.errors import ComputeFailed, InvalidRule, KeyInUse, SegmentNotFound, UnknownKey
from segport.roles.inline import create_app
from segport.scheduler import DailyRecompute
from segport.services.data import SegmentSpec
from tests.conftest import PROJECT, write_users_csv

ID = "id_$basic_userId"
CATALOG = """key,name,type
id_$basic_userId,用户ID,string
id_$device,设备,string[]
usr_city,城市,string
usr_age,年龄,int
usr_score,积分,double
usr_since,注册日期,date
tag_hobby,爱好,string[]
"""
CITIES = ["北京", "上海", "广州", "北京市", "", "São Paulo", "深圳 南山"]
HOBBIES = ["读书", "游泳", "跑步", "chess"]


def make_users(n: int = 160) -> list[dict[str, Any]]:
    rnd = random.Random(7)
    users = []
    for i in range(n):

        def maybe(value: Any) -> Any:
            return None if rnd.random() < 0.2 else value

        users.append(
            {
                ID: f"U{i:04d}",
                "id_$device": maybe(rnd.sample([f"d{j}" for j in range(6)], rnd.randint(1, 3))),
                "usr_city": maybe(rnd.choice(CITIES)),
                "usr_age": maybe(rnd.randint(-5, 80)),
                "usr_score": maybe(round(rnd.uniform(-10, 10), 2)),
                "usr_since": maybe(dt.date(2020, 1, 1) + dt.timedelta(days=rnd.randint(0, 900))),
                "tag_hobby": maybe(rnd.sample(HOBBIES, rnd.randint(1, 2))),
            }
        )
    return users


def to_csv_row(u: dict[str, Any]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for k, v in u.items():
        out[k] = None if v is None else ("||".join(v) if isinstance(v, list) else str(v))
    return out


@pytest.fixture
def loaded(app: App, tmp_path: Path) -> tuple[App, list[dict[str, Any]]]:
    app.meta.create_project(PROJECT, "示例项目")
    app.data.import_catalog_csv(PROJECT, CATALOG)
    users = make_users()
    cols = list(users[0])
    app.data.import_users(PROJECT, write_users_csv(tmp_path / "u.csv", [to_csv_row(u) for u in users], cols))
    return app, users


def members(app: App, key: str) -> set[str]:
    cur = app.engine._con.cursor()  # type: ignore[attr-defined]
    rows = cur.execute(f'SELECT u."{ID}" FROM "m_{PROJECT}_{key}" m JOIN "users_{PROJECT}" u USING (gio_id)').fetchall()
    return {r[0] for r in rows}


def norm(key: str, value: Any) -> Any:
    if key == "usr_since" and isinstance(value, str):
        return dt.date.fromisoformat(value)
    if key == "usr_age" and isinstance(value, str):
        return int(value)
    if key == "usr_score" and value is not None and not isinstance(value, (list, str)):
        return float(value)
    return value


def leaf(u: dict[str, Any], key: str, op: str, value: Any) -> bool:
    """The documented semantics, written independently of the SQL compiler."""
    v = u[key]
    multi = isinstance(v, list) or key in ("id_$device", "tag_hobby")
    if op == "is_null":
        return v is None or v == []
    if op == "not_null":
        return not (v is None or v == [])
    if v is None:
        return False
    value = [norm(key, x) for x in value] if isinstance(value, list) else norm(key, value)
    if multi:
        return {
            "eq": lambda: value in v,
            "ne": lambda: value not in v,
            "in": lambda: any(x in v for x in value),
            "not_in": lambda: not any(x in v for x in value),
            "contains": lambda: any(value in x for x in v),
        }[op]()
    return {
        "eq": lambda: v == value,
        "ne": lambda: v != value,
        "gt": lambda: v > value,
        "gte": lambda: v >= value,
        "lt": lambda: v < value,
        "lte": lambda: v <= value,
        "in": lambda: v in value,
        "not_in": lambda: v not in value,
        "between": lambda: value[0] <= v <= value[1],
        "contains": lambda: value in v,
    }[op]()


def evaluate(u: dict[str, Any], rule: dict[str, Any]) -> bool:
    if "and" in rule:
        return all(evaluate(u, r) for r in rule["and"])
    if "or" in rule:
        return any(evaluate(u, r) for r in rule["or"])
    if "not" in rule:
        return not evaluate(u, rule["not"])
    return leaf(u, rule["key"], rule["op"], rule.get("value"))


LEAVES: list[dict[str, Any]] = [
    {"key": "usr_city", "op": "eq", "value": "北京"},
    {"key": "usr_city", "op": "eq", "value": ""},
    {"key": "usr_city", "op": "ne", "value": "北京"},
    {"key": "usr_city", "op": "in", "value": ["上海", "深圳 南山", "São Paulo"]},
    {"key": "usr_city", "op": "not_in", "value": ["上海", ""]},
    {"key": "usr_city", "op": "contains", "value": "北京"},
    {"key": "usr_city", "op": "gt", "value": "北京"},
    {"key": "usr_city", "op": "between", "value": ["上", "北京市"]},
    {"key": "usr_city", "op": "is_null"},
    {"key": "usr_city", "op": "not_null"},
    {"key": "usr_age", "op": "eq", "value": 30},
    {"key": "usr_age", "op": "ne", "value": 30},
    {"key": "usr_age", "op": "gt", "value": 40},
    {"key": "usr_age", "op": "gte", "value": "40"},
    {"key": "usr_age", "op": "lt", "value": 0},
    {"key": "usr_age", "op": "lte", "value": 0.0},
    {"key": "usr_age", "op": "between", "value": [18, 30]},
    {"key": "usr_age", "op": "in", "value": [1, 2, 3, 50]},
    {"key": "usr_age", "op": "not_in", "value": [1, 2, 3, 50]},
    {"key": "usr_age", "op": "is_null"},
    {"key": "usr_score", "op": "gt", "value": 1.5},
    {"key": "usr_score", "op": "lte", "value": -2},
    {"key": "usr_score", "op": "between", "value": [-1, 1]},
    {"key": "usr_since", "op": "gte", "value": "2021-06-01"},
    {"key": "usr_since", "op": "between", "value": ["2020-03-01", "2020-12-31"]},
    {"key": "usr_since", "op": "eq", "value": "2020-01-01"},
    {"key": "usr_since", "op": "not_null"},
    {"key": "tag_hobby", "op": "eq", "value": "读书"},
    {"key": "tag_hobby", "op": "ne", "value": "读书"},
    {"key": "tag_hobby", "op": "in", "value": ["游泳", "chess"]},
    {"key": "tag_hobby", "op": "not_in", "value": ["游泳", "chess"]},
    {"key": "tag_hobby", "op": "contains", "value": "书"},
    {"key": "tag_hobby", "op": "is_null"},
    {"key": "tag_hobby", "op": "not_null"},
    {"key": "id_$device", "op": "eq", "value": "d1"},
]
TREES: list[dict[str, Any]] = [
    {"not": {"key": "usr_age", "op": "gte", "value": 50}},
    {"not": {"key": "tag_hobby", "op": "eq", "value": "读书"}},
    {"and": [{"key": "usr_city", "op": "contains", "value": "北"}, {"key": "usr_age", "op": "gt", "value": 20}]},
    {"or": [{"key": "usr_city", "op": "is_null"}, {"not": {"key": "usr_score", "op": "lt", "value": 0}}]},
    {
        "and": [
            {
                "or": [
                    {"key": "tag_hobby", "op": "in", "value": ["跑步"]},
                    {"key": "usr_since", "op": "lt", "value": "2020-06-01"},
                ]
            },
            {"not": {"not": {"key": "usr_age", "op": "not_null"}}},
        ]
    },
]


@pytest.mark.parametrize("rule", LEAVES + TREES, ids=lambda r: str(r)[:60])
def test_rule_matches_an_independent_evaluation(loaded: tuple[App, list[dict[str, Any]]], rule: dict[str, Any]) -> None:
    app, users = loaded
    row = app.data.create_segment(PROJECT, SegmentSpec(key="seg_t", name="测试", rule=rule))
    expected = {u[ID] for u in users if evaluate(u, rule)}
    assert members(app, "seg_t") == expected
    assert row.total_users == len(expected)
    assert 0 < len(expected) < len(users) or rule.get("op") in ("eq",)  # the data exercises both sides


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"key": "usr_nope", "op": "eq", "value": 1}, "unknown key 'usr_nope'"),
        ({"key": "usr_age", "op": "like", "value": 1}, "unknown op 'like'"),
        ({"key": "usr_age", "op": "eq", "value": "thirty"}, "value 'thirty' is not a valid int"),
        ({"key": "usr_age", "op": "eq", "value": True}, "is not a valid int"),
        ({"key": "usr_age", "op": "eq", "value": 1.5}, "is not a valid int"),
        ({"key": "usr_score", "op": "gt", "value": "high"}, "is not a valid double"),
        ({"key": "usr_since", "op": "gt", "value": "2021-02-30"}, "is not a valid date"),
        ({"key": "usr_city", "op": "eq", "value": 3}, "is not a valid string"),
        ({"key": "usr_city", "op": "eq", "value": None}, "is not a valid string"),
        ({"key": "usr_age", "op": "eq"}, "needs a 'value'"),
        ({"key": "usr_age", "op": "is_null", "value": 3}, "takes no value"),
        ({"key": "usr_age", "op": "between", "value": [1]}, "two items"),
        ({"key": "usr_age", "op": "in", "value": []}, "non-empty list"),
        ({"key": "usr_age", "op": "contains", "value": "1"}, "'contains' works on string keys"),
        ({"key": "tag_hobby", "op": "gt", "value": "a"}, "not defined for multi-valued"),
        ({"key": "usr_age", "op": "eq", "value": 1, "extra": 1}, "unexpected field"),
        ({"and": []}, "non-empty list"),
        ({"xor": [{"key": "usr_age", "op": "is_null"}]}, "unknown operator 'xor'"),
        ([1], "expected an object"),
        ({"not": {"not": {}}}, "expected exactly one of"),
    ],
)
def test_bad_rules_are_refused_at_create(loaded: tuple[App, list[dict[str, Any]]], rule: Any, message: str) -> None:
    app, _ = loaded
    with pytest.raises(InvalidRule, match=message.replace("(", r"\(").replace("[", r"\[")):
        app.data.create_segment(PROJECT, SegmentSpec(key="seg_bad", name="x", rule=rule))
    with pytest.raises(SegmentNotFound):
        app.meta.segment(PROJECT, "seg_bad")


def test_rule_text_must_be_json(loaded: tuple[App, list[dict[str, Any]]]) -> None:
    app, _ = loaded
    with pytest.raises(InvalidRule, match="not valid JSON"):
        app.data.create_segment(PROJECT, SegmentSpec(key="seg_bad", name="x", rule="{nope"))


def test_from_files_counts_unmatched_ids(loaded: tuple[App, list[dict[str, Any]]], tmp_path: Path) -> None:
    app, users = loaded
    ids = tmp_path / "ids.txt"
    ids.write_text("U0001\nU0002\n\n  U0003  \nU0002\nNOPE1\nNOPE2\n", encoding="utf-8")
    row = app.data.create_segment(PROJECT, SegmentSpec(key="seg_f", name="名单", members=ids, identity="$basic_userId"))
    assert (row.created_by, row.scheduler, row.total_users, row.unmatched) == ("FROM_FILES", "ONCE", 3, 2)
    assert members(app, "seg_f") == {"U0001", "U0002", "U0003"}
    # a multi-valued identity matches on any of its values
    devices = tmp_path / "devices.txt"
    devices.write_text("d1\nzz\n", encoding="utf-8")
    row = app.data.create_segment(
        PROJECT, SegmentSpec(key="seg_d", name="设备", members=devices, identity="id_$device")
    )
    assert members(app, "seg_d") == {u[ID] for u in users if u["id_$device"] and "d1" in u["id_$device"]}
    assert row.unmatched == 1
    with pytest.raises(UnknownKey, match="not an identity"):  # the identity usr_city (column id_usr_city)
        app.data.create_segment(PROJECT, SegmentSpec(key="seg_x", name="x", members=ids, identity="usr_city"))


def test_daily_segments_follow_imports_and_once_segments_do_not(
    loaded: tuple[App, list[dict[str, Any]]], tmp_path: Path
) -> None:
    app, _ = loaded
    rule = {"key": "usr_age", "op": "eq", "value": 999}
    app.data.create_segment(PROJECT, SegmentSpec(key="seg_daily", name="d", rule=rule))
    app.data.create_segment(PROJECT, SegmentSpec(key="seg_once", name="o", rule=rule, scheduler="ONCE"))
    app.data.import_users(
        PROJECT, write_users_csv(tmp_path / "n.csv", [{ID: "NEW", "usr_age": "999"}], [ID, "usr_age"])
    )
    assert members(app, "seg_daily") == {"NEW"}
    assert app.meta.segment(PROJECT, "seg_daily").total_users == 1
    assert members(app, "seg_once") == set()
    app.data.recompute_segment(PROJECT, "seg_once")
    assert members(app, "seg_once") == {"NEW"}
    assert app.meta.segment(PROJECT, "seg_once").detector_stage == "FINISH"


def test_daily_scheduler_recomputes_only_due_daily_segments(loaded: tuple[App, list[dict[str, Any]]]) -> None:
    app, _ = loaded
    rule = {"key": "usr_age", "op": "is_null"}
    app.data.create_segment(PROJECT, SegmentSpec(key="seg_daily", name="d", rule=rule))
    app.data.create_segment(PROJECT, SegmentSpec(key="seg_once", name="o", rule=rule, scheduler="ONCE"))
    assert DailyRecompute(app.data, 3600).run_once() == []  # computed just now: not due
    before = app.meta.segment(PROJECT, "seg_daily").detected_at
    assert DailyRecompute(app.data, 0.0001).run_once() == [(PROJECT, "seg_daily")]
    assert app.meta.segment(PROJECT, "seg_daily").detected_at > before  # type: ignore[operator]


def test_the_daily_scheduler_computes_a_projects_due_segments_together(
    loaded: tuple[App, list[dict[str, Any]]],
) -> None:
    app, users = loaded
    app.data.create_segment(
        PROJECT, SegmentSpec(key="seg_a", name="a", rule={"key": "usr_age", "op": "gte", "value": 40})
    )
    app.data.create_segment(PROJECT, SegmentSpec(key="seg_b", name="b", rule={"key": "usr_age", "op": "is_null"}))
    before = app.engine.data_version(PROJECT)
    assert sorted(DailyRecompute(app.data, 0.0001).run_once()) == [(PROJECT, "seg_a"), (PROJECT, "seg_b")]
    assert app.engine.data_version(PROJECT) == before + 1  # one engine operation, one snapshot: not one per segment
    assert members(app, "seg_a") == {u[ID] for u in users if u["usr_age"] is not None and u["usr_age"] >= 40}
    assert members(app, "seg_b") == {u[ID] for u in users if u["usr_age"] is None}
    for key in ("seg_a", "seg_b"):
        row = app.meta.segment(PROJECT, key)
        assert row.detector_stage == "FINISH" and row.total_users == len(members(app, key))


def test_removing_a_key_a_segment_uses_is_refused(loaded: tuple[App, list[dict[str, Any]]]) -> None:
    app, _ = loaded
    app.data.create_segment(
        PROJECT, SegmentSpec(key="seg_a", name="a", rule={"not": {"key": "usr_age", "op": "gt", "value": 3}})
    )
    with pytest.raises(KeyInUse, match="seg_a"):
        app.data.remove_catalog_key(PROJECT, "usr_age")
    app.data.delete_segment(PROJECT, "seg_a")
    app.data.remove_catalog_key(PROJECT, "usr_age")
    assert "usr_age" not in app.meta.catalog(PROJECT)
    with pytest.raises(SegmentNotFound):
        app.data.delete_segment(PROJECT, "seg_a")


def test_a_daily_id_list_picks_up_users_imported_later(
    loaded: tuple[App, list[dict[str, Any]]], tmp_path: Path
) -> None:
    app, _ = loaded
    ids = tmp_path / "ids.txt"
    ids.write_text("U0001\nLATER\n", encoding="utf-8")
    row = app.data.create_segment(PROJECT, SegmentSpec(key="seg_l", name="名单", members=ids, scheduler="DAILY"))
    assert (row.total_users, row.unmatched) == (1, 1)
    app.data.import_users(PROJECT, write_users_csv(tmp_path / "n.csv", [{ID: "LATER"}], [ID]))
    row = app.meta.segment(PROJECT, "seg_l")
    assert (row.total_users, row.unmatched) == (2, 0)
    assert members(app, "seg_l") == {"U0001", "LATER"}


def test_a_segment_whose_compute_fails_is_error_and_the_other_daily_segments_still_run(
    loaded: tuple[App, list[dict[str, Any]]],
) -> None:
    app, _ = loaded
    app.data.create_segment(PROJECT, SegmentSpec(key="seg_a", name="a", rule={"key": "usr_city", "op": "not_null"}))
    app.data.create_segment(PROJECT, SegmentSpec(key="seg_b", name="b", rule={"key": "usr_age", "op": "is_null"}))
    # the profile table lost a column the catalogue still has: the engine fails (not with a SegportError)
    app.engine.drop_column(PROJECT, "usr_city")
    assert DailyRecompute(app.data, 0.0001).run_once() == [(PROJECT, "seg_b")]
    broken = app.meta.segment(PROJECT, "seg_a")
    assert broken.detector_stage == "ERROR" and "usr_city" in (broken.detector_error or "")
    assert app.meta.segment(PROJECT, "seg_b").detector_stage == "FINISH"
    app.meta.update_segment(PROJECT, "seg_a", detector_stage="FINISH")
    with pytest.raises(ComputeFailed, match="usr_city"):
        app.data.recompute_segment(PROJECT, "seg_a")  # as the admin API and the CLI call it
    assert app.meta.segment(PROJECT, "seg_a").detector_stage == "ERROR"  # never left RUNNING
    _, token = app.meta.create_token([PROJECT])
    with TestClient(create_app(app, run_workers=False), raise_server_exceptions=False) as client:
        r = client.post(
            f"/v1/api/projects/{PROJECT}/segment_profiles/seg_a/computes", headers={"Authorization": f"Bearer {token}"}
        )
    assert r.status_code == 409, r.text  # E14: a clear error, never a 500
    assert r.json()["error"]["code"] == "COMPUTE_FAILED" and "usr_city" in r.json()["error"]["message"]
