"""The web console without a browser (in-process HTTP): cookies, CSRF, languages, inline errors, project
isolation, downloads, security headers and the offline /docs and /redoc."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from segport.console.i18n import from_accept_language
from segport.roles.inline import create_app
from segport.worker import Worker
from tests.conftest import OTHER_PROJECT, PROJECT, SEGMENT, Seeded, auth
from tests.expected import expected_csv

SEG_PATH = f"/console/p/{PROJECT}/segments/{SEGMENT}"
KEYS = ["id_$basic_userId", "usr_gender", "tag_rfm"]


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def sign_in(client: TestClient, token: str) -> None:
    page = client.get("/console/signin")
    r = client.post("/console/signin", data={"csrf": csrf_of(page.text), "token": token}, follow_redirects=False)
    assert r.status_code == 303, r.text


@pytest.fixture
def console(seeded: Seeded) -> Iterator[TestClient]:
    with TestClient(create_app(seeded.app, run_workers=False), raise_server_exceptions=False) as c:
        sign_in(c, seeded.token)
        yield c


def export(client: TestClient, keys: list[str], **options: str) -> str:
    """Submit the console's export form; the job id it redirects to."""
    csrf = csrf_of(client.get(SEG_PATH).text)
    r = client.post(SEG_PATH, data={"csrf": csrf, "p": keys, "action": "export", **options}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return r.headers["location"].rsplit("/", 1)[-1]


def test_sign_in_sets_an_httponly_strict_session_cookie_not_the_token(seeded: Seeded) -> None:
    with TestClient(create_app(seeded.app, run_workers=False)) as c:
        page = c.get("/console/signin")
        r = c.post("/console/signin", data={"csrf": csrf_of(page.text), "token": seeded.token}, follow_redirects=False)
    assert r.status_code == 303 and seeded.token not in r.headers["location"]
    cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith("segport_session="))
    value = cookie.split(";")[0].split("=", 1)[1]
    assert value and value != seeded.token and seeded.token not in cookie
    flags = [f.strip().lower() for f in cookie.split(";")[1:]]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/console" in flags
    assert "secure" not in flags  # plain http: a Secure cookie would never come back


def test_session_cookie_is_secure_over_https(seeded: Seeded) -> None:
    with TestClient(create_app(seeded.app, run_workers=False), base_url="https://testserver") as c:
        page = c.get("/console/signin")
        r = c.post("/console/signin", data={"csrf": csrf_of(page.text), "token": seeded.token}, follow_redirects=False)
    cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith("segport_session="))
    assert "secure" in [f.strip().lower() for f in cookie.split(";")]


def test_a_wrong_token_is_refused_inline_with_the_api_code(seeded: Seeded) -> None:
    with TestClient(create_app(seeded.app, run_workers=False)) as c:
        page = c.get("/console/signin")
        r = c.post("/console/signin", data={"csrf": csrf_of(page.text), "token": "nope"})
        assert r.status_code == 401 and "UNAUTHORIZED" in r.text and "invalid or revoked token" in r.text
        assert c.get("/console/projects", follow_redirects=False).headers["location"].startswith("/console/signin")


def test_sign_in_without_its_csrf_cookie_is_refused(seeded: Seeded) -> None:
    with TestClient(create_app(seeded.app, run_workers=False)) as c:
        r = c.post("/console/signin", data={"csrf": "forged", "token": seeded.token}, follow_redirects=False)
    assert r.status_code == 403 and "CSRF_REFUSED" in r.text
    assert not any(v.startswith("segport_session=") for v in r.headers.get_list("set-cookie"))


def test_forms_without_the_csrf_token_change_nothing(console: TestClient, seeded: Seeded) -> None:
    r = console.post(SEG_PATH, data={"p": KEYS, "action": "export"})
    assert r.status_code == 403 and "CSRF_REFUSED" in r.text
    r = console.post(SEG_PATH, data={"csrf": "wrong", "p": KEYS, "action": "export"})
    assert r.status_code == 403
    assert seeded.app.queue.list(PROJECT) == []
    job_id = export(console, KEYS)
    r = console.post(f"/console/p/{PROJECT}/jobs/{job_id}/cancel", data={"csrf": "wrong"})
    assert r.status_code == 403 and seeded.app.queue.get(job_id).stage == "NONE"
    r = console.post("/console/signout", data={})
    assert r.status_code == 403
    assert console.get(f"/console/p/{PROJECT}/segments").status_code == 200  # still signed in


def test_sign_out_ends_the_session_on_the_server(console: TestClient) -> None:
    cookie = console.cookies.get("segport_session")
    csrf = csrf_of(console.get(f"/console/p/{PROJECT}/segments").text)
    r = console.post("/console/signout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/signin"
    console.cookies.set("segport_session", cookie or "", path="/console")  # a copied cookie is dead too
    r = console.get(f"/console/p/{PROJECT}/segments", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/signin")


def test_revoking_the_token_ends_its_console_sessions(console: TestClient, seeded: Seeded) -> None:
    seeded.app.meta.revoke_token(seeded.token)
    r = console.get(f"/console/p/{PROJECT}/segments", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/signin")
    status = console.get(f"/console/p/{PROJECT}/jobs/nosuchjb/status")
    assert status.status_code == 401 and status.json()["error"]["code"] == "UNAUTHORIZED"


def test_sign_in_goes_back_only_to_console_pages(seeded: Seeded) -> None:
    with TestClient(create_app(seeded.app, run_workers=False)) as c:
        for target, expected in [
            (f"/console/p/{PROJECT}/jobs", f"/console/p/{PROJECT}/jobs"),
            ("//evil.example/console/", "/console/projects"),
            ("https://evil.example/", "/console/projects"),
            ("/console/..//evil.example", "/console/projects"),
        ]:
            page = c.get("/console/signin", params={"next": target})
            r = c.post(
                "/console/signin",
                data={"csrf": csrf_of(page.text), "token": seeded.token, "next": target},
                follow_redirects=False,
            )
            assert r.headers["location"] == expected


def test_segments_list_and_search(console: TestClient) -> None:
    page = console.get(f"/console/p/{PROJECT}/segments")
    assert page.status_code == 200 and "51活动用户" in page.text and SEGMENT in page.text
    assert ">6<" in page.text and "FINISH" in page.text  # size and detector stage
    assert SEGMENT in console.get(f"/console/p/{PROJECT}/segments", params={"q": "活动"}).text
    assert SEGMENT not in console.get(f"/console/p/{PROJECT}/segments", params={"q": "nothing-like-it"}).text


def test_segment_page_groups_the_catalogue_and_previews_20_members(console: TestClient) -> None:
    page = console.get(SEG_PATH).text
    for legend in ("Identities", "User properties", "Tags"):
        assert f"<legend>{legend}" in page
    assert "用户ID" in page and "会员等级" in page and "/ 60 selected" in page
    assert "Preview: the first 6 of 6 members" in page and "C001" in page and "d1||d2" in page
    csrf = csrf_of(page)
    preview = console.post(SEG_PATH, data={"csrf": csrf, "p": ["usr_city"], "action": "preview"}).text
    assert "城市" in preview and "上海, 浦东" in preview and "C001" not in preview


def test_export_errors_are_the_services_shown_inline(console: TestClient, seeded: Seeded, client: TestClient) -> None:
    csrf = csrf_of(console.get(SEG_PATH).text)
    cases = [
        ([f"usr_k{i}" for i in range(61)], "TOO_MANY_PROPERTIES"),
        (["usr_nope"], "UNKNOWN_KEY"),
    ]
    url = f"/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs"
    for keys, code in cases:
        page = console.post(SEG_PATH, data={"csrf": csrf, "p": keys, "action": "export"})
        api = client.post(url, headers=auth(seeded.token), json={"properties": keys}).json()["error"]
        assert page.status_code == 400 and api["code"] == code
        assert code in page.text and api["message"].replace("'", "&#39;") in page.text
    page = console.post(SEG_PATH, data={"csrf": csrf, "p": KEYS, "action": "export", "fileFormat": "xml"})
    assert page.status_code == 400 and "INVALID_PARAMETER" in page.text
    assert seeded.app.queue.list(PROJECT) == []


def test_console_download_is_the_api_file(console: TestClient, seeded: Seeded, client: TestClient) -> None:
    job_id = export(console, KEYS, bom="1")
    Worker(seeded.app, threads=1).run_until_empty()
    page = console.get(f"/console/p/{PROJECT}/jobs/{job_id}").text
    assert "Finished" in page and "Cancel" not in page
    href = re.search(r'href="(/console/download\?file=[^"]+)"', page)
    assert href
    body = console.get(href.group(1).replace("&amp;", "&"))
    result = client.get(f"/v1/api/job/result/{job_id}", headers=auth(seeded.token)).json()
    api = client.get(f"/download?file={result['uris'][0]}", headers=auth(seeded.token))
    assert body.status_code == 200 and body.content == api.content == b"\xef\xbb\xbf" + expected_csv(KEYS)
    assert body.headers["content-disposition"] == api.headers["content-disposition"]
    status = console.get(f"/console/p/{PROJECT}/jobs/{job_id}/status").json()
    assert status["stage"] == "FINISH" and status["uris"] == result["uris"] and status["rows"] == 6
    jobs = console.get(f"/console/p/{PROJECT}/jobs").text
    assert job_id in jobs and "Finished" in jobs


def test_another_projects_pages_jobs_and_files_are_not_found(console: TestClient, seeded: Seeded) -> None:
    other = TestClient(create_app(seeded.app, run_workers=False))
    with other:
        sign_in(other, seeded.other_token)
        csrf = csrf_of(other.get(f"/console/p/{OTHER_PROJECT}/segments/{SEGMENT}").text)
        r = other.post(
            f"/console/p/{OTHER_PROJECT}/segments/{SEGMENT}",
            data={"csrf": csrf, "p": KEYS, "action": "export"},
            follow_redirects=False,
        )
        their_job = r.headers["location"].rsplit("/", 1)[-1]
    Worker(seeded.app, threads=1).run_until_empty()
    uri = seeded.app.exports.uris(seeded.app.queue.get(their_job))[0]
    for path in (
        f"/console/p/{OTHER_PROJECT}/segments",
        f"/console/p/{OTHER_PROJECT}/segments/{SEGMENT}",
        f"/console/p/{OTHER_PROJECT}/jobs",
        f"/console/p/{OTHER_PROJECT}/jobs/{their_job}",
        f"/console/p/{PROJECT}/jobs/{their_job}",
        f"/console/download?file={uri}",
    ):
        r = console.get(path)
        assert r.status_code == 404, path
        assert "NOT_FOUND" in r.text and "C001" not in r.text
    assert console.get(f"/console/p/{OTHER_PROJECT}/jobs/{their_job}/status").status_code == 404
    csrf = csrf_of(console.get(SEG_PATH).text)
    r = console.post(f"/console/p/{OTHER_PROJECT}/jobs/{their_job}/cancel", data={"csrf": csrf})
    assert r.status_code == 404 and seeded.app.queue.get(their_job).stage == "FINISH"


def test_language_from_query_cookie_or_accept_language(seeded: Seeded) -> None:
    with TestClient(create_app(seeded.app, run_workers=False)) as c:
        assert "Sign in" in c.get("/console/signin").text
        zh = c.get("/console/signin", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
        assert "登录" in zh.text and 'lang="zh-CN"' in zh.text
        chosen = c.get("/console/signin", params={"lang": "zh"})
        assert "用项目令牌登录" in chosen.text
        assert "登录" in c.get("/console/signin").text  # remembered in a cookie
        assert "Sign in" in c.get("/console/signin", params={"lang": "en"}).text


def test_accept_language_ranking() -> None:
    assert from_accept_language("") == "en"
    assert from_accept_language("fr-FR, zh-TW;q=0.5") == "zh"
    assert from_accept_language("en;q=0.4, zh-CN;q=0.9") == "zh"
    assert from_accept_language("zh;q=0, en") == "en"
    assert from_accept_language("de, fr;q=oops") == "en"


def test_console_pages_have_security_headers_and_no_inline_script(console: TestClient) -> None:
    for path in (f"/console/p/{PROJECT}/segments", SEG_PATH, f"/console/p/{PROJECT}/jobs", "/console/signin"):
        r = console.get(path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
        assert not re.search(r"<script(?![^>]*\bsrc=)", r.text), path  # every script is a file
        assert not re.search(r"\sstyle=", r.text) and "<style" not in r.text, path
    assert console.get("/console/static/console.js").headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_api_docs_load_every_asset_from_this_server(client: TestClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/") for a in assets), assets
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.text)
    for asset in assets:
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 200, asset


def test_openapi_does_not_list_the_console(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not any(p.startswith(("/console", "/docs", "/redoc")) for p in paths)


def test_a_tag_export_shows_in_the_console_without_a_segment_link(
    console: TestClient, seeded: Seeded, client: TestClient
) -> None:
    created = client.post(f"/v1/api/projects/{PROJECT}/user_tags/tag_rfm/export_jobs", headers=auth(seeded.token))
    job_id = created.json()["id"]
    page = console.get(f"/console/p/{PROJECT}/jobs/{job_id}")
    assert page.status_code == 200 and "会员等级" in page.text and "/segments/tag_rfm" not in page.text
    assert job_id in console.get(f"/console/p/{PROJECT}/jobs").text


def test_signing_in_again_ends_the_previous_session(console: TestClient, seeded: Seeded) -> None:
    first_cookie = console.cookies.get("segport_session")
    sign_in(console, seeded.other_token)
    assert console.get(f"/console/p/{OTHER_PROJECT}/segments").status_code == 200
    assert console.get(f"/console/p/{PROJECT}/segments").status_code == 404
    console.cookies.set("segport_session", first_cookie or "", path="/console")
    r = console.get(f"/console/p/{PROJECT}/segments", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/signin")
