"""The API family's endpoints against the shapes in GrowingIO's docs (API-FAMILY.md), and paging edges."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from segport.domain.keys import Catalog
from segport.engine.base import SegmentDefinition, Target
from segport.services.data import SegmentSpec
from segport.worker import Worker
from tests.conftest import PROJECT, SEGMENT, Seeded, auth, write_users_csv
from tests.family_helpers import (
    ENVELOPE_FIELDS,
    IDENTITIES,
    ISO_MS,
    OTHER,
    SEG_USERS,
    SEGMENT_FIELDS,
    SEGMENTS,
    TAG_FIELDS,
    TAG_USERS,
    TAGS,
    P,
    api_value,
    segment_members,
    tag_members,
    user_of,
)


def get(client: TestClient, token: str, url: str, **params: object) -> dict:
    r = client.get(url, headers=auth(token), params=params)
    assert r.status_code == 200, r.text
    return r.json()


def add_segments(seeded: Seeded, n: int) -> list[str]:
    keys = [f"seg_extra{i}" for i in range(n)]
    for key in keys:
        seeded.app.data.create_segment(
            PROJECT, SegmentSpec(key=key, name=key, rule={"key": "usr_age", "op": "gt", "value": 20})
        )
    return keys


# --- E1 segment list -------------------------------------------------------------------------------
def test_segment_list_has_every_documented_field(client: TestClient, seeded: Seeded) -> None:
    page = get(client, seeded.token, SEGMENTS)
    assert set(page) == ENVELOPE_FIELDS
    assert (page["limit"], page["offset"], page["totalCount"]) == (1000, 0, 1)
    (seg,) = page["values"]
    assert set(seg) == SEGMENT_FIELDS
    assert len(seg["id"]) == 8 and seg["id"].isalnum()
    assert (seg["key"], seg["name"], seg["createdBy"], seg["scheduler"]) == (SEGMENT, "51活动用户", "DIRECT", "DAILY")
    assert set(seg["detector"]) == {"stage", "detectedAt", "totalUsers"}
    assert seg["detector"]["stage"] == "FINISH"
    assert seg["detector"]["totalUsers"] == len(segment_members())
    for field in ("createdAt", "updatedAt"):
        assert ISO_MS.match(seg[field]), seg[field]
    assert ISO_MS.match(seg["detector"]["detectedAt"])
    for field in ("creatorId", "creator", "updaterId", "updater", "description"):
        assert isinstance(seg[field], str)


def test_segment_list_pages_at_exact_boundaries(client: TestClient, seeded: Seeded) -> None:
    add_segments(seeded, 3)  # 4 segments in all
    first = get(client, seeded.token, SEGMENTS, limit=2, offset=0)
    second = get(client, seeded.token, SEGMENTS, limit=2, offset=2)
    assert [len(first["values"]), len(second["values"])] == [2, 2]
    assert (first["hasNextPage"], first["hasPreviousPage"]) == (True, False)
    assert (second["hasNextPage"], second["hasPreviousPage"]) == (False, True)
    assert first["totalCount"] == second["totalCount"] == 4
    keys = [s["key"] for s in first["values"] + second["values"]]
    assert keys == [SEGMENT, "seg_extra0", "seg_extra1", "seg_extra2"]  # creation order, no overlap


@pytest.mark.parametrize("offset", [4, 5, 1000])
def test_segment_list_offset_at_or_past_the_end_is_an_empty_page(
    client: TestClient, seeded: Seeded, offset: int
) -> None:
    add_segments(seeded, 3)
    page = get(client, seeded.token, SEGMENTS, limit=2, offset=offset)
    assert page["values"] == []
    assert (page["totalCount"], page["hasNextPage"], page["hasPreviousPage"]) == (4, False, True)


def test_segment_list_shows_only_the_projects_own_segments(client: TestClient, seeded: Seeded) -> None:
    page = get(client, seeded.other_token, f"{OTHER}/segment_profiles")
    assert [(s["key"], s["name"]) for s in page["values"]] == [(SEGMENT, "其他")]


# --- E2 segment users ------------------------------------------------------------------------------
def test_segment_users_match_the_documented_example_shape(client: TestClient, seeded: Seeded) -> None:
    keys = ["id_$basic_userId", "usr_gender", "tag_rfm"]
    page = get(client, seeded.token, SEG_USERS, **{"properties[]": keys})
    assert set(page) == ENVELOPE_FIELDS
    first = page["values"][0]
    assert first == {
        "gioId": "1",
        "identifications": {"id_$basic_userId": ["C001"]},
        "properties": {"usr_gender": "男", "tag_rfm": "高"},
    }
    assert page["totalCount"] == len(segment_members())


def test_segment_users_hold_every_member_in_gio_id_order(client: TestClient, seeded: Seeded) -> None:
    keys = [*IDENTITIES, "usr_gender", "usr_city", "usr_age", "usr_score", "usr_since", "tag_rfm"]
    page = get(client, seeded.token, SEG_USERS, **{"properties[]": keys})
    assert [v["gioId"] for v in page["values"]] == [str(g) for g in segment_members()]
    for value in page["values"]:
        user = user_of(int(value["gioId"]))
        assert value["identifications"] == {k: api_value(k, user) for k in IDENTITIES}
        assert value["properties"] == {k: api_value(k, user) for k in keys if not k.startswith("id_")}
    # the awkward ones spelled out: a multi-valued identity, a missing identity, "" vs null, a number
    by_id = {v["gioId"]: v for v in page["values"]}
    assert by_id["1"]["identifications"]["id_$anonymous_user"] == ["d1", "d2"]
    assert by_id["2"]["identifications"]["id_$anonymous_user"] is None
    assert by_id["4"]["properties"]["usr_gender"] == ""
    assert by_id["2"]["properties"]["usr_gender"] is None
    assert by_id["1"]["properties"]["usr_score"] == "1.5"


def test_segment_users_without_properties_are_empty_objects(client: TestClient, seeded: Seeded) -> None:
    page = get(client, seeded.token, SEG_USERS, limit=1)
    assert page["values"] == [{"gioId": "1", "identifications": {}, "properties": {}}]


def test_segment_users_pages_concatenate_to_the_whole_segment(client: TestClient, seeded: Seeded) -> None:
    members = [str(g) for g in segment_members()]  # 6 members
    seen = []
    for offset in (0, 2, 4):
        page = get(client, seeded.token, SEG_USERS, limit=2, offset=offset)
        assert page["hasPreviousPage"] is (offset > 0)
        assert page["hasNextPage"] is (offset + 2 < len(members))
        seen += [v["gioId"] for v in page["values"]]
    assert seen == members
    past = get(client, seeded.token, SEG_USERS, limit=2, offset=6)
    assert (past["values"], past["totalCount"], past["hasNextPage"], past["hasPreviousPage"]) == ([], 6, False, True)
    short = get(client, seeded.token, SEG_USERS, limit=4, offset=4)
    assert [v["gioId"] for v in short["values"]] == members[4:]
    assert short["hasNextPage"] is False


def catalog_of(seeded: Seeded) -> Catalog:
    return seeded.app.meta.catalog(PROJECT)


def test_segment_users_agree_with_the_json_export(client: TestClient, worker: Worker, seeded: Seeded) -> None:
    keys = ["id_$basic_userId", "id_$anonymous_user", "usr_city", "usr_age", "usr_since", "tag_rfm"]
    created = client.post(
        f"{SEGMENTS}/{SEGMENT}/export_jobs", headers=auth(seeded.token), json={"properties": keys, "fileFormat": "json"}
    ).json()
    worker.run_until_empty()
    uri = get(client, seeded.token, f"/v1/api/job/result/{created['id']}")["uris"][0]
    download = client.get("/download?file=" + uri, headers=auth(seeded.token))
    lines = [json.loads(x) for x in download.content.splitlines()]
    page = get(client, seeded.token, SEG_USERS, **{"properties[]": keys})["values"]
    assert [v["gioId"] for v in page] == [line["gio_id"] for line in lines]
    for value, line in zip(page, lines, strict=True):
        assert value["properties"] == line["properties"]
        # JSON Lines writes a multi-valued identity as a list (as the API answers it), a single one as a string
        multi = {k for k in keys if catalog_of(seeded).entries[k].multi}
        shown = {k: v if v is None or k in multi else v[0] for k, v in value["identifications"].items()}
        assert shown == line["identifications"]


def test_segment_users_total_and_page_come_from_one_snapshot(seeded: Seeded) -> None:
    """While a recompute flips the segment between 6 members and 1, every page still holds exactly
    totalCount members: the count and the rows are read in one transaction."""
    app = seeded.app
    catalog = app.meta.catalog(PROJECT)
    small = SegmentDefinition.from_rule(SEGMENT, {"key": "usr_age", "op": "eq", "value": 30}, catalog)
    large = SegmentDefinition.from_rule(SEGMENT, {"not": {"key": "usr_age", "op": "gte", "value": 50}}, catalog)
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            for definition in (small, large):
                app.engine.compute_segment(PROJECT, definition)

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        sizes = set()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            page = app.engine.members_page(PROJECT, Target("segment", SEGMENT), [], 1000, 0)
            assert len(page.rows) == page.total
            sizes.add(page.total)
    finally:
        stop.set()
        flipper.join()
    assert sizes <= {1, 6}


# --- E4/E5 tag lists -------------------------------------------------------------------------------
def test_tag_list_has_the_documented_fields_and_value_types(client: TestClient, seeded: Seeded) -> None:
    extra = "key,name,type\ntag_level,等级,int\ntag_labels,标签,string[]\ntag_born,出生,date\ntag_ltv,价值,double\n"
    seeded.app.data.import_catalog_csv(PROJECT, extra)
    page = get(client, seeded.token, TAGS)
    assert set(page) == ENVELOPE_FIELDS
    assert page["totalCount"] == 5
    for tag in page["values"]:
        assert set(tag) == TAG_FIELDS
        assert tag["type"] == "DATA_SET_ATTRIBUTE"
        assert len(tag["id"]) == 8 and tag["id"].isalnum()
        assert ISO_MS.match(tag["createdAt"]) and ISO_MS.match(tag["detector"]["detectedAt"])
        assert tag["detector"]["stage"] == "FINISH"
    types = {t["key"]: t["valueType"] for t in page["values"]}
    assert types == {
        "tag_rfm": {"type": "STRING", "isArray": False},
        "tag_level": {"type": "INT", "isArray": False},
        "tag_labels": {"type": "STRING", "isArray": True},
        "tag_born": {"type": "DATE", "isArray": False},
        "tag_ltv": {"type": "DOUBLE", "isArray": False},
    }
    counts = {t["key"]: t["detector"]["totalUsers"] for t in page["values"]}
    assert counts == {"tag_rfm": len(tag_members()), "tag_level": 0, "tag_labels": 0, "tag_born": 0, "tag_ltv": 0}
    rfm = page["values"][0]
    assert (rfm["key"], rfm["name"]) == ("tag_rfm", "会员等级")
    again = get(client, seeded.token, TAGS)
    assert [t["id"] for t in again["values"]] == [t["id"] for t in page["values"]]  # ids are stable


def test_tag_list_pages(client: TestClient, seeded: Seeded) -> None:
    seeded.app.data.import_catalog_csv(PROJECT, "key,name,type\ntag_a,A,string\ntag_b,B,string\n")
    first = get(client, seeded.token, TAGS, limit=2)
    last = get(client, seeded.token, TAGS, limit=2, offset=2)
    assert [t["key"] for t in first["values"] + last["values"]] == ["tag_rfm", "tag_a", "tag_b"]
    assert (first["hasNextPage"], last["hasNextPage"], last["hasPreviousPage"]) == (True, False, True)


def test_platform_tag_list_answers_for_a_token_of_one_project(client: TestClient, seeded: Seeded) -> None:
    platform = get(client, seeded.token, "/v1/api/user_tags")
    project = get(client, seeded.token, TAGS)

    def timeless(page: dict) -> list[dict]:  # detectedAt is the time of the count, so it differs
        return [{**t, "detector": {**t["detector"], "detectedAt": None}} for t in page["values"]]

    assert timeless(platform) == timeless(project)
    assert [t["key"] for t in platform["values"]] == ["tag_rfm"]


def test_project_without_catalogue_lists_no_tags(client: TestClient, seeded: Seeded) -> None:
    seeded.app.meta.create_project("Empty001", "空")
    page = get(client, seeded.admin_token, "/v1/api/projects/Empty001/user_tags")
    assert (page["values"], page["totalCount"], page["hasNextPage"]) == ([], 0, False)


# --- E6/E7 tag users -------------------------------------------------------------------------------
def test_tag_users_are_the_users_holding_a_value(client: TestClient, seeded: Seeded) -> None:
    page = get(client, seeded.token, TAG_USERS, **{"properties[]": ["tag_rfm", "id_$basic_userId"]})
    expected = [
        {
            "gioId": str(i),
            "identifications": {"id_$basic_userId": [u["id_$basic_userId"]]},
            "properties": {"tag_rfm": u["tag_rfm"]},
        }
        for i, u in tag_members()
    ]
    assert page["values"] == expected
    assert page["totalCount"] == len(expected)
    platform = get(
        client, seeded.token, "/v1/api/user_tags/tag_rfm/users", **{"properties[]": ["tag_rfm", "id_$basic_userId"]}
    )
    assert platform == page


def test_tag_users_page_edges(client: TestClient, seeded: Seeded) -> None:
    ids = [str(i) for i, _ in tag_members()]  # 5 users
    page = get(client, seeded.token, TAG_USERS, limit=5)
    assert ([v["gioId"] for v in page["values"]], page["hasNextPage"]) == (ids, False)
    tail = get(client, seeded.token, TAG_USERS, limit=3, offset=3)
    assert ([v["gioId"] for v in tail["values"]], tail["hasNextPage"], tail["hasPreviousPage"]) == (
        ids[3:],
        False,
        True,
    )


# --- E14/E15 recompute, 4.x job result -------------------------------------------------------------
def test_recompute_segment_takes_new_data(client: TestClient, seeded: Seeded, tmp_path: Path) -> None:
    seeded.app.data.create_segment(
        PROJECT,
        SegmentSpec(
            key="seg_once", name="一次", scheduler="ONCE", rule={"key": "usr_gender", "op": "eq", "value": "男"}
        ),
    )
    url = f"{SEGMENTS}/seg_once"
    before = get(client, seeded.token, url + "/users")["totalCount"]
    seeded.app.data.import_users(
        PROJECT, write_users_csv(tmp_path / "more.csv", [{"id_$basic_userId": "C100", "usr_gender": "男"}])
    )
    assert get(client, seeded.token, url + "/users")["totalCount"] == before  # ONCE: not recomputed on import
    r = client.post(url + "/computes", headers=auth(seeded.token))
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"value", "message"} and body["value"] is True and "seg_once" in body["message"]
    assert get(client, seeded.token, url + "/users")["totalCount"] == before + 1
    listed = {s["key"]: s for s in get(client, seeded.token, SEGMENTS)["values"]}
    assert listed["seg_once"]["detector"]["totalUsers"] == before + 1


@pytest.mark.parametrize("stage,status", [("FINISH", 200), ("ERROR", 200), ("RUNNING", 409), ("NONE", 409)])
def test_recompute_segment_only_from_finish_or_error(
    client: TestClient, seeded: Seeded, stage: str, status: int
) -> None:
    seeded.app.meta.update_segment(PROJECT, SEGMENT, detector_stage=stage)
    r = client.post(f"{SEGMENTS}/{SEGMENT}/computes", headers=auth(seeded.token))
    assert r.status_code == status, r.text
    if status == 409:
        assert r.json()["error"]["code"] == "DETECTOR_BUSY"
        assert stage in r.json()["error"]["message"]
        assert seeded.app.meta.segment(PROJECT, SEGMENT).detector_stage == stage  # left as it was
    else:
        assert seeded.app.meta.segment(PROJECT, SEGMENT).detector_stage == "FINISH"


def test_recompute_tag_recounts_it(client: TestClient, seeded: Seeded) -> None:
    r = client.post(f"{TAGS}/tag_rfm/computes", headers=auth(seeded.token))
    assert r.status_code == 200
    assert r.json()["value"] is True
    assert f"{len(tag_members())} users" in r.json()["message"]


def test_job_result_through_the_project_path(client: TestClient, seeded: Seeded, worker: Worker) -> None:
    job = client.post(f"{SEGMENTS}/{SEGMENT}/export_jobs", headers=auth(seeded.token), json={}).json()
    worker.run_until_empty()
    plain = get(client, seeded.token, f"/v1/api/job/result/{job['id']}")
    scoped = get(client, seeded.token, f"{P}/job/result/{job['id']}")
    assert scoped == plain and scoped["stage"] == "FINISH"
    for token, url in (
        (seeded.admin_token, f"{OTHER}/job/result/{job['id']}"),
        (seeded.other_token, f"{OTHER}/job/result/{job['id']}"),
        (seeded.other_token, f"{P}/job/result/{job['id']}"),
    ):
        r = client.get(url, headers=auth(token))
        assert r.status_code == 404, (url, r.text)
        assert r.json()["error"]["code"] in ("JOB_NOT_FOUND", "PROJECT_NOT_FOUND")


def test_openapi_page_lists_the_family(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, method in [
        ("/v1/api/projects/{project_ID}/segment_profiles", "get"),
        ("/v1/api/projects/{project_ID}/segment_profiles/{segment_key}/users", "get"),
        ("/v1/api/projects/{project_ID}/segment_profiles/{segment_key}/users/export_jobs", "post"),
        ("/v1/api/projects/{project_ID}/segment_profiles/{segment_key}/computes", "post"),
        ("/v1/api/user_tags", "get"),
        ("/v1/api/projects/{project_ID}/user_tags", "get"),
        ("/v1/api/user_tags/{tag_key}/users", "get"),
        ("/v1/api/projects/{project_ID}/user_tags/{tag_key}/users", "get"),
        ("/v1/api/user_tags/{tag_key}/export_jobs", "post"),
        ("/v1/api/projects/{project_ID}/user_tags/{tag_key}/export_jobs", "post"),
        ("/v1/api/projects/{project_ID}/user_tags/{tag_key}/computes", "post"),
        ("/v1/api/users/{identityKey}/{value}", "get"),
        ("/v1/api/projects/{project_ID}/users/{identityKey}/{value}", "get"),
        ("/v1/api/projects/{project_ID}/job/result/{id}", "get"),
    ]:
        assert method in paths[path], path
    params = {
        p["name"]
        for p in paths["/v1/api/projects/{project_ID}/segment_profiles/{segment_key}/users"]["get"]["parameters"]
    }
    assert {"limit", "offset", "properties[]", "properties", "language"} <= params


# --- E10/E11 single user -------------------------------------------------------------------------
@pytest.mark.parametrize("gio_id", [1, 2, 3, 6])
def test_lookup_returns_every_identity_and_property(client: TestClient, seeded: Seeded, gio_id: int) -> None:
    user = user_of(gio_id)
    found = get(client, seeded.token, f"{P}/users/$basic_userId/{user['id_$basic_userId']}")
    assert found == {
        "gioId": str(gio_id),
        "identifications": {f"ids_{k[3:]}": api_value(k, user) for k in IDENTITIES},
        "properties": {
            k: user.get(k) for k in ("usr_gender", "usr_city", "usr_age", "usr_score", "usr_since", "tag_rfm")
        },
    }
    assert get(client, seeded.token, f"/v1/api/users/$basic_userId/{user['id_$basic_userId']}") == found


def test_lookup_by_one_of_several_identity_values(client: TestClient, seeded: Seeded) -> None:
    for device in ("d1", "d2"):
        assert get(client, seeded.token, f"{P}/users/$anonymous_user/{device}")["gioId"] == "1"
    assert get(client, seeded.token, f"{P}/users/$anonymous_user/d9")["gioId"] == "6"


def test_lookup_sees_only_its_projects_users(client: TestClient, seeded: Seeded) -> None:
    # C007 exists only in WlGk4Daj; Other001 holds C001 and C002
    assert get(client, seeded.other_token, f"{OTHER}/users/$basic_userId/C007")["gioId"] == "0"
    assert get(client, seeded.other_token, f"{OTHER}/users/$basic_userId/C002")["gioId"] == "2"
