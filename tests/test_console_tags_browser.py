"""The console's tags in a real browser (headless Chromium driven by Playwright, as tests/test_console_browser.py,
against a real `segport serve` process stopped by PID): the tags page lists imported and computed tags with their
type and value type, and a computed tag's page shows its definition in words, as a segment's page shows its rule
(type and measure or attribute, the event with its where and window, a HORIZONTAL tag's source and layers), with
the JSON under it; an imported tag's page says where its values come from."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from segport.roles.inline import build
from segport.services.events import EventService
from segport.services.tags import TagService, TagSpec
from segport.settings import Settings
from tests import test_console_browser as browsing
from tests.conftest import PROJECT, seed_project, start_server, stop_server
from tests.test_console_browser import LOW_CONTRAST_JS, UNLABELLED_JS, Server, new_page, sign_in, sync_api

browser = browsing.browser  # the module's Chromium (a fixture)

SUM_BJ = {
    "type": "AGGREGATED",
    "event": "pay",
    "where": {"key": "city", "op": "eq", "value": "北京"},
    "measure": {"sum": "amount"},
    "time": {"last_days": 30},
}
LAYERS = {
    "type": "HORIZONTAL",
    "source": {"event": "pay", "measure": "count"},
    "layers": [{"name": "高", "gte": 2}, {"name": "低"}],
}
TOP_CITY = {"type": "TOP_N_ATTRIBUTE", "event": "pay", "attribute": "city", "pick": "most_frequent"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("console-tags")
    app = build(Settings(data_dir=tmp / "data", serve_workers=False))
    try:
        seeded = seed_project(app, tmp)
        events = EventService(app.meta, app.engine, app.data)
        events.declare(PROJECT, "amount", "金额", "int")
        now = int(time.time() * 1000)
        path = tmp / "events.csv"
        path.write_text(
            "event,time,userId,amount,city\n"
            f"pay,{now - 3_600_000},C001,120,北京\npay,{now - 7_200_000},C001,30,上海\npay,{now - 60_000},C002,5,北京\n",
            encoding="utf-8",
        )
        events.import_events(PROJECT, path)
        tags = TagService(app.data)
        tags.create(PROJECT, TagSpec(key="tag_pay_bj", name="北京支付金额", definition=SUM_BJ))
        tags.create(PROJECT, TagSpec(key="tag_pay_level", name="支付等级", definition=LAYERS, scheduler="ONCE"))
        tags.create(PROJECT, TagSpec(key="tag_top_city", name="常去城市", definition=TOP_CITY))
    finally:
        app.close()
    live = start_server(tmp / "data", tmp / "server.log", env={"SEGPORT_SERVE_WORKERS": "false"})
    try:
        yield Server(live, seeded.token, seeded.other_token)
    finally:
        stop_server(live)


def lines(page: sync_api.Page) -> list[str]:
    return [li.inner_text().strip() for li in page.locator(".rule-tree li").all()]


def test_the_tags_page_and_a_computed_tags_definition(browser: sync_api.Browser, server: Server) -> None:
    page, watch = new_page(browser, server)
    sign_in(page, server.token)
    page.get_by_role("link", name="Tags", exact=True).click()
    page.wait_for_url(f"**/console/p/{PROJECT}/tags")
    rows = {
        r.locator("td").nth(1).inner_text(): [c.inner_text().strip() for c in r.locator("td").all()]
        for r in page.locator("tbody tr").all()
    }
    assert rows["tag_rfm"][2:4] == ["DATA_SET_ATTRIBUTE", "STRING"]
    assert rows["tag_pay_bj"][2:6] == ["AGGREGATED", "INT", "7", "FINISH"]  # a sum: every user holds one
    assert rows["tag_pay_level"][2:4] == ["HORIZONTAL", "STRING"]
    assert rows["tag_top_city"][2:4] == ["TOP_N_ATTRIBUTE", "STRING"]

    page.get_by_role("link", name="北京支付金额").click()
    page.wait_for_url("**/tags/tag_pay_bj")
    assert page.locator("[data-tag-type]").inner_text() == "AGGREGATED"
    assert page.locator("[data-value-type]").inner_text() == "INT"
    assert lines(page) == ["AGGREGATED: sum of amount", 'did pay (where city = "北京"), in the last 30 days']
    page.get_by_text("The definition as JSON").click()
    shown = page.locator("details pre").inner_text()
    assert '"measure": {\n    "sum": "amount"\n  }' in shown and '"last_days": 30' in shown
    assert "Scheduler: DAILY" in page.locator(".meta").inner_text()

    page.goto(f"/console/p/{PROJECT}/tags/tag_pay_level")
    assert lines(page) == ["HORIZONTAL: layers of", "AGGREGATED: count", "did pay", "高: ≥ 2", "低: every other value"]
    assert page.locator("[data-value-type]").inner_text() == "STRING"
    assert "Scheduler: ONCE" in page.locator(".meta").inner_text()
    page.goto(f"/console/p/{PROJECT}/tags/tag_top_city?lang=zh")
    assert lines(page) == ["TOP_N_ATTRIBUTE: 出现最多的 city", "做过 pay"]

    page.goto(f"/console/p/{PROJECT}/tags/tag_rfm?lang=en")
    assert page.locator("[data-tag-type]").inner_text() == "DATA_SET_ATTRIBUTE"
    assert lines(page) == [] and "Imported with the profiles" in page.locator("main").inner_text()
    assert watch.problems == []


def test_the_tag_pages_label_every_control_and_keep_text_contrast(browser: sync_api.Browser, server: Server) -> None:
    page, watch = new_page(browser, server)
    sign_in(page, server.token)
    for path in (f"/console/p/{PROJECT}/tags", f"/console/p/{PROJECT}/tags/tag_pay_level"):
        page.goto(path)
        assert page.evaluate(UNLABELLED_JS) == [], path
        assert page.evaluate(LOW_CONTRAST_JS) == [], path
        assert page.locator("h1").count() == 1 and page.locator("main#main").count() == 1
    assert watch.problems == []


def test_another_projects_tags_are_not_found(browser: sync_api.Browser, server: Server) -> None:
    page, _ = new_page(browser, server)
    sign_in(page, server.token)
    answer = page.goto("/console/p/Other001/tags")
    assert answer is not None and answer.status == 404
    answer = page.goto(f"/console/p/{PROJECT}/tags/tag_nope")
    assert answer is not None and answer.status == 404 and "TAG_NOT_FOUND" in page.locator("main").inner_text()
