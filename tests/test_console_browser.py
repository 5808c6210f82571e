"""The web console in a real browser: headless Chromium (Debian's package) driven by Playwright, against a
real `segport serve` process on a free port, stopped by PID.

Every page load collects the browser's console errors, uncaught exceptions and every request that left the
server: a test fails if any appears. Screenshots at 390 px and 1280 px go to tests/screenshots/ (git-ignored).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from segport.roles.inline import build
from segport.settings import Settings
from tests.conftest import OTHER_PROJECT, PROJECT, SEGMENT, LiveServer, seed_project, start_server, stop_server
from tests.expected import expected_csv

CHROMIUM = os.environ.get("SEGPORT_CHROMIUM", "/usr/bin/chromium")
HOW_TO_GET_IT = (
    f"the browser tests need Chromium at {CHROMIUM}: run `apt-get update && apt-get install -y chromium` "
    "(as root; .ci/run does it), or point SEGPORT_CHROMIUM at a Chromium binary"
)
if not Path(CHROMIUM).exists():
    if os.environ.get("SEGPORT_REQUIRE_BROWSER"):  # CI installs the browser: its absence there is a failure
        pytest.fail(HOW_TO_GET_IT, pytrace=False)
    pytest.skip(HOW_TO_GET_IT, allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev dependencies: make test")

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).parent / "screenshots"
KEYS = ["id_$basic_userId", "usr_gender", "tag_rfm"]


@dataclass
class Server:
    live: LiveServer
    token: str
    other_token: str


@dataclass
class Watch:
    """What a page did that it should not have: console errors, exceptions, requests to other hosts."""

    base_url: str
    problems: list[str] = field(default_factory=list)

    def attach(self, page: sync_api.Page) -> sync_api.Page:
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))

        def outside(route: sync_api.Route) -> None:
            # a request the browser really sends to another host (one that CSP blocked never gets here)
            self.problems.append(f"left the server: {route.request.url}")
            route.abort()

        page.route(lambda url: not url.startswith(self.base_url), outside)
        page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))
        return page


def _serve(tmp: Path, workers: bool) -> Iterator[Server]:
    app = build(Settings(data_dir=tmp / "data", serve_workers=False))
    try:
        seeded = seed_project(app, tmp)
    finally:
        app.close()
    env = {"SEGPORT_SERVE_WORKERS": "true" if workers else "false", "SEGPORT_POLL_INTERVAL_S": "0.1"}
    live = start_server(tmp / "data", tmp / "server.log", env=env)
    try:
        yield Server(live, seeded.token, seeded.other_token)
    finally:
        stop_server(live)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`segport serve` with its export workers: jobs run to FINISH."""
    yield from _serve(tmp_path_factory.mktemp("console-live"), workers=True)


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`segport serve` without workers: jobs stay queued until cancelled."""
    yield from _serve(tmp_path_factory.mktemp("console-idle"), workers=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def new_page(browser: sync_api.Browser, server: Server, width: int = 1280) -> tuple[sync_api.Page, Watch]:
    context = browser.new_context(
        base_url=server.live.base_url, viewport={"width": width, "height": 900}, accept_downloads=True
    )
    watch = Watch(server.live.base_url)
    return watch.attach(context.new_page()), watch


def sign_in(page: sync_api.Page, token: str) -> None:
    page.goto("/console/signin")
    page.get_by_label("Project token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/console/p/{PROJECT}/segments")


def api_file(server: Server, keys: list[str]) -> bytes:
    """The same export through the HTTP API, downloaded through /download."""
    base, headers = server.live.base_url, {"Authorization": f"Bearer {server.token}"}
    url = f"{base}/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs"
    job = httpx.post(url, headers=headers, json={"properties": keys, "fileFormat": "csv"}).json()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = httpx.get(f"{base}/v1/api/job/result/{job['id']}", headers=headers).json()
        if result["stage"] == "FINISH":
            return httpx.get(f"{base}/download?file={result['uris'][0]}", headers=headers).content
        time.sleep(0.1)
    raise AssertionError(f"the API export did not finish: {result}")


def unexpected(problems: list[str], status: int) -> list[str]:
    """``problems`` less Chromium's own note that a page answered ``status``: the test asked for that page."""
    notes = (f"the server responded with a status of {status}", f"HTTP {status}: ")
    return [p for p in problems if not any(n in p for n in notes)]


def choose(page: sync_api.Page, keys: list[str]) -> None:
    for box in page.locator('input[name="p"]').all():
        box.set_checked(box.get_attribute("value") in keys)


def test_sign_in_export_csv_and_download_the_apis_bytes(browser: sync_api.Browser, server: Server) -> None:
    page, watch = new_page(browser, server)
    sign_in(page, server.token)
    page.get_by_role("link", name="51活动用户").click()
    choose(page, KEYS)
    assert page.locator("[data-count]").inner_text() == "3"
    page.get_by_role("button", name="Export").click()
    page.wait_for_url("**/jobs/*")
    page.locator(".stage-FINISH").wait_for(timeout=30_000)
    assert page.locator('[data-field="rows"]').inner_text() == "6"
    with page.expect_download() as info:
        page.get_by_role("link", name="Download:").click()
    download = info.value
    assert download.suggested_filename.endswith("_UserList.csv")
    got = Path(download.path()).read_bytes()
    assert got == api_file(server, KEYS) == expected_csv(KEYS)
    page.get_by_role("link", name="Recent jobs").click()
    assert page.locator("tbody tr").count() >= 1 and page.locator("tbody .stage-FINISH").count() >= 1
    assert watch.problems == []


def focused(page: sync_api.Page) -> str:
    return str(
        page.evaluate(
            "() => { const e = document.activeElement; return [e.tagName, e.id, e.value || '', e.textContent.trim()].join('|') }"
        )
    )


def tab_to(page: sync_api.Page, needle: str, limit: int = 80) -> None:
    for _ in range(limit):
        page.keyboard.press("Tab")
        if needle in focused(page):
            return
    raise AssertionError(f"Tab never reached {needle!r}; focus ended on {focused(page)}")


def test_keyboard_only_flow(browser: sync_api.Browser, server: Server) -> None:
    page, watch = new_page(browser, server)
    page.goto("/console/signin")
    assert "INPUT|token" in focused(page)  # the token field has focus on arrival
    page.keyboard.type(server.token)
    page.keyboard.press("Enter")
    page.wait_for_url("**/segments")
    page.keyboard.press("Tab")
    assert "Skip to content" in focused(page)  # the first stop skips the navigation
    tab_to(page, "51活动用户")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/segments/{SEGMENT}")
    tab_to(page, "|usr_city|")
    page.keyboard.press("Space")
    assert page.locator("[data-count]").inner_text() == "3"  # two identities by default, and the city
    tab_to(page, "BUTTON|export")
    page.keyboard.press("Enter")
    page.wait_for_url("**/jobs/*")
    page.locator(".stage-FINISH").wait_for(timeout=30_000)
    tab_to(page, "Download:")
    with page.expect_download() as info:
        page.keyboard.press("Enter")
    text = Path(info.value.path()).read_text(encoding="utf-8")
    assert text.splitlines()[0] == '"gio_id","id_$basic_userId","id_$anonymous_user","usr_city"'
    assert watch.problems == []


def test_screenshots_at_phone_and_desktop_widths(browser: sync_api.Browser, server: Server) -> None:
    SHOTS.mkdir(exist_ok=True)
    for width in (390, 1280):
        page, watch = new_page(browser, server, width)
        sign_in(page, server.token)
        for name, path in [
            ("segments", f"/console/p/{PROJECT}/segments"),
            ("segment", f"/console/p/{PROJECT}/segments/{SEGMENT}"),
            ("jobs", f"/console/p/{PROJECT}/jobs"),
        ]:
            page.goto(path)
            page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name} at {width} px scrolls sideways by {overflow} px"
        page.goto(f"/console/p/{PROJECT}/segments?lang=zh")
        page.screenshot(path=str(SHOTS / f"segments-zh-{width}.png"), full_page=True)
        assert page.locator("html").get_attribute("lang") == "zh-CN"
        page.goto(f"/console/p/{PROJECT}/segments/{SEGMENT}?lang=en")
        page.context.close()
        assert watch.problems == []
    assert (SHOTS / "segment-390.png").stat().st_size > 1000


def test_a_token_of_one_project_cannot_reach_another(browser: sync_api.Browser, server: Server) -> None:
    page, watch = new_page(browser, server)
    sign_in(page, server.token)
    for path in (
        f"/console/p/{OTHER_PROJECT}/segments",
        f"/console/p/{OTHER_PROJECT}/segments/{SEGMENT}",
        f"/console/p/{OTHER_PROJECT}/jobs",
    ):
        response = page.goto(path)
        assert response is not None and response.status == 404, path
        assert page.get_by_role("alert").inner_text().startswith("PROJECT_NOT_FOUND")
    # project B's own token sees B and not A
    other, other_watch = new_page(browser, server)
    other.goto("/console/signin")
    other.get_by_label("Project token").fill(server.other_token)
    other.get_by_role("button", name="Sign in").click()
    other.wait_for_url(f"**/console/p/{OTHER_PROJECT}/segments")
    response = other.goto(f"/console/p/{PROJECT}/segments/{SEGMENT}")
    assert response is not None and response.status == 404
    assert unexpected(watch.problems + other_watch.problems, 404) == []


def test_a_form_without_its_csrf_token_is_refused(browser: sync_api.Browser, server: Server) -> None:
    page, watch = new_page(browser, server)
    sign_in(page, server.token)
    page.goto(f"/console/p/{PROJECT}/jobs")
    jobs_before = page.locator("tbody tr").count()
    page.goto(f"/console/p/{PROJECT}/segments/{SEGMENT}")
    page.evaluate("() => document.querySelector('#export-form input[name=csrf]').value = 'forged'")
    page.get_by_role("button", name="Export").click()
    assert page.get_by_role("alert").inner_text().startswith("CSRF_REFUSED")
    # a request from a script on another page carries the cookie only if SameSite allowed it; even with it,
    # a POST without the token is refused
    answer = page.request.post(f"/console/p/{PROJECT}/segments/{SEGMENT}", form={"action": "export", "p": "usr_city"})
    assert answer.status == 403
    page.goto(f"/console/p/{PROJECT}/jobs")
    assert page.locator("tbody tr").count() == jobs_before
    assert unexpected(watch.problems, 403) == []


def test_cancel_a_queued_job_and_sign_out(browser: sync_api.Browser, idle_server: Server) -> None:
    page, watch = new_page(browser, idle_server)
    sign_in(page, idle_server.token)
    page.goto(f"/console/p/{PROJECT}/segments/{SEGMENT}")
    page.get_by_role("button", name="Export").click()
    page.wait_for_url("**/jobs/*")
    assert page.locator('[data-field="stage"]').inner_text() == "Queued"
    job_id = page.url.rsplit("/", 1)[-1]
    page.get_by_role("button", name="Cancel").click()
    page.locator(".stage-ERROR").wait_for()
    assert "JOB_CANCELLED" in page.locator("#job-error").inner_text()
    assert page.get_by_role("button", name="Cancel").count() == 0
    headers = {"Authorization": f"Bearer {idle_server.token}"}
    result = httpx.get(f"{idle_server.live.base_url}/v1/api/job/result/{job_id}", headers=headers).json()
    assert result["stage"] == "ERROR" and result["error"]["code"] == "JOB_CANCELLED"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/signin")
    page.goto(f"/console/p/{PROJECT}/segments")
    assert "/console/signin" in page.url
    assert not [c for c in page.context.cookies() if c["name"] == "segport_session"]
    assert watch.problems == []


@pytest.mark.parametrize(("path", "ready"), [("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")])
def test_api_docs_render_offline(browser: sync_api.Browser, server: Server, path: str, ready: str) -> None:
    page, watch = new_page(browser, server)
    page.goto(path)
    page.locator(ready).first.wait_for(timeout=20_000)
    assert "segport" in page.locator(ready).first.inner_text()
    # ReDoc's sidebar always shows Redocly's logo from their CDN; the page's CSP blocks it (nothing leaves the
    # server: no request is made) and ReDoc hides the image. Chromium reports the blocked load: that alone is
    # expected.
    logo = "https://cdn.redoc.ly/redoc/logo-mini.svg' violates the following Content Security Policy"
    assert [p for p in watch.problems if logo not in p] == []


# WCAG relative luminance and contrast of each text element's colour against the first opaque background up
# its ancestors; returns the elements below 4.5:1 (AA for body text).
LOW_CONTRAST_JS = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const bg = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.offsetParent) continue;
    const a = lum(rgb(getComputedStyle(el).color).slice(0, 3)), b = lum(bg(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) low.push(`${el.tagName} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
  }
  return low;
}"""

UNLABELLED_JS = """() => [...document.querySelectorAll("input:not([type=hidden]), select, textarea, button")]
  .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !e.textContent.trim())
  .map((e) => e.outerHTML.slice(0, 80))"""


def test_pages_label_every_control_and_keep_text_contrast(browser: sync_api.Browser, server: Server) -> None:
    page, watch = new_page(browser, server)
    page.goto("/console/signin")
    assert page.evaluate(UNLABELLED_JS) == [] and page.evaluate(LOW_CONTRAST_JS) == []
    sign_in(page, server.token)
    for path in (f"/console/p/{PROJECT}/segments", f"/console/p/{PROJECT}/segments/{SEGMENT}"):
        page.goto(path)
        assert page.evaluate(UNLABELLED_JS) == [], path
        assert page.evaluate(LOW_CONTRAST_JS) == [], path
        assert page.locator("h1").count() == 1 and page.locator("main#main").count() == 1
    page.goto(f"/console/p/{PROJECT}/segments/{SEGMENT}")
    page.get_by_role("button", name="Export").click()
    page.locator(".stage-FINISH").wait_for(timeout=30_000)
    assert page.evaluate(LOW_CONTRAST_JS) == []
    assert watch.problems == []
