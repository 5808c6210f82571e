"""The engine process's operations are declared once (segport/engine/protocol.py): the server and the client are
made from that table, and every value an operation takes or answers survives the trip through JSON."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

import pytest

from segport.domain.behaviour import BehaviourContext, EventSchema
from segport.domain.event_files import EventAttribute
from segport.domain.keys import Catalog, CatalogEntry, KeyKind, ValueType
from segport.engine.base import (
    ComputeResult,
    EventImportReport,
    EventScan,
    ImportReport,
    MembersPage,
    ProfileAccess,
    SegmentDefinition,
    TagComputation,
    Target,
    UserEvents,
)
from segport.engine.client import EngineClient, RemoteEngine
from segport.engine.protocol import HEALTH, INTERRUPT, PROCESS_OPS, PROFILE_OPS, WAKE, Health, Op
from segport.engine.server import engine_router

CATALOG = Catalog(
    [
        CatalogEntry("id_$basic_userId", KeyKind.IDENTITY, "用户ID"),
        CatalogEntry("id_$anonymous_user", KeyKind.IDENTITY, "匿名", ValueType.STRING, multi=True),
        CatalogEntry("usr_age", KeyKind.PROPERTY, "年龄", ValueType.INT, description="in years"),
        CatalogEntry("tag_rfm", KeyKind.TAG, "会员等级"),
    ]
)
RULE = {"and": [{"key": "usr_age", "op": "gte", "value": 30}, {"not": {"key": "tag_rfm", "op": "is_null"}}]}

# one call of every operation, with values of every kind the table's types allow
CALLS: dict[str, tuple[tuple[Any, ...], Any]] = {
    "ensure_project": (("WlGk4Daj", CATALOG), None),
    "drop_column": (("WlGk4Daj", "usr_age"), None),
    "import_users": (
        (
            "WlGk4Daj",
            Catalog(list(CATALOG.entries.values()), ["tag_rfm"]),  # a computed tag travels with its catalogue
            Path("/data/uploads/upload-1.csv"),
            "csv",
            "id_$basic_userId",
            [
                SegmentDefinition.from_rule("seg_a", RULE, CATALOG),
                SegmentDefinition("seg_b", identity="id_$basic_userId"),
            ],
        ),
        ImportReport(3, 2, 1, 0.25, {"seg_a": 2}, {"seg_b": 1}),
    ),
    "load_member_ids": (("WlGk4Daj", "seg_b", Path("/data/uploads/ids.txt")), 7),
    "compute_segment": (("WlGk4Daj", SegmentDefinition.from_rule("seg_a", RULE, CATALOG)), ComputeResult(5, 1)),
    "compute_segments": (
        (
            "WlGk4Daj",
            [
                SegmentDefinition.from_rule("seg_a", RULE, CATALOG),
                SegmentDefinition("seg_b", identity="id_$basic_userId"),
            ],
        ),
        {"seg_a": ComputeResult(5), "seg_b": ComputeResult(2, 1)},
    ),
    "drop_segment": (("WlGk4Daj", "seg_a"), None),
    "compute_tag": (
        (
            "WlGk4Daj",
            TagComputation(
                "tag_pay",
                {"type": "AGGREGATED", "event": "pay", "measure": {"sum": "amount"}, "time": {"last_days": 30}},
                CATALOG,
                BehaviourContext(
                    "WlGk4Daj",
                    EventSchema(["pay"], Catalog([CatalogEntry("amount", KeyKind.PROPERTY, "金额", ValueType.INT)])),
                    1777593600000,
                    "Asia/Shanghai",
                ),
            ),
        ),
        ComputeResult(6),
    ),
    "data_version": (("WlGk4Daj",), 12),
    "count": (("WlGk4Daj", Target("tag", "tag_rfm")), 4),
    "members_page": (
        ("WlGk4Daj", Target("segment", "seg_a"), list(CATALOG.entries.values()), 20, 40),
        MembersPage(41, [{"gio_id": "1", "id_$anonymous_user": ["d1", "d2"], "usr_age": "30", "tag_rfm": None}]),
    ),
    "lookup_user": (("WlGk4Daj", CATALOG, CATALOG.entries["id_$basic_userId"], "C001"), {"gio_id": "1"}),
    "tag_counts": (("WlGk4Daj", [CATALOG.entries["tag_rfm"]]), {"tag_rfm": 3}),
    "import_events": (
        ("WlGk4Daj", CATALOG, [EventAttribute("amount", "金额", ValueType.INT)], Path("/data/ev.csv"), "csv"),
        EventImportReport(3, 3, 1, [EventAttribute("city", "city")], {"buy": ["amount", "city"]}, [7], 0.5),
    ),
    "user_events": (
        ("WlGk4Daj", CATALOG.entries["id_$basic_userId"], "C001", 0, 10**12, 10, 0, True),
        UserEvents(1, [{"time": 1, "event": "buy", "type": "CUSTOM", "attrs": {"amount": 3}, "std": {}}], False),
    ),
    "count_events": (("WlGk4Daj", 0, 10**12), EventScan(5, 8192)),
    "health": ((), Health(1234, True)),
    "wake": ((), None),
    "interrupt": (("kqQeWeGr", "cancelled"), True),
}


def through_json(value: Any) -> Any:
    return json.loads(json.dumps(value, ensure_ascii=False))


def plain(value: Any) -> Any:
    """``value`` with each catalogue as its entries (a Catalog has no equality of its own)."""
    if isinstance(value, Catalog):
        return ("Catalog", list(value.entries.values()), sorted(value.computed))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, [plain(getattr(value, f.name)) for f in dataclasses.fields(value)])
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def test_every_profile_method_is_an_operation_and_the_remote_engine_has_each() -> None:
    methods = {n for n, _ in inspect.getmembers(ProfileAccess, inspect.isfunction) if not n.startswith("_")} - {"close"}
    assert {op.name for op in PROFILE_OPS} == methods
    for op in PROFILE_OPS:
        remote = getattr(RemoteEngine, op.name)
        assert remote is not getattr(ProfileAccess, op.name) and remote.__name__ == op.name


def test_the_table_names_each_operation_once_and_every_one_is_called_here() -> None:
    names = [op.name for op in (*PROFILE_OPS, *PROCESS_OPS)]
    assert len(names) == len(set(names)) and set(names) == set(CALLS)


@pytest.mark.parametrize("op", [*PROFILE_OPS, *PROCESS_OPS], ids=lambda op: op.name)
def test_an_operation_s_arguments_and_answer_survive_json(op: Op) -> None:
    args, answer = CALLS[op.name]
    sent = op.arguments(through_json(op.request(args, {})))
    expected = inspect.signature(op.method).bind(None, *args).arguments
    expected.pop("self")
    assert plain(sent) == plain(expected)
    assert plain(op.result(through_json(op.answer(answer)))) == plain(answer)


def test_a_segment_rule_travels_as_its_checked_tree_with_its_catalogue() -> None:
    op = next(op for op in PROFILE_OPS if op.name == "compute_segment")
    body = through_json(op.request(CALLS["compute_segment"][0], {}))
    assert body["segment"]["rule_tree"] == RULE
    assert [e["key"] for e in body["segment"]["catalog"]] == list(CATALOG.entries)
    assert isinstance(op.arguments(body)["segment"].catalog, Catalog)


def test_a_relative_path_travels_as_the_absolute_path_of_the_callers_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    op = next(op for op in PROFILE_OPS if op.name == "load_member_ids")
    assert op.request(("WlGk4Daj", "seg_b", Path("ids.txt")), {})["path"] == str(tmp_path / "ids.txt")


def test_progress_stays_in_the_calling_process_and_nothing_else_is_dropped() -> None:
    op = next(op for op in PROFILE_OPS if op.name == "import_users")
    args, _ = CALLS["import_users"]
    body = op.request(args, {"progress": print})
    assert "progress" not in body and len(body) == len(args)


def test_a_value_that_cannot_travel_is_refused_when_it_is_sent() -> None:
    op = next(op for op in PROFILE_OPS if op.name == "data_version")
    with pytest.raises(TypeError, match="cannot travel"):
        op.request((object(),), {})


def test_every_operation_has_a_deadline_and_the_process_s_own_answer_within_two_seconds() -> None:
    assert [op.deadline_s for op in (HEALTH, WAKE, INTERRUPT)] == [2.0, 2.0, 2.0]
    deadlines = {op.name: op.deadline_s for op in PROFILE_OPS}
    assert all(0 < d <= 3600 for d in deadlines.values()), deadlines
    assert deadlines["members_page"] == 30.0 and deadlines["import_users"] == 3600.0
    reads = {op.name for op in PROFILE_OPS if op.read}
    assert reads == {
        "members_page",
        "count",
        "lookup_user",
        "tag_counts",
        "data_version",
        "user_events",
        "count_events",
    }


class Process:
    def health(self) -> Health:
        return Health(1, False)

    def wake(self) -> None:
        return None

    def interrupt(self, job_id: str, reason: str) -> bool:
        return False


def test_the_server_has_one_route_per_operation() -> None:
    router = engine_router(RemoteEngine(EngineClient("")), Process())  # routes only: nothing is called
    paths = sorted(route.path for route in router.routes)  # type: ignore[attr-defined]
    assert paths == sorted(f"/engine/{op.name}" for op in (*PROFILE_OPS, *PROCESS_OPS))
