"""Tags computed from events, on both engines: every tag type, pick, measure and window, on seeded random event sets
with ties, window edges and users without events, computed by the engine into the tag's column and read back as
an export reads it, equal to the plain-Python reference (tests/tag_reference.py). Both engines equal the reference,
so they equal each other."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from segport.app import App
from segport.domain.behaviour import DAY_MS, HOUR_MS, BehaviourContext
from segport.domain.behaviour_parse import parse_tag_definition
from segport.domain.keys import ValueType
from segport.domain.tags import value_type
from segport.engine.base import TagComputation, Target
from segport.services.data import catalog_entry
from segport.services.events import EventService
from segport.services.tags import TagService
from tests.conftest import ENGINES, PROJECT
from tests.tag_reference import Event, tag_values

T0 = 1777593600000  # 2026-05-01T00:00:00Z
NOW = T0 + 9 * DAY_MS + 4 * HOUR_MS  # 2026-05-10T12:00:00+08:00
SHANGHAI_MIDNIGHTS = [T0 - 8 * HOUR_MS + k * DAY_MS for k in range(12)]
NEW_YORK_MIDNIGHTS = [T0 + 4 * HOUR_MS + k * DAY_MS for k in range(12)]  # EDT, UTC-4
EDGES = [*SHANGHAI_MIDNIGHTS, *NEW_YORK_MIDNIGHTS, NOW, NOW + 1, NOW - 1, NOW - 48 * HOUR_MS, NOW - 7 * DAY_MS]
CITIES = ["北京", "上海", "广州"]

WHERE_BIG = {"key": "amount", "op": "gte", "value": 60}
WHERE_CITY = {"or": [{"key": "city", "op": "eq", "value": "北京"}, {"not": {"key": "price", "op": "lt", "value": 2}}]}
DEFINITIONS: list[dict[str, Any]] = [
    {"type": "AGGREGATED", "event": "buy"},
    {"type": "AGGREGATED", "event": "buy", "measure": "count", "time": {"last_days": 3}},
    {"type": "AGGREGATED", "event": "buy", "measure": "distinct_days", "time": {"last_days": 7}},
    {"type": "AGGREGATED", "event": "view", "measure": "distinct_days"},
    {"type": "AGGREGATED", "event": "buy", "measure": {"sum": "amount"}, "where": WHERE_CITY},
    {"type": "AGGREGATED", "event": "buy", "measure": {"sum": "price"}, "time": {"last_hours": 48}},
    {"type": "AGGREGATED", "event": "buy", "measure": {"avg": "amount"}},
    {"type": "AGGREGATED", "event": "buy", "measure": {"avg": "price"}, "time": {"since": "2026-05-05"}},
    {"type": "AGGREGATED", "event": "buy", "measure": {"min": "price"}},
    {"type": "AGGREGATED", "event": "view", "measure": {"max": "amount"}, "where": WHERE_BIG},
    {"type": "AGGREGATED", "event": "buy", "measure": {"distinct": "city"}, "time": {"between": ["2026-05-02", "2026-05-06"]}},
    {"type": "ATTRIBUTION_ATTRIBUTE", "event": "buy", "attribute": "city", "pick": "first"},
    {"type": "ATTRIBUTION_ATTRIBUTE", "event": "buy", "attribute": "city", "pick": "last", "time": {"last_days": 5}},
    {"type": "ATTRIBUTION_ATTRIBUTE", "event": "view", "attribute": "amount", "pick": "last"},
    {"type": "ATTRIBUTION_ATTRIBUTE", "event": "buy", "attribute": "price", "pick": "first", "where": WHERE_BIG},
    {"type": "TOP_N_ATTRIBUTE", "event": "buy", "attribute": "city", "pick": "most_frequent"},
    {"type": "TOP_N_ATTRIBUTE", "event": "view", "attribute": "amount", "pick": "most_frequent", "time": {"last_days": 4}},
    {"type": "TOP_N_ATTRIBUTE", "event": "buy", "attribute": "amount", "pick": "max", "time": {"last_hours": 100}},
    {"type": "TOP_N_ATTRIBUTE", "event": "buy", "attribute": "city", "pick": "min"},
    {"type": "HORIZONTAL", "source": "tag_t0", "layers": [{"name": "高", "gte": 6}, {"name": "中", "gte": 2}, {"name": "低"}]},
    {"type": "HORIZONTAL", "source": "tag_t6", "layers": [{"name": "big", "gte": 100.5}, {"name": "small", "gte": 0}]},
    {
        "type": "HORIZONTAL",
        "source": {"event": "buy", "measure": {"sum": "amount"}, "time": {"last_days": 7}},
        "layers": [{"name": "A", "gte": 300}, {"name": "B", "gte": 1}, {"name": "C"}],
    },
    {
        "type": "HORIZONTAL",
        "source": {"event": "view", "measure": {"max": "price"}},
        "layers": [{"name": "hi", "gte": 5}, {"name": "lo"}],
    },
]  # fmt: skip


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def random_events(rng: random.Random, users: list[int]) -> list[Event]:
    """Events of every user but the last (who has none), many on shared instants (ties) and window edges."""
    out: list[Event] = []
    for gio in users[:-1]:
        instants = rng.sample(EDGES, 4) + [rng.randrange(T0 - DAY_MS, NOW + DAY_MS) for _ in range(3)]
        for _ in range(rng.randrange(0, 14)):
            attrs = {
                "amount": rng.choice([None, 0, 5, 60, 61, 200, rng.randrange(0, 300)]),
                "price": rng.choice([None, 0.25, 1.5, 2.0, rng.randrange(0, 40) * 0.25]),
                "city": rng.choice([None, *CITIES]),
            }
            out.append((gio, rng.choice(instants), rng.choice(["buy", "buy", "view"]), attrs))
    return out


def write_events(path: Path, events: list[Event], ids: dict[int, str]) -> Path:
    lines = ["event,time,userId,amount,price,city"]
    for gio, t, name, a in events:
        cells = [name, str(t), ids[gio], *("" if a[k] is None else str(a[k]) for k in ("amount", "price", "city"))]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_values(app: App, key: str, kind: ValueType) -> dict[int, Any]:
    """The tag's holders and values, as a page of E7 reads them (rendered text, parsed back)."""
    entry = app.meta.catalog(PROJECT).entries[key]
    page = app.engine.members_page(PROJECT, Target("tag", key), [entry], 1000, 0)
    parse = {ValueType.INT: int, ValueType.DOUBLE: float}.get(kind, str)
    return {int(r["gio_id"]): parse(r[key]) for r in page.rows}


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("tz", ["Asia/Shanghai", "America/New_York"])
def test_every_tag_type_equals_the_reference(engine_name: str, seeded: Any, tmp_path: Path, seed: int, tz: str) -> None:
    app = seeded.app
    catalog = app.meta.catalog(PROJECT)
    identity = catalog.entries["id_$basic_userId"]
    ids = {}
    for n in range(1, 8):
        user = app.engine.lookup_user(PROJECT, catalog, identity, f"C00{n}")
        assert user is not None
        ids[int(user["gio_id"])] = f"C00{n}"
    users = sorted(ids)
    events = EventService(app.meta, app.engine, app.data)
    for key, kind in (("amount", "int"), ("price", "double"), ("city", "string")):
        events.declare(PROJECT, key, key, kind)
    evs = random_events(random.Random(seed), users)
    events.import_events(PROJECT, write_events(tmp_path / "e.csv", evs, ids))

    schema = TagService(app.data).event_schema(PROJECT)
    ctx = BehaviourContext(PROJECT, schema, NOW, tz)
    known: dict[str, dict[int, Any]] = {}
    for i, defn in enumerate(DEFINITIONS):
        key = f"tag_t{i}"
        parsed = parse_tag_definition(defn, "definition", schema, app.meta.catalog(PROJECT))
        kind = value_type(parsed, schema)
        app.data.add_catalog_entries(PROJECT, [catalog_entry(key, key, kind.value)])
        result = app.engine.compute_tag(PROJECT, TagComputation(key, defn, app.meta.catalog(PROJECT), ctx))
        want = tag_values(defn, evs, users, NOW, tz, known)
        known[key] = want
        holders = {u: v for u, v in want.items() if v is not None}
        assert read_values(app, key, kind) == holders, (i, defn)
        assert result.total_users == len(holders)
    # the cases the random events must have covered, or the comparison proved less than it says
    assert any(v for v in known["tag_t0"].values()) and known["tag_t0"][users[-1]] == 0
    assert known["tag_t6"][users[-1]] is None


def test_a_recompute_replaces_every_value_and_users_without_events_lose_theirs(
    engine_name: str, seeded: Any, tmp_path: Path
) -> None:
    app = seeded.app
    events = EventService(app.meta, app.engine, app.data)
    events.declare(PROJECT, "city", "city", "string")
    f = tmp_path / "e.csv"
    f.write_text(f"event,time,userId,city\nbuy,{T0},C001,北京\nbuy,{T0 + 1},C002,上海\n", encoding="utf-8")
    events.import_events(PROJECT, f)
    schema = TagService(app.data).event_schema(PROJECT)
    defn = {"type": "ATTRIBUTION_ATTRIBUTE", "event": "buy", "attribute": "city", "pick": "last"}
    app.data.add_catalog_entries(PROJECT, [catalog_entry("tag_city", "城市", "string")])
    compute = TagComputation("tag_city", defn, app.meta.catalog(PROJECT), BehaviourContext(PROJECT, schema, NOW, "UTC"))
    before = app.engine.data_version(PROJECT)
    assert app.engine.compute_tag(PROJECT, compute).total_users == 2
    assert app.engine.data_version(PROJECT) > before
    assert set(read_values(app, "tag_city", ValueType.STRING).values()) == {"北京", "上海"}
    # the window moves past both events: nobody holds a value any more
    later = TagComputation("tag_city", {**defn, "time": {"since": "2026-06-01"}}, compute.catalog, compute.behaviour)
    assert app.engine.compute_tag(PROJECT, later).total_users == 0
    assert read_values(app, "tag_city", ValueType.STRING) == {}


def test_a_project_without_events_gives_zero_measures_to_everyone_and_nothing_else(
    engine_name: str, seeded: Any
) -> None:
    app = seeded.app
    schema = TagService(app.data).event_schema(PROJECT)
    schema = type(schema)(["pay"], schema.attributes)  # a name the catalogue knows, no event table yet
    ctx = BehaviourContext(PROJECT, schema, NOW, "Asia/Shanghai")
    cases = {
        "tag_n": ({"type": "AGGREGATED", "event": "pay"}, "int", {u: 0 for u in range(1, 8)}),
        "tag_first": ({"type": "ATTRIBUTION_ATTRIBUTE", "event": "pay", "attribute": "$path", "pick": "first"}, "string", {}),
        "tag_layer": (
            {"type": "HORIZONTAL", "source": {"event": "pay"}, "layers": [{"name": "有", "gte": 1}, {"name": "无"}]},
            "string",
            {u: "无" for u in range(1, 8)},
        ),
    }  # fmt: skip
    for key, (defn, kind, want) in cases.items():
        app.data.add_catalog_entries(PROJECT, [catalog_entry(key, key, kind)])
        result = app.engine.compute_tag(PROJECT, TagComputation(key, defn, app.meta.catalog(PROJECT), ctx))
        assert read_values(app, key, ValueType(kind)) == want and result.total_users == len(want), key
