"""Bad input to the API family: each is a clear 4xx JSON error, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.roles.inline import build, create_app
from segport.settings import Settings
from tests.conftest import CATALOG_CSV, OTHER_PROJECT, SEGMENT, Seeded, auth, seed_project
from tests.family_helpers import OTHER, SEG_USERS, SEGMENTS, TAG_USERS, TAGS, P

PAGED = [SEGMENTS, SEG_USERS, TAGS, TAG_USERS, "/v1/api/user_tags", "/v1/api/user_tags/tag_rfm/users"]
USER_PAGES = [SEG_USERS, TAG_USERS, "/v1/api/user_tags/tag_rfm/users"]


@dataclass
class Shared:
    client: TestClient
    token: str


@pytest.fixture(scope="module")
def ro(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One seeded app for the tests that only read: seeding per test would dominate their run time."""
    tmp = tmp_path_factory.mktemp("family-errors")
    app = build(Settings(data_dir=tmp / "data", serve_workers=False))
    seeded = seed_project(app, tmp)
    with TestClient(create_app(app, run_workers=False), raise_server_exceptions=False) as client:
        yield Shared(client, seeded.token)
    app.close()


def error_of(r: httpx.Response, status: int, code: str) -> str:
    """Assert the one error shape, the status and the code; return the message."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]["message"]


@pytest.mark.parametrize("url", PAGED)
@pytest.mark.parametrize(
    "params,name",
    [
        ({"limit": "1001"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "100.5"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "nan"}, "limit"),
        ({"limit": "inf"}, "limit"),
        ({"limit": "1e400"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "0.5"}, "offset"),
        ({"offset": "-0.5"}, "offset"),
        ({"offset": "99999999999999999999"}, "offset"),
    ],
)
def test_bad_limit_or_offset_is_a_400_naming_it(ro: Shared, url: str, params: dict, name: str) -> None:
    message = error_of(ro.client.get(url, headers=auth(ro.token), params=params), 400, "INVALID_PARAMETER")
    assert name in message


@pytest.mark.parametrize("url", PAGED)
def test_limit_bounds_1_and_1000_are_accepted(ro: Shared, url: str) -> None:
    for limit in ("1", "1000", "1000.0"):
        r = ro.client.get(url, headers=auth(ro.token), params={"limit": limit})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("url", USER_PAGES)
def test_page_rejects_21_properties(ro: Shared, url: str) -> None:
    ok = ro.client.get(url, headers=auth(ro.token), params={"properties[]": ["usr_gender"] * 21})
    assert ok.status_code == 200, ok.text  # duplicates are dropped before counting
    message = error_of(
        ro.client.get(url, headers=auth(ro.token), params={"properties[]": [f"usr_k{i}" for i in range(21)]}),
        400,
        "TOO_MANY_PROPERTIES",
    )
    assert "20" in message
    mixed = {"properties[]": [f"usr_k{i}" for i in range(11)], "properties": [f"tag_k{i}" for i in range(10)]}
    error_of(ro.client.get(url, headers=auth(ro.token), params=mixed), 400, "TOO_MANY_PROPERTIES")


@pytest.mark.parametrize("url", USER_PAGES)
def test_page_rejects_unknown_keys_naming_them(ro: Shared, url: str) -> None:
    params = {"properties[]": ["usr_gender", "usr_nope", "tag_missing", "bogus"]}
    message = error_of(ro.client.get(url, headers=auth(ro.token), params=params), 400, "UNKNOWN_KEY")
    for key in ("usr_nope", "tag_missing", "bogus"):
        assert key in message
    assert "usr_gender" not in message


@pytest.mark.parametrize(
    "method,url",
    [
        ("GET", f"{SEGMENTS}/seg_nope/users"),
        ("POST", f"{SEGMENTS}/seg_nope/computes"),
        ("POST", f"{SEGMENTS}/seg_nope/users/export_jobs"),
        ("POST", f"{SEGMENTS}/seg_nope/export_jobs"),
        ("GET", f"{SEGMENTS}/seg-with-dash/users"),
    ],
)
def test_unknown_segment_is_a_404(ro: Shared, method: str, url: str) -> None:
    error_of(ro.client.request(method, url, headers=auth(ro.token)), 404, "SEGMENT_NOT_FOUND")


@pytest.mark.parametrize(
    "method,url",
    [
        ("GET", f"{TAGS}/tag_nope/users"),
        ("GET", f"{TAGS}/usr_gender/users"),
        ("GET", f"{TAGS}/gender/users"),
        ("GET", f"{TAGS}/id_$basic_userId/users"),
        ("GET", "/v1/api/user_tags/tag_nope/users"),
        ("POST", f"{TAGS}/tag_nope/export_jobs"),
        ("POST", "/v1/api/user_tags/tag_nope/export_jobs"),
        ("POST", f"{TAGS}/tag_nope/computes"),
    ],
)
def test_unknown_tag_is_a_404(ro: Shared, method: str, url: str) -> None:
    error_of(ro.client.request(method, url, headers=auth(ro.token)), 404, "TAG_NOT_FOUND")


@pytest.mark.parametrize(
    "key,code",
    [
        ("$nope", "UNKNOWN_KEY"),
        ("usr_gender", "UNKNOWN_KEY"),
        ("tag_rfm", "UNKNOWN_KEY"),
        ("1abc", "INVALID_KEY"),
        ("a-b", "INVALID_KEY"),
        ("ids_", "INVALID_KEY"),
    ],
)
@pytest.mark.parametrize("base", [P, "/v1/api"])
def test_unknown_identity_key_is_a_400(ro: Shared, key: str, code: str, base: str) -> None:
    message = error_of(ro.client.get(f"{base}/users/{key}/C001", headers=auth(ro.token)), 400, code)
    assert key in message


@pytest.mark.parametrize("value", ["nobody", "C001 ", "c001", "%", "a/b/c", "'; DROP TABLE x; --"])
@pytest.mark.parametrize("base", [P, "/v1/api"])
def test_unknown_user_is_200_with_gio_id_0(ro: Shared, value: str, base: str) -> None:
    r = ro.client.get(f"{base}/users/$basic_userId/{value}", headers=auth(ro.token))
    assert r.status_code == 200, r.text
    assert r.json() == {"gioId": "0", "identifications": {}, "properties": {}}


ALL_PROJECT_PATHS = [
    ("GET", "/segment_profiles"),
    ("GET", f"/segment_profiles/{SEGMENT}/users"),
    ("POST", f"/segment_profiles/{SEGMENT}/users/export_jobs"),
    ("POST", f"/segment_profiles/{SEGMENT}/computes"),
    ("GET", "/user_tags"),
    ("GET", "/user_tags/tag_rfm/users"),
    ("POST", "/user_tags/tag_rfm/export_jobs"),
    ("POST", "/user_tags/tag_rfm/computes"),
    ("GET", "/users/$basic_userId/C001"),
    ("GET", "/job/result/AAAAAAAA"),
]


@pytest.mark.parametrize("method,path", ALL_PROJECT_PATHS)
def test_another_projects_paths_are_404(ro: Shared, method: str, path: str) -> None:
    r = ro.client.request(method, f"{OTHER}{path}", headers=auth(ro.token))
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] in ("PROJECT_NOT_FOUND", "JOB_NOT_FOUND")


@pytest.mark.parametrize("method,path", ALL_PROJECT_PATHS)
def test_family_paths_need_a_token(ro: Shared, method: str, path: str) -> None:
    error_of(ro.client.request(method, f"{P}{path}"), 401, "UNAUTHORIZED")
    error_of(ro.client.request(method, f"{P}{path}", headers=auth("not-a-token")), 401, "UNAUTHORIZED")


PLATFORM_PATHS = [
    ("GET", "/v1/api/user_tags"),
    ("GET", "/v1/api/user_tags/tag_rfm/users"),
    ("POST", "/v1/api/user_tags/tag_rfm/export_jobs"),
    ("GET", "/v1/api/users/$basic_userId/C001"),
]


@pytest.mark.parametrize("method,url", PLATFORM_PATHS)
def test_platform_paths_refuse_a_token_of_several_projects(
    client: TestClient, seeded: Seeded, method: str, url: str
) -> None:
    _, both = seeded.app.meta.create_token(["WlGk4Daj", OTHER_PROJECT])
    for token in (both, seeded.admin_token):
        message = error_of(client.request(method, url, headers=auth(token)), 400, "PROJECT_REQUIRED")
        assert "exactly one project" in message and "/v1/api/projects/{project_ID}/" in message


@pytest.mark.parametrize("method,url", PLATFORM_PATHS)
def test_platform_paths_answer_an_admin_token_when_there_is_one_project(
    client: TestClient, app: App, method: str, url: str
) -> None:
    app.meta.create_project("Solo0001", "唯一")
    app.data.import_catalog_csv("Solo0001", CATALOG_CSV)
    _, admin = app.meta.create_token([], admin=True)
    r = client.request(method, url, headers=auth(admin))
    assert r.status_code == 200, r.text


def test_platform_paths_with_no_project_are_404(client: TestClient, app: App) -> None:
    _, admin = app.meta.create_token([], admin=True)
    error_of(client.get("/v1/api/user_tags", headers=auth(admin)), 404, "PROJECT_NOT_FOUND")


@pytest.mark.parametrize("stage", ["RUNNING", "NONE"])
def test_recompute_refused_while_busy_is_a_409(client: TestClient, seeded: Seeded, stage: str) -> None:
    seeded.app.meta.update_segment("WlGk4Daj", SEGMENT, detector_stage=stage)
    message = error_of(client.post(f"{SEGMENTS}/{SEGMENT}/computes", headers=auth(seeded.token)), 409, "DETECTOR_BUSY")
    assert "FINISH or ERROR" in message


@pytest.mark.parametrize(
    "body",
    [
        '{"properties": "usr_gender"}',
        '{"nope": 1}',
        "[1,2",
        '{"fileFormat": "xml"}',
        '{"properties": ["usr_nope"]}',
        '{"compression": "zip"}',
        '{"bom": "maybe"}',
    ],
)
@pytest.mark.parametrize(
    "url",
    [f"{TAGS}/tag_rfm/export_jobs", "/v1/api/user_tags/tag_rfm/export_jobs", f"{SEGMENTS}/{SEGMENT}/users/export_jobs"],
)
def test_bad_export_bodies_on_the_family_addresses_are_400(ro: Shared, body: str, url: str) -> None:
    r = ro.client.post(url, headers={**auth(ro.token), "Content-Type": "application/json"}, content=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in ("INVALID_BODY", "INVALID_PARAMETER", "UNKNOWN_KEY")


@pytest.mark.parametrize(
    "url",
    [
        f"{SEG_USERS}?properties[]=",
        f"{SEG_USERS}?properties[]=%00",
        f"{SEG_USERS}?limit=%00",
        f"{SEG_USERS}?limit=" + "9" * 5000,
        f"{P}/users/$basic_userId/" + "x" * 5000,
        f"{TAGS}/" + "t" * 500 + "/users",
        f"{SEGMENTS}/" + "s" * 500 + "/users",
        f"{P}/users/" + "$" * 300 + "/x",
    ],
)
def test_garbage_never_makes_a_500(ro: Shared, url: str) -> None:
    r = ro.client.get(url, headers=auth(ro.token))
    assert 200 <= r.status_code < 500, r.text
    if r.status_code >= 400:
        assert set(r.json()["error"]) == {"code", "message"}
