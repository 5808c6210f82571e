"""Tags computed from events through the admin API and the API family: created and computed at once, listed by
E4/E5 with their type and valueType, read by E7/E10, exported through the seed's export, used in a segment
rule, recomputed by E15 and the DAILY scheduler from the events stored then, refused with a 400 naming the part at
fault (nothing stored), and deleted. The engine-level values are checked in tests/test_tags_engines.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from segport.scheduler import DailyRecompute
from segport.services.events import EventService
from segport.store.tag_definitions import TagStore
from segport.worker import Worker
from tests.conftest import ENGINES, PROJECT, Seeded, auth, csv_rows

A = f"/admin/v1/projects/{PROJECT}"
F = f"/v1/api/projects/{PROJECT}"
HOUR = 3_600_000
SUM_30D = {"type": "AGGREGATED", "event": "pay", "measure": {"sum": "amount"}, "time": {"last_days": 30}}
LAST_CITY = {"type": "ATTRIBUTION_ATTRIBUTE", "event": "pay", "attribute": "city", "pick": "last"}
LAYERS = {
    "type": "HORIZONTAL",
    "source": "tag_pay_30d",
    "layers": [{"name": "高", "gte": 100}, {"name": "中", "gte": 1}, {"name": "低"}],
}


def err(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text
    return str(r.json()["error"]["message"])


def load(seeded: Seeded, path: Path, rows: list[tuple[str, int, str, int, str]]) -> None:
    """Events ``(event, ms ago, userId, amount, city)``, imported as a file."""
    now = int(time.time() * 1000)
    lines = ["event,time,userId,amount,city", *(f"{e},{now - ago},{u},{a},{c}" for e, ago, u, a, c in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    EventService(seeded.app.meta, seeded.app.engine, seeded.app.data).import_events(PROJECT, path)


def values(client: TestClient, seeded: Seeded, key: str) -> dict[str, str | None]:
    """userId -> the tag's value, as E7 pages the tag's holders."""
    r = client.get(
        f"{F}/user_tags/{key}/users?limit=100&properties[]={key}&properties[]=id_$basic_userId",
        headers=auth(seeded.token),
    )
    assert r.status_code == 200, r.text
    return {u["identifications"]["id_$basic_userId"][0]: u["properties"][key] for u in r.json()["values"]}


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_computed_tag_is_listed_read_exported_used_recomputed_and_deleted(
    engine_name: str, client: TestClient, worker: Worker, seeded: Seeded, tmp_path: Path
) -> None:
    h = auth(seeded.admin_token)
    events = EventService(seeded.app.meta, seeded.app.engine, seeded.app.data)
    events.declare(PROJECT, "amount", "金额", "int")
    load(
        seeded,
        tmp_path / "a.csv",
        [
            ("pay", HOUR, "C001", 120, "北京"),
            ("pay", 2 * HOUR, "C001", 30, "上海"),
            ("pay", HOUR, "C002", 5, "广州"),
            ("pay", 40 * 24 * HOUR, "C003", 999, "北京"),  # outside the 30 days
            ("view", HOUR, "C004", 50, "北京"),
        ],
    )
    r = client.post(A + "/tags", headers=h, json={"key": "tag_pay_30d", "name": "30天支付", "definition": SUM_30D})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["type"], body["valueType"], body["definition"]) == (
        "AGGREGATED",
        {"type": "INT", "isArray": False},
        SUM_30D,
    )
    assert body["detector"]["stage"] == "FINISH" and body["detector"]["totalUsers"] == 7  # a sum is 0 without events
    r = client.post(
        A + "/tags", headers=h, json={"key": "tag_last_city", "name": "最近支付城市", "definition": LAST_CITY}
    )
    assert r.status_code == 201 and r.json()["valueType"]["type"] == "STRING", r.text
    r = client.post(A + "/tags", headers=h, json={"key": "tag_level", "name": "支付等级", "definition": LAYERS})
    assert r.status_code == 201 and r.json()["type"] == "HORIZONTAL", r.text

    # E5 and E4: computed tags with their type and valueType, the imported tag as before
    listed = {t["key"]: t for t in client.get(f"{F}/user_tags", headers=auth(seeded.token)).json()["values"]}
    assert (listed["tag_rfm"]["type"], listed["tag_rfm"]["createdBy"]) == ("DATA_SET_ATTRIBUTE", "FROM_FILES")
    assert listed["tag_pay_30d"]["type"] == "AGGREGATED" and listed["tag_pay_30d"]["valueType"]["type"] == "INT"
    assert listed["tag_last_city"]["type"] == "ATTRIBUTION_ATTRIBUTE"
    assert listed["tag_level"]["valueType"] == {"type": "STRING", "isArray": False}
    assert listed["tag_last_city"]["detector"]["totalUsers"] == 3  # C001, C002, C003 paid (C003 long ago)
    platform = client.get("/v1/api/user_tags", headers=auth(seeded.token)).json()["values"]
    assert [t["type"] for t in platform if t["key"] == "tag_level"] == ["HORIZONTAL"]

    # E7 and E10 read the values like an imported tag's
    assert values(client, seeded, "tag_last_city") == {"C001": "北京", "C002": "广州", "C003": "北京"}
    assert values(client, seeded, "tag_level")["C001"] == "高"
    assert values(client, seeded, "tag_level")["C002"] == "中" and values(client, seeded, "tag_level")["C007"] == "低"
    one = client.get(f"{F}/users/$basic_userId/C001", headers=auth(seeded.token)).json()
    assert one["properties"]["tag_pay_30d"] == "150" and one["properties"]["tag_last_city"] == "北京"

    # the seed's export of a computed tag: its holders and their values, read from the column
    submitted = client.post(
        f"{F}/user_tags/tag_last_city/export_jobs",
        headers=auth(seeded.token),
        json={"properties": ["id_$basic_userId", "tag_last_city"]},
    )
    assert submitted.status_code == 200, submitted.text
    worker.run_until_empty()
    result = client.get(f"/v1/api/job/result/{submitted.json()['id']}", headers=auth(seeded.token)).json()
    assert result["stage"] == "FINISH", result
    rows = csv_rows(client.get("/download?file=" + result["uris"][0], headers=auth(seeded.token)).content)
    assert rows[0] == ["gio_id", "id_$basic_userId", "tag_last_city"]
    assert sorted(r[1:] for r in rows[1:]) == [["C001", "北京"], ["C002", "广州"], ["C003", "北京"]]

    # usable in a segment rule
    r = client.post(
        A + "/segments",
        headers=h,
        json={"key": "seg_bj", "name": "北京支付", "rule": {"key": "tag_last_city", "op": "eq", "value": "北京"}},
    )
    assert r.status_code == 201 and r.json()["detector"]["totalUsers"] == 2, r.text

    # E15 recomputes from the events stored now
    load(seeded, tmp_path / "b.csv", [("pay", 60_000, "C002", 200, "北京"), ("pay", 60_000, "C005", 1, "上海")])
    assert values(client, seeded, "tag_last_city")["C002"] == "广州"  # materialised: unchanged until recomputed
    r = client.post(f"{F}/user_tags/tag_last_city/computes", headers=auth(seeded.token))
    assert r.status_code == 200 and r.json()["value"] is True and "4 users" in r.json()["message"], r.text
    assert values(client, seeded, "tag_last_city") == {"C001": "北京", "C002": "北京", "C003": "北京", "C005": "上海"}
    # E15 of an imported tag answers as before
    assert "recounted" in client.post(f"{F}/user_tags/tag_rfm/computes", headers=auth(seeded.token)).json()["message"]
    # only from FINISH or ERROR
    TagStore(seeded.app.meta).update(PROJECT, "tag_pay_30d", detector_stage="RUNNING")
    err(client.post(f"{F}/user_tags/tag_pay_30d/computes", headers=auth(seeded.token)), 409, "DETECTOR_BUSY")
    TagStore(seeded.app.meta).update(PROJECT, "tag_pay_30d", detector_stage="FINISH")

    # the DAILY scheduler recomputes computed tags (the source before the layers made on it)
    done = DailyRecompute(seeded.app.data, 0.0).run_once()
    tags_done = [k for _, k in done if k.startswith("tag_")]
    assert tags_done == ["tag_pay_30d", "tag_last_city", "tag_level"]
    assert values(client, seeded, "tag_pay_30d")["C002"] == "205"
    assert values(client, seeded, "tag_level")["C002"] == "高"

    # deleting: refused while a layered tag reads it, then the definition, catalogue entry and values go
    assert "tag_level" in err(client.delete(A + "/tags/tag_pay_30d", headers=h), 409, "KEY_IN_USE")
    assert client.delete(A + "/tags/tag_level", headers=h).status_code == 204
    assert client.delete(A + "/tags/tag_pay_30d", headers=h).status_code == 204
    err(client.get(A + "/tags/tag_pay_30d", headers=h), 404, "TAG_NOT_FOUND")
    assert "tag_pay_30d" not in seeded.app.meta.catalog(PROJECT)
    assert TagStore(seeded.app.meta).find(PROJECT, "tag_pay_30d") is None
    err(client.delete(A + "/tags/tag_rfm", headers=h), 404, "TAG_NOT_FOUND")  # imported: `catalog remove`


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"type": "AGGREGATED", "event": "nope"}, "definition.event: unknown event 'nope'"),
        ({"type": "AGGREGATED", "event": "pay", "measure": {"sum": "city"}}, "definition.measure.sum: sum needs a numeric attribute; 'city' is string"),
        ({"type": "AGGREGATED", "event": "pay", "measure": {"avg": "amt"}}, "definition.measure.avg: unknown attribute 'amt'"),
        ({"type": "AGGREGATED", "event": "pay", "where": {"key": "amt", "op": "eq", "value": 1}}, "definition.where:"),
        ({"type": "AGGREGATED", "event": "pay", "time": {"between": ["2026-05-02", "2026-05-01"]}}, "definition.time.between: the window ends (2026-05-01) before it starts (2026-05-02)"),
        ({"type": "ATTRIBUTION_ATTRIBUTE", "event": "pay", "attribute": "city", "pick": "middle"}, "definition.pick"),
        ({"type": "TOP_N_ATTRIBUTE", "event": "pay", "attribute": "city"}, "definition.pick"),
        ({"type": "SQL", "sql": "SELECT 1"}, "definition.type"),
        ({"type": "HORIZONTAL", "source": "tag_rfm", "layers": [{"name": "a"}]}, "definition.source: layers need a numeric tag; 'tag_rfm' is string"),
        ({"type": "HORIZONTAL", "source": {"event": "pay"}, "layers": [{"name": "a"}, {"name": "b", "gte": 1}]}, "definition.layers[1]: follows a layer without 'gte'"),
        ({"type": "HORIZONTAL", "source": {"event": "pay"}, "layers": [{"name": "a", "gte": "x"}]}, "definition.layers[0].gte"),
        ({"type": "HORIZONTAL", "source": {"event": "pay", "measure": {"sum": "nope"}}, "layers": [{"name": "a"}]}, "definition.source.measure.sum: unknown attribute 'nope'"),
        ("{not json", "definition is not valid JSON"),
    ],
)  # fmt: skip
def test_a_bad_definition_is_a_400_naming_its_part_and_stores_nothing(
    client: TestClient, seeded: Seeded, tmp_path: Path, definition: Any, message: str
) -> None:
    EventService(seeded.app.meta, seeded.app.engine, seeded.app.data).declare(PROJECT, "amount", "金额", "int")
    load(seeded, tmp_path / "a.csv", [("pay", HOUR, "C001", 1, "北京")])
    before = seeded.app.engine.data_version(PROJECT)
    r = client.post(
        A + "/tags", headers=auth(seeded.admin_token), json={"key": "tag_x", "name": "x", "definition": definition}
    )
    assert message in err(r, 400, "INVALID_RULE")
    assert "tag_x" not in seeded.app.meta.catalog(PROJECT)
    assert TagStore(seeded.app.meta).all(PROJECT) == []
    assert seeded.app.engine.data_version(PROJECT) == before


def test_a_tag_key_is_a_tag_and_is_new(client: TestClient, seeded: Seeded, tmp_path: Path) -> None:
    load(seeded, tmp_path / "a.csv", [("pay", HOUR, "C001", 1, "北京")])
    h = auth(seeded.admin_token)
    count = {"type": "AGGREGATED", "event": "pay"}
    err(
        client.post(A + "/tags", headers=h, json={"key": "usr_x", "name": "x", "definition": count}),
        400,
        "INVALID_PARAMETER",
    )
    err(
        client.post(A + "/tags", headers=h, json={"key": "tag_rfm", "name": "x", "definition": count}),
        409,
        "ALREADY_EXISTS",
    )
