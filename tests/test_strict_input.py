"""Strict, lossless validation (docs/limits.md): what is not exactly JSON, a boolean, one query value, or text a
file can hold is a 400 naming it, never stored in another form; and no engine message reaches a user."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from typer.testing import CliRunner

from segport.cli import cli
from segport.errors import ImportRejected, InvalidParameter, SegportError
from segport.services.data import SegmentSpec
from tests.conftest import PROJECT, Seeded, auth
from tests.test_seed_api import EXPORT

A = "/admin/v1/projects/" + PROJECT
SEGMENTS = f"/v1/api/projects/{PROJECT}/segment_profiles"


def error(r: Response, status: int = 400) -> tuple[str, str]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return body["error"]["code"], body["error"]["message"]


def post_json(client: TestClient, url: str, token: str, raw: bytes | str) -> Response:
    return client.post(url, headers={**auth(token), "Content-Type": "application/json"}, content=raw)


# --- NaN, Infinity, huge numbers, depth ------------------------------------------------------------------------
NON_JSON_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999"]


@pytest.mark.parametrize("number", NON_JSON_NUMBERS)
def test_a_rule_with_nan_or_infinity_is_refused_and_nothing_is_stored(
    client: TestClient, seeded: Seeded, number: str
) -> None:
    raw = f'{{"key": "seg_nan", "name": "n", "rule": {{"key": "usr_score", "op": "gt", "value": {number}}}}}'
    code, message = error(post_json(client, A + "/segments", seeded.admin_token, raw))
    assert code == "INVALID_BODY"
    assert "not valid JSON" in message
    assert client.get(A + "/segments/seg_nan", headers=auth(seeded.admin_token)).status_code == 404


@pytest.mark.parametrize("number", NON_JSON_NUMBERS)
def test_every_json_body_refuses_nan_and_infinity(client: TestClient, seeded: Seeded, number: str) -> None:
    bodies = [
        (EXPORT, seeded.token, f'{{"properties": ["usr_gender"], "bom": {number}}}'),
        (A + "/catalog", seeded.admin_token, f'{{"key": "usr_x", "name": "x", "description": {number}}}'),
        (A + "/catalog/usr_gender", seeded.admin_token, f'{{"name": [{number}]}}'),
    ]
    for url, token, raw in bodies:
        method = "PATCH" if url.endswith("usr_gender") else "POST"
        r = client.request(method, url, headers={**auth(token), "Content-Type": "application/json"}, content=raw)
        assert error(r)[0] == "INVALID_BODY", url


def test_a_rule_given_as_text_to_the_cli_refuses_nan(seeded: Seeded) -> None:
    rule = '{"key": "usr_score", "op": "gt", "value": NaN}'
    data = str(seeded.app.settings.data_dir)
    seeded.app.close()  # the CLI opens the data dir itself
    result = CliRunner().invoke(
        cli, ["--data-dir", data, "segment", "create", "-P", PROJECT, "--key", "seg_n", "--name", "n", "--rule", rule]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: rule is not valid JSON: NaN and Infinity are not JSON numbers")


@pytest.mark.parametrize("value", ["NaN", "inf", "-Infinity", "1e999"])
def test_a_double_rule_value_written_as_text_cannot_be_nan_either(seeded: Seeded, value: str) -> None:
    spec = SegmentSpec(key="seg_t", name="t", rule={"key": "usr_score", "op": "gt", "value": value})
    with pytest.raises(Exception, match="is not a valid double"):
        seeded.app.data.create_segment(PROJECT, spec)


def test_extremely_deep_json_is_a_quick_400_on_every_body(client: TestClient, seeded: Seeded) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for url, token in (
        (EXPORT, seeded.token),
        (A + "/segments", seeded.admin_token),
        (A + "/catalog", seeded.admin_token),
    ):
        for raw in (deep, f'{{"rule": {deep}}}'):
            code, message = error(post_json(client, url, token, raw))
            assert code == "INVALID_BODY"
            assert "deeper than 200 levels" in message


# --- booleans and repeated parameters -----------------------------------------------------------------------
@pytest.mark.parametrize("value", ['"yes"', "1", '"true"', "0", "null", '"false"'])
def test_bom_takes_only_true_or_false(client: TestClient, seeded: Seeded, value: str) -> None:
    code, message = error(post_json(client, EXPORT, seeded.token, f'{{"bom": {value}}}'))
    assert code == "INVALID_BODY" and "bom" in message


def test_bom_true_and_false_are_still_accepted(client: TestClient, seeded: Seeded) -> None:
    for value in ("true", "false"):
        assert post_json(client, EXPORT, seeded.token, f'{{"bom": {value}}}').status_code == 200


@pytest.mark.parametrize(
    "query", ["limit=1&limit=2", "offset=0&offset=0", "limit=1&offset=1&limit=1", "lim%69t=1&limit=1"]
)
def test_a_repeated_query_parameter_is_a_400(client: TestClient, seeded: Seeded, query: str) -> None:
    code, message = error(client.get(f"{SEGMENTS}?{query}", headers=auth(seeded.token)))
    assert code == "INVALID_PARAMETER" and "is given more than once" in message


def test_repeated_download_file_parameter_is_a_400(client: TestClient, seeded: Seeded) -> None:
    code, message = error(client.get("/download?file=a&file=b", headers=auth(seeded.token)))
    assert "'file' is given more than once" in message


def test_properties_may_still_repeat(client: TestClient, seeded: Seeded) -> None:
    r = client.get(
        f"{SEGMENTS}/seg_51activity/users?properties[]=usr_gender&properties[]=tag_rfm", headers=auth(seeded.token)
    )
    assert r.status_code == 200, r.text


# --- NUL, control characters and lone surrogates in paths and keys ----------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/v1/api/job/result/abc%00def",
        "/v1/api/job/result/%0A",
        "/v1/api/job/result/%ED%A0%80",  # a lone surrogate, percent-encoded as CESU would
        "/v1/api/job/result/%FF",
        f"/v1/api/projects/{PROJECT}/segment_profiles/seg%00x/users",
        f"/v1/api/projects/{PROJECT}%00/segment_profiles",
        f"{A}/catalog/usr_%00",
    ],
)
def test_nul_control_characters_and_bad_utf8_in_a_path_are_a_400(client: TestClient, seeded: Seeded, path: str) -> None:
    code, _ = error(client.get(path, headers=auth(seeded.admin_token)))
    assert code == "INVALID_PARAMETER"


@pytest.mark.parametrize("key", ["usr_a\\u0000b", "usr_\\ud800", "tag_\\udfff", "usr_\\u001b[31m"])
def test_nul_and_lone_surrogates_in_keys_of_bodies_are_a_400(client: TestClient, seeded: Seeded, key: str) -> None:
    for url, token, raw in (
        (EXPORT, seeded.token, f'{{"properties": ["{key}"]}}'),
        (A + "/catalog", seeded.admin_token, f'{{"key": "{key}"}}'),
        (
            A + "/segments",
            seeded.admin_token,
            f'{{"key": "seg_x", "name": "x", "rule": {{"key": "{key}", "op": "is_null"}}}}',
        ),
    ):
        r = post_json(client, url, token, raw)
        assert 400 <= r.status_code < 500 and r.status_code != 404, (url, r.text)
        error(r, r.status_code)


# --- the wrong shape at every level ------------------------------------------------------------------------
WRONG_SHAPES = [
    (EXPORT, "[]"),
    (EXPORT, '"properties"'),
    (EXPORT, "42"),
    (EXPORT, '{"properties": "usr_gender"}'),
    (EXPORT, '{"properties": [["usr_gender"]]}'),
    (EXPORT, '{"properties": [{"key": "usr_gender"}]}'),
    (EXPORT, '{"properties": [null]}'),
    (EXPORT, '{"fileFormat": ["csv"]}'),
    (EXPORT, '{"fileFormat": {"csv": true}}'),
    (A + "/catalog", "[]"),
    (A + "/catalog", '{"key": ["usr_x"]}'),
    (A + "/catalog", '{"key": "usr_x", "name": {"zh": "x"}}'),
    (A + "/segments", '{"key": "seg_x", "name": "x", "rule": []}'),
    (A + "/segments", '{"key": "seg_x", "name": "x", "rule": [{"key": "usr_gender"}]}'),
    (A + "/segments", '{"key": "seg_x", "name": "x", "rule": {"and": {"key": "usr_gender"}}}'),
    (A + "/segments", '{"key": "seg_x", "name": "x", "rule": {"and": [[]]}}'),
    (A + "/segments", '{"key": "seg_x", "name": "x", "rule": {"not": [1]}}'),
    (A + "/segments", '{"key": "seg_x", "name": "x", "rule": {"key": {"k": 1}, "op": "eq", "value": 1}}'),
    (A + "/segments", '{"key": "seg_x", "name": "x", "rule": {"key": "usr_age", "op": ["eq"], "value": 1}}'),
    (A + "/segments", '{"key": "seg_x", "name": "x", "rule": {"key": "usr_age", "op": "eq", "value": {"v": 1}}}'),
    (A + "/segments", '{"key": "seg_x", "name": "x", "rule": {"key": "usr_age", "op": "in", "value": [[1]]}}'),
    (A + "/segments", '{"key": "seg_x", "name": "x", "rule": {"key": "usr_age", "op": "between", "value": [1]}}'),
    (A + "/segments", '{"key": "seg_x", "name": ["x"], "rule": {"key": "usr_age", "op": "is_null"}}'),
]


@pytest.mark.parametrize(("url", "raw"), WRONG_SHAPES)
def test_valid_json_of_the_wrong_shape_is_a_400_at_every_level(
    client: TestClient, seeded: Seeded, url: str, raw: str
) -> None:
    token = seeded.token if url == EXPORT else seeded.admin_token
    code, _ = error(post_json(client, url, token, raw))
    assert code in ("INVALID_BODY", "INVALID_RULE", "INVALID_PARAMETER", "INVALID_KEY")


# --- display names ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["性别\n城市", "a\rb", "tab\there", "nul\u0000", "esc\u001b[31m", "sep\u2028x", "del\u007f"]
)
def test_a_display_name_with_a_control_character_is_refused(client: TestClient, seeded: Seeded, name: str) -> None:
    h = {**auth(seeded.admin_token), "Content-Type": "application/json"}
    before = client.get(A + "/catalog", headers=h).json()
    body = json.dumps({"name": name})
    code, message = error(client.patch(A + "/catalog/usr_gender", headers=h, content=body))
    assert code == "INVALID_PARAMETER" and "control character" in message
    code, _ = error(client.post(A + "/catalog", headers=h, content=json.dumps({"key": "usr_new", "name": name})))
    segment = {"key": "seg_c", "name": name, "rule": {"key": "usr_age", "op": "is_null"}}
    assert error(client.post(A + "/segments", headers=h, content=json.dumps(segment)))[0] == "INVALID_PARAMETER"
    assert client.get(A + "/catalog", headers=h).json() == before


@pytest.mark.parametrize("name", ["", "   "])
def test_renaming_to_an_empty_name_is_a_400_not_a_silent_reset(client: TestClient, seeded: Seeded, name: str) -> None:
    h = {**auth(seeded.admin_token), "Content-Type": "application/json"}
    code, message = error(client.patch(A + "/catalog/usr_gender", headers=h, content=json.dumps({"name": name})))
    assert "cannot be empty" in message
    names = {e["key"]: e["name"] for e in client.get(A + "/catalog", headers=h).json()}
    assert names["usr_gender"] == "性别"


def test_a_project_name_with_a_newline_is_refused(seeded: Seeded) -> None:
    with pytest.raises(InvalidParameter, match="control character U\\+000A"):
        seeded.app.meta.create_project("Nl000001", "line\nbreak")


def test_errors_show_the_key_as_sent(client: TestClient, seeded: Seeded) -> None:
    h = {**auth(seeded.admin_token), "Content-Type": "application/json"}
    _, message = error(client.patch(A + "/catalog/ids_$nobody", headers=h, content='{"name": "x"}'))
    assert "'ids_$nobody'" in message


# --- imported values ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "shown"), [("a\x00b", "U+0000"), ("bell\x07", "U+0007"), ("\x1b[31mred", "U+001B"), ("x\x7f", "U+007F")]
)
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_control_character_in_an_imported_value_is_refused_naming_row_and_key(
    seeded: Seeded, tmp_path: Path, value: str, shown: str, fmt: str
) -> None:
    rows = [{"id_$basic_userId": "N1", "usr_city": "ok"}, {"id_$basic_userId": "N2", "usr_city": value}]
    path = tmp_path / f"users.{fmt}"
    if fmt == "csv":
        path.write_text(
            "id_$basic_userId,usr_city\n" + "".join(f'{r["id_$basic_userId"]},"{r["usr_city"]}"\n' for r in rows)
        )
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ImportRejected) as caught:
        seeded.app.data.import_users(PROJECT, path)
    assert caught.value.message.startswith("row 2: key usr_city: value ")
    assert f"holds the control character {shown}" in caught.value.message


def test_a_control_character_in_a_multi_valued_identity_is_refused(seeded: Seeded, tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text('id_$basic_userId,id_$anonymous_user\nM1,"d1||d\x002"\n')
    with pytest.raises(ImportRejected, match="row 1: key id_\\$anonymous_user: .*control character U\\+0000"):
        seeded.app.data.import_users(PROJECT, path)


def test_tabs_and_line_breaks_in_imported_values_are_still_kept(seeded: Seeded, tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text('id_$basic_userId,usr_city\nT1,"a\tb\r\nc"\n')
    report = seeded.app.data.import_users(PROJECT, path)
    assert report.rows_read == 1


# --- malformed headers: one line in our words ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("id_$basic_userId,,usr_city", "column 2 of the header of users.csv has no name"),
        ("id_$basic_userId,usr_city,", "column 3 of the header of users.csv has no name"),
        ("id_$basic_userId, ,usr_city", "column 2 of the header of users.csv has no name"),
        ('id_$basic_userId,"",usr_city', "column 2 of the header of users.csv has no name"),
    ],
)
def test_an_empty_column_name_is_one_line_in_our_words(
    seeded: Seeded, tmp_path: Path, header: str, fragment: str
) -> None:
    path = tmp_path / "users.csv"
    path.write_text(header + "\nE1,x,y\n")
    with pytest.raises(ImportRejected) as caught:
        seeded.app.data.import_users(PROJECT, path)
    assert fragment in caught.value.message
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("id_$basic_userId,usr_city\nR1,a,b\n", "line 2 has 3 fields where the header has 2"),
        ('id_$basic_userId,usr_city\nR1,"open\n', "line 2 has a quote that is never closed"),
        (b"id_$basic_userId,usr_city\nR1,\xff\xfe\n", "users.csv is not UTF-8 text"),
        (b"id_$basic_userId,usr_city\n" + b"R0,x\n" * 5000 + b"R1,\xff\xfe\n", "line 5002 is not UTF-8 text"),
    ],
)
def test_a_malformed_csv_is_described_without_the_engines_words(
    seeded: Seeded, tmp_path: Path, body: str | bytes, fragment: str
) -> None:
    path = tmp_path / "users.csv"
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    with pytest.raises(ImportRejected) as caught:
        seeded.app.data.import_users(PROJECT, path)
    message = caught.value.message
    assert fragment in message, message
    for internal in ("Error:", "struct_pack", "strict_mode", "Possible fixes", "\n"):
        assert internal not in message


def test_import_errors_through_the_admin_api_name_the_users_file_and_api_parameters(
    client: TestClient, seeded: Seeded
) -> None:
    h = auth(seeded.admin_token)
    url = A + "/users/import"
    _, message = error(
        client.post(url, params={"filename": "nightly.csv"}, headers=h, content=b"id_$basic_userId,,x\n1,2,3\n")
    )
    assert "nightly.csv" in message and "upload-" not in message
    _, message = error(
        client.post(url, params={"filename": "n.jsonl"}, headers=h, content=b'{"id_$basic_userId": 1}\n{"a":\n')
    )
    assert "n.jsonl" in message and "upload-" not in message and "/uploads/" not in message
    _, message = error(client.post(url, params={"filename": "x.bin"}, headers=h, content=b"a\n"))
    assert "?format=" in message and "--format" not in message
    params = {"filename": "m.csv", "match": "usr_city"}
    _, message = error(client.post(url, params=params, headers=h, content=b"id_$basic_userId,usr_city\n1,a\n"))
    assert "?match=" in message and "--match" not in message and "'usr_city'" in message


@pytest.mark.parametrize(
    "raw",
    ['{"bom": true, "bom": false}', '{"properties": ["usr_gender"], "properties": []}'],
)
def test_a_key_given_twice_in_a_body_is_refused_not_silently_overwritten(
    client: TestClient, seeded: Seeded, raw: str
) -> None:
    code, message = error(post_json(client, EXPORT, seeded.token, raw))
    assert code == "INVALID_BODY" and "appears twice" in message
    rule = '{"key": "seg_d", "name": "d", "rule": {"key": "usr_age", "op": "gt", "op": "lt", "value": 1}}'
    assert "appears twice" in error(post_json(client, A + "/segments", seeded.admin_token, rule))[1]


def test_the_cli_sending_an_import_to_a_server_speaks_of_its_own_flags(
    client: TestClient, seeded: Seeded, tmp_path: Path
) -> None:
    from segport.remote import AdminClient

    admin = AdminClient("http://testserver", seeded.admin_token)
    admin.http.close()
    client.base_url = "http://testserver/admin/v1"  # type: ignore[assignment]
    client.headers["Authorization"] = f"Bearer {seeded.admin_token}"
    admin.http = client  # the TestClient is an httpx.Client over the app itself
    users = tmp_path / "nightly.csv"
    users.write_text("id_$basic_userId,usr_city\nC1,x\n")
    params = {"match": "usr_city", "filename": users.name}
    with pytest.raises(SegportError) as caught:
        admin.upload(f"/projects/{PROJECT}/users/import", users, params)
    assert caught.value.code == "IMPORT_REJECTED"
    assert caught.value.message == "--match 'usr_city' is not an identity in the catalogue"
