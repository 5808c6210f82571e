"""The loader: batches the collect endpoints committed to the spool reach the event store, once, through an engine
restart and through a crash between the engine's commit and the spool's mark_loaded; login user attributes
become usr_ properties. On DuckDB here; tests/test_event_loader_clickhouse.py runs them on ClickHouse."""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.loader import EventLoader
from segport.roles.inline import build
from segport.services.events import EventService
from segport.settings import Settings
from segport.store.events import EventSpool
from tests.conftest import PROJECT, auth

T = 1777593600000  # 2026-05-01T00:00:00Z


def batch(n: int, user: str = "C001", start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "t": T + (start + i) * 1000,
            "type": "CUSTOM",
            "event": "campaign_join",
            "user_id": user,
            "user_key": None,
            "device_id": f"dev-{user}",
            "attrs": {"channel": "wechat", "step": str(i)},
            "std": {"platform": "python"},
        }
        for i in range(n)
    ]


def loader(app: App, tmp_path: Path) -> EventLoader:
    return EventLoader(EventService(app.meta, app.engine, app.data), EventSpool(app.meta), tmp_path / "scratch", 1.0)


def stored(app: App) -> int:
    return app.engine.count_events(PROJECT, 0, 2 * T).events


def test_spooled_batches_reach_the_event_store_and_read_back(seeded: Any, tmp_path: Path, client: TestClient) -> None:
    app = seeded.app
    spool = EventSpool(app.meta)
    assert spool.append(PROJECT, "ds1", "k1", batch(3))
    assert spool.append(PROJECT, "ds1", "k2", batch(2, "NEW9", start=10))
    done = loader(app, tmp_path).run_once()
    assert (done.batches, done.events, done.set_aside) == (2, 5, 0)
    assert spool.pending() == [] and stored(app) == 5
    page = client.get(
        f"/v1/api/projects/{PROJECT}/users/$basic_userId/C001/events?order=asc", headers=auth(seeded.token)
    ).json()
    assert [(v["event"], v["eventType"], v["attributes"]["step"]) for v in page["values"]] == [
        ("campaign_join", "CUSTOM", "0"),
        ("campaign_join", "CUSTOM", "1"),
        ("campaign_join", "CUSTOM", "2"),
    ]
    assert page["values"][0]["fields"] == {"platform": "python"}
    # a user first seen in an event is a user: found by its login id and its device id alike
    by_id = client.get(f"/v1/api/projects/{PROJECT}/users/$basic_userId/NEW9", headers=auth(seeded.token)).json()
    assert by_id["gioId"] != "0"
    assert loader(app, tmp_path).run_once().batches == 0  # nothing pending: nothing loaded again


def test_a_crash_between_the_engine_commit_and_mark_loaded_stores_nothing_twice(
    seeded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = seeded.app
    spool = EventSpool(app.meta)
    spool.append(PROJECT, "ds1", "k1", batch(4))
    crashing = loader(app, tmp_path)

    def crash(_ids: Any) -> None:
        raise SystemExit("killed after the engine committed")

    monkeypatch.setattr(crashing.spool, "mark_loaded", crash)
    with pytest.raises(SystemExit):
        crashing.run_once()
    assert stored(app) == 4 and len(spool.pending()) == 1  # stored, but still pending in the spool
    monkeypatch.undo()
    again = loader(app, tmp_path).run_once()
    assert again.batches == 1 and spool.pending() == []
    assert stored(app) == 4  # the engine knew the batch: skipped, not stored twice


def test_an_engine_restart_between_accept_and_load_loses_and_doubles_nothing(seeded: Any, tmp_path: Path) -> None:
    app = seeded.app
    settings: Settings = app.settings
    spool = EventSpool(app.meta)
    spool.append(PROJECT, "ds1", "k1", batch(3))
    loader(app, tmp_path).run_once()
    spool.append(PROJECT, "ds1", "k2", batch(2, start=5))  # accepted, not loaded yet
    app.close()  # the engine stops here
    again = build(settings)
    try:
        assert stored(again) == 3
        spool = EventSpool(again.meta)
        assert spool.append(PROJECT, "ds1", "k2", batch(2, start=5)) is False  # a retry of it: already held
        assert loader(again, tmp_path).run_once().batches == 1
        assert stored(again) == 5
    finally:
        again.close()
    seeded.app.close = lambda: None  # closed above


def test_login_user_attributes_set_user_properties(seeded: Any, tmp_path: Path, client: TestClient) -> None:
    app = seeded.app
    events = [
        {"t": T, "type": "LOGIN_USER_ATTRIBUTES", "event": None, "user_id": "C002", "user_key": None,
         "device_id": None, "attrs": {"gender": "女", "vip_level": "gold"}, "std": {}},
        {"t": T + 1, "type": "LOGIN_USER_ATTRIBUTES", "event": None, "user_id": "C002", "user_key": None,
         "device_id": None, "attrs": {"vip_level": "platinum"}, "std": {}},
    ]  # fmt: skip
    EventSpool(app.meta).append(PROJECT, "ds1", "k1", events)
    loader(app, tmp_path).run_once()
    user = client.get(f"/v1/api/projects/{PROJECT}/users/$basic_userId/C002", headers=auth(seeded.token)).json()
    assert user["properties"]["usr_gender"] == "女"
    assert user["properties"]["usr_vip_level"] == "platinum"  # the later event wins
    assert app.meta.catalog(PROJECT).get("usr_vip_level") is not None  # a new usr_ key, in the catalogue


def test_a_value_that_does_not_fit_its_declared_type_is_stored_as_null(seeded: Any, tmp_path: Path) -> None:
    app = seeded.app
    service = EventService(app.meta, app.engine, app.data)
    service.declare(PROJECT, "step", "步骤", "int")
    rows = batch(2)
    rows[1]["attrs"]["step"] = "two"
    EventSpool(app.meta).append(PROJECT, "ds1", "k1", rows)
    assert loader(app, tmp_path).run_once().events == 2
    page = app.engine.user_events(
        PROJECT, app.meta.catalog(PROJECT).entries["id_$basic_userId"], "C001", 0, 2 * T, 10, 0, False
    )
    assert [r["attrs"].get("step") for r in page.rows] == [0, None]


def test_item_batches_are_marked_loaded_without_events(seeded: Any, tmp_path: Path) -> None:
    app = seeded.app
    spool = EventSpool(app.meta)
    item = {"t": T, "type": "ITEM", "event": None, "user_id": None, "user_key": None, "device_id": None,
            "attrs": {"color": "red"}, "std": {}, "key": "product", "id": "p1"}  # fmt: skip
    spool.append(PROJECT, "ds1", "k1", [item])
    done = loader(app, tmp_path).run_once()
    assert (done.batches, done.events, done.set_aside) == (1, 0, 0) and spool.pending() == []


def test_a_backlog_is_loaded_in_larger_rounds_at_once_and_the_loader_goes_back_to_small_ones(
    seeded: Any, tmp_path: Path
) -> None:
    # rounds of PAGE batches while the loader keeps up; after a full round the next starts at once and takes up
    # to BACKLOG_PAGE; a round that finds fewer than its page ends the backlog (docs/events.md, freshness). The
    # real spool and service; the page each round asked for is recorded on the way.
    from segport import loader as loader_module

    page, backlog = loader_module.PAGE, loader_module.BACKLOG_PAGE
    assert backlog > page
    total = page + backlog + (backlog - page)  # a full round, a full backlog round, then one finding fewer
    app = seeded.app
    spool = EventSpool(app.meta)
    for n in range(total):
        assert spool.append(PROJECT, "ds1", f"k{n}", batch(1, start=n))
    before = stored(app)
    service = EventService(app.meta, app.engine, app.data)
    pages: list[int] = []
    drained, back = threading.Event(), threading.Event()
    real = service.load_pending

    def recorded(spool_: Any, scratch: Path, limit: int) -> Any:
        pages.append(limit)
        done = real(spool_, scratch, limit)
        if done.batches < limit:
            drained.set()
        if len(pages) > 3:
            back.set()
        return done

    service.load_pending = recorded  # type: ignore[method-assign]
    run = EventLoader(service, spool, tmp_path / "scratch", 0.05)
    run.start()
    try:
        assert drained.wait(120) and back.wait(30)
    finally:
        run.stop()
    assert pages[:4] == [page, backlog, backlog, page]
    assert spool.pending() == [] and stored(app) == before + total


def test_a_round_runs_with_the_cycle_collector_held_off_and_gives_it_back(seeded: Any, tmp_path: Path) -> None:
    # a round's tuples and dicts hold no cycles: the collector waits until the round ends (segport.loader.gc_paused),
    # also when the round fails, and is left off after it if it was off before
    app = seeded.app
    spool = EventSpool(app.meta)
    assert spool.append(PROJECT, "ds1", "gc1", batch(3))
    before = stored(app)
    service = EventService(app.meta, app.engine, app.data)
    seen: list[bool] = []
    real = service.load_pending

    def recorded(spool_: Any, scratch: Path, limit: int) -> Any:
        seen.append(gc.isenabled())
        if len(seen) == 2:
            raise RuntimeError("the engine went away")
        return real(spool_, scratch, limit)

    service.load_pending = recorded  # type: ignore[method-assign]
    run = EventLoader(service, spool, tmp_path / "scratch", 1.0)
    assert gc.isenabled()
    assert run.run_once().events == 3 and gc.isenabled()
    with pytest.raises(RuntimeError, match="went away"):
        run.run_once()
    assert gc.isenabled()
    gc.disable()
    try:
        run.run_once()
        assert not gc.isenabled()  # off before the round: left off
    finally:
        gc.enable()
    assert seen == [False, False, False] and stored(app) == before + 3
