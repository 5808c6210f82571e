"""A computed tag's values belong to its definition (docs/tags.md, "Profile imports"): a profile import whose file
has a column for one is refused whole, naming the column (nothing stored); an import without such a column leaves
the values as they were, whichever way the engine merges the file (DuckDB's in-place update of a few users or its
rewrite of the table, ClickHouse's new users table); a user the import adds holds no value until the next
computation. On both engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi.testclient import TestClient

from segport.errors import ImportRejected
from segport.services.events import EventService
from segport.services.tags import TagService, TagSpec
from tests.conftest import ENGINES, PROJECT, USERS, auth
from tests.test_tags_api import load

A = f"/admin/v1/projects/{PROJECT}"
F = f"/v1/api/projects/{PROJECT}"
HOUR = 3_600_000
SUM = {"type": "AGGREGATED", "event": "pay", "measure": {"sum": "amount"}}
LAST_CITY = {"type": "ATTRIBUTION_ATTRIBUTE", "event": "pay", "attribute": "city", "pick": "last"}


def tag_values(client: TestClient, token: str, users: list[str]) -> dict[str, tuple[Any, Any, Any]]:
    """userId -> (tag_pay, tag_last_city, usr_city), as E11 answers them."""
    out = {}
    for user in users:
        r = client.get(f"{F}/users/$basic_userId/{user}", headers=auth(token))
        assert r.status_code == 200, r.text
        p = r.json()["properties"]
        out[user] = (p.get("tag_pay"), p.get("tag_last_city"), p.get("usr_city"))
    return out


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_profile_import_cannot_write_a_computed_tag_and_keeps_its_values(
    engine_name: str, seeded: Any, client: TestClient, tmp_path: Path
) -> None:
    app, token = seeded.app, seeded.token
    EventService(app.meta, app.engine, app.data).declare(PROJECT, "amount", "金额", "int")
    load(seeded, tmp_path / "e.csv", [("pay", HOUR, "C001", 120, "北京"), ("pay", HOUR, "C002", 5, "广州")])
    tags = TagService(app.data)
    tags.create(PROJECT, TagSpec(key="tag_pay", name="支付金额", definition=SUM))
    tags.create(PROJECT, TagSpec(key="tag_last_city", name="最近支付城市", definition=LAST_CITY))
    everyone = [str(u["id_$basic_userId"]) for u in USERS]
    computed = tag_values(client, token, everyone)
    assert computed["C001"][:2] == ("120", "北京") and computed["C003"][:2] == ("0", None)
    version = app.engine.data_version(PROJECT)

    # a file naming a computed tag (in any spelling the import takes) is refused whole, naming the column
    for n, header in enumerate(["tag_pay", " tag_last_city"]):
        bad = tmp_path / f"bad{n}.csv"
        bad.write_text(f"id_$basic_userId,usr_city,{header}\nC001,杭州,7\nC999,深圳,8\n", encoding="utf-8")
        with pytest.raises(ImportRejected, match=f"column '{header.strip()}' is the computed tag {header.strip()}"):
            app.data.import_users(PROJECT, bad)
        r = client.post(A + "/users/import?format=csv", headers=auth(seeded.admin_token), content=bad.read_bytes())
        assert r.status_code == 400 and r.json()["error"]["code"] == "IMPORT_REJECTED", r.text
        assert "computed tag" in r.json()["error"]["message"] and "\n" not in r.json()["error"]["message"]
    assert tag_values(client, token, everyone) == computed and app.engine.data_version(PROJECT) == version
    # the same with a Parquet file (ClickHouse loads some Parquet files by itself)
    parquet = tmp_path / "bad.parquet"
    duckdb.sql(f"COPY (SELECT 'C001' AS \"id_$basic_userId\", 7::BIGINT AS tag_pay) TO '{parquet}' (FORMAT PARQUET)")
    with pytest.raises(ImportRejected, match="column 'tag_pay' is the computed tag tag_pay"):
        app.data.import_users(PROJECT, parquet)
    assert tag_values(client, token, everyone) == computed

    # files without them: one user changed (an update in place), then every user and a new one (a rewrite)
    few = tmp_path / "few.csv"
    few.write_text("id_$basic_userId,usr_city\nC001,杭州\n", encoding="utf-8")
    app.data.import_users(PROJECT, few)
    after = tag_values(client, token, everyone)
    assert after["C001"] == ("120", "北京", "杭州")
    assert {u: v[:2] for u, v in after.items()} == {u: v[:2] for u, v in computed.items()}
    many = tmp_path / "many.csv"
    many.write_text(
        "id_$basic_userId,usr_city\n" + "".join(f"{u},城{n}\n" for n, u in enumerate([*everyone, "C100"])),
        encoding="utf-8",
    )
    report = app.data.import_users(PROJECT, many)
    assert (report.inserted, report.updated) == (1, len(everyone))
    after = tag_values(client, token, [*everyone, "C100"])
    assert {u: v[:2] for u, v in after.items() if u != "C100"} == {u: v[:2] for u, v in computed.items()}
    assert after["C001"][2] == "城0"
    # the user the import added holds no value until the tag is computed again, then the definition's value
    assert after["C100"][:2] == (None, None)
    tags.recompute(PROJECT, "tag_pay")
    assert tag_values(client, token, ["C100"])["C100"][0] == "0"
