"""The fixed part of a computation on ClickHouse (chdb, in process), kept small without changing an answer:
a membership table made by one ``CREATE TABLE … AS SELECT``, the tables a publish replaced dropped by the
collector's thread after the publish (never inside it, and never lost: the next publish's collection does what
an earlier one did not), and the event table's columns kept between computations until an event import
changes them (docs/clickhouse.md, "Snapshots instead of transactions")."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segport.domain.behaviour import BehaviourContext
from segport.domain.behaviour_parse import event_schema
from segport.domain.event_files import EventAttribute
from segport.domain.keys import Catalog, CatalogEntry, KeyKind, ValueType
from segport.engine.base import SegmentDefinition, Target
from segport.engine.clickhouse import snapshots as snaps
from segport.engine.clickhouse.collector import Collector
from segport.engine.clickhouse.engine import ClickHouseEngine

P = "cost1"
CATALOG = Catalog(
    [
        CatalogEntry("id_$basic_userId", KeyKind.IDENTITY, "user id", ValueType.STRING),
        CatalogEntry("usr_vip", KeyKind.PROPERTY, "vip", ValueType.STRING),
    ]
)
VIP = {"key": "usr_vip", "op": "eq", "value": "y"}
HOUR_MS = 3_600_000


def url(chdb_dir: Path, db: str) -> str:
    return f"chdb://{chdb_dir}?database={db}"


@pytest.fixture
def db() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def engine(chdb_dir: Path, db: str, tmp_path: Path) -> Iterator[ClickHouseEngine]:
    made = ClickHouseEngine(url(chdb_dir, db), scratch=tmp_path / "scratch", keep_s=0.0)
    made.ensure_project(P, CATALOG)
    users = tmp_path / "users.csv"
    users.write_text("id_$basic_userId,usr_vip\nU1,y\nU2,n\nU3,y\n", encoding="utf-8")
    made.import_users(P, CATALOG, users, "csv", "id_$basic_userId", [])
    yield made
    made.close()


def tables(engine: ClickHouseEngine, prefix: str) -> set[str]:
    rows = engine.client().query(f"SHOW TABLES FROM {engine.db}").result_rows
    return {str(r[0]) for r in rows if str(r[0]).startswith(prefix)}


def members(engine: ClickHouseEngine, key: str) -> set[int]:
    page = engine.members_page(P, Target("segment", key), [], 100, 0)
    return {int(r["gio_id"]) for r in page.rows}


def test_a_membership_table_is_a_merge_tree_of_ids_ordered_by_gio_id(engine: ClickHouseEngine) -> None:
    assert engine.compute_segment(P, SegmentDefinition("seg_vip", rule_tree=VIP, catalog=CATALOG)).total_users == 2
    none = {"key": "usr_vip", "op": "eq", "value": "nobody"}
    assert engine.compute_segment(P, SegmentDefinition("seg_none", rule_tree=none, catalog=CATALOG)).total_users == 0
    snap = engine.current(P)
    for key, want in (("seg_vip", {1, 3}), ("seg_none", set())):
        name = snap.members[key]
        kind, sorting = (
            engine.client()
            .query(
                "SELECT engine, sorting_key FROM system.tables WHERE database = {d:String} AND name = {t:String}",
                parameters={"d": engine.db_name, "t": name},
            )
            .result_rows[0]
        )
        assert (kind, sorting) == ("MergeTree", "gio_id")
        assert engine.column_types(name) == {"gio_id": "Int64"}  # as readers and exports expect it
        assert members(engine, key) == want


def test_a_computation_does_not_wait_for_the_collection(
    engine: ClickHouseEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The publish asks for a collection and returns; the replaced membership table goes once it has run."""
    engine.compute_segment(P, SegmentDefinition("seg_vip", rule_tree=VIP, catalog=CATALOG))
    assert engine.collected(10)
    first = engine.current(P).members["seg_vip"]
    gate, began = threading.Event(), threading.Event()
    real = snaps.collect

    def held(*args: Any, **kwargs: Any) -> list[str]:
        began.set()
        assert gate.wait(20), "the test never opened the gate"
        return real(*args, **kwargs)

    monkeypatch.setattr(snaps, "collect", held)
    done = threading.Event()

    def compute() -> None:
        engine.compute_segment(P, SegmentDefinition("seg_vip", rule_tree=VIP, catalog=CATALOG))
        done.set()

    worker = threading.Thread(target=compute)
    worker.start()
    try:
        assert began.wait(20), "no collection was asked for"
        # the computation has replied while its collection is still held
        assert done.wait(20), "compute_segment waited for the collection of replaced tables"
        assert first in tables(engine, "m_")  # not collected yet: a reader of the old snapshot may still read it
    finally:
        gate.set()
        worker.join(20)
    assert engine.collected(20)
    assert tables(engine, "m_") == {engine.current(P).members["seg_vip"]}
    assert members(engine, "seg_vip") == {1, 3}


def test_a_collection_that_never_ran_is_done_by_the_next_publish(
    engine: ClickHouseEngine, chdb_dir: Path, db: str, tmp_path: Path
) -> None:
    """The process stops before its collection ran (here: the collector is closed first): the tables stay
    until the next publish — of another process on the same database — collects them."""
    engine.compute_segment(P, SegmentDefinition("seg_vip", rule_tree=VIP, catalog=CATALOG))
    assert engine.collected(10)
    engine._collector.close()  # as if the process stopped right after its publish
    engine.compute_segment(P, SegmentDefinition("seg_vip", rule_tree=VIP, catalog=CATALOG))
    engine.compute_segment(P, SegmentDefinition("seg_vip", rule_tree=VIP, catalog=CATALOG))
    assert len(tables(engine, "m_")) == 3  # nothing collected
    engine.close()
    again = ClickHouseEngine(url(chdb_dir, db), scratch=tmp_path / "scratch2", keep_s=0.0)
    try:
        again.compute_segment(P, SegmentDefinition("seg_vip", rule_tree=VIP, catalog=CATALOG))
        assert again.collected(20)
        assert tables(again, "m_") == {again.current(P).members["seg_vip"]}
        assert len(tables(again, "u_")) == 1
    finally:
        again.close()


def test_replaced_tables_are_kept_for_readers_for_keep_s(chdb_dir: Path, db: str, tmp_path: Path) -> None:
    engine = ClickHouseEngine(url(chdb_dir, db), scratch=tmp_path / "scratch", keep_s=3600.0)
    try:
        engine.ensure_project(P, CATALOG)
        users = tmp_path / "users.csv"
        users.write_text("id_$basic_userId,usr_vip\nU1,y\n", encoding="utf-8")
        engine.import_users(P, CATALOG, users, "csv", "id_$basic_userId", [])
        old = engine.current(P)
        for _ in range(2):
            engine.compute_segment(P, SegmentDefinition("seg_vip", rule_tree=VIP, catalog=CATALOG))
        assert engine.collected(20)
        assert len(tables(engine, "m_")) == 2  # the replaced one is still readable
        total = engine.client().query(f"SELECT count() FROM {engine.source(old, Target('tag', 'usr_vip'))}")
        assert int(total.result_rows[0][0]) == 1  # the old snapshot's users table too
    finally:
        engine.close()


def _events(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_an_event_import_that_adds_an_attribute_is_seen_by_the_next_computation(
    engine: ClickHouseEngine, tmp_path: Path
) -> None:
    """The event table's columns are kept between computations; an import that adds a column replaces them."""
    now = int(time.time() * 1000)
    amount = [EventAttribute("amount", "amount", ValueType.INT)]
    both = [*amount, EventAttribute("coupon", "coupon", ValueType.STRING)]

    def compute(key: str, rule: dict[str, Any], attributes: list[EventAttribute]) -> set[int]:
        ctx = BehaviourContext(P, event_schema(["pay"], attributes), now, "UTC")
        engine.compute_segment(P, SegmentDefinition(key, rule_tree=rule, catalog=CATALOG, behaviour=ctx))
        return members(engine, key)

    first = [{"event": "pay", "time": now - HOUR_MS, "userId": "U1", "amount": 3}]
    engine.import_events(P, CATALOG, amount, _events(tmp_path / "e1.jsonl", first), "jsonl")
    paid = {"event": "pay", "where": {"key": "amount", "op": "gte", "value": 1}}
    assert compute("seg_paid", paid, amount) == {1}
    assert compute("seg_paid", paid, amount) == {1}  # the columns kept: the same answer

    second = [{"event": "pay", "time": now - HOUR_MS, "userId": "U2", "amount": 1, "coupon": "c1"}]
    engine.import_events(P, CATALOG, both, _events(tmp_path / "e2.jsonl", second), "jsonl")
    described = engine.client().query(f"DESCRIBE TABLE {engine.table(f'events_{P}')}").result_rows
    assert "coupon" in {str(r[0]) for r in described}
    coupon = {"event": "pay", "where": {"key": "coupon", "op": "eq", "value": "c1"}}
    assert compute("seg_coupon", coupon, both) == {2}
    assert compute("seg_paid", paid, both) == {1, 2}


def test_the_collector_runs_each_project_once_per_burst_and_stops_cleanly() -> None:
    runs: list[str] = []
    gate = threading.Event()

    def run(project: str) -> None:
        runs.append(project)
        if len(runs) == 1:
            assert gate.wait(10)
        if project == "bad":
            raise RuntimeError("ClickHouse went away")

    collector = Collector(run)
    collector.request("a")
    deadline = time.monotonic() + 10
    while not runs and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(5):  # asked again while the first run is held: one more run, not five
        collector.request("a")
    collector.request("bad")
    assert not collector.wait_idle(0.05)
    gate.set()
    assert collector.wait_idle(10)
    assert runs == ["a", "a", "bad"]
    collector.request("b")  # a failed run does not stop the thread
    assert collector.wait_idle(10)
    assert runs[-1] == "b"
    collector.close()
    collector.request("c")  # after close: nothing runs
    time.sleep(0.05)
    assert runs[-1] == "b"
