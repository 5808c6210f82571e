"""The collect endpoints' raw-ASGI hot path (segport.http.collect.CollectFastPath) answers exactly what the routes
answer: the same status, headers and body for every accepted, duplicate and refused request, the same 405 to
another method, and nothing else of the API goes through it.

Two apps over one data dir: the public app as served, and the same app without the fast path (its collect routes
then answer, as they did before it existed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.http import collect
from segport.roles.inline import create_app
from segport.store.events import DataSources, EventSpool
from tests.test_events_collect import NOW, _bad_cases, _send, event

P = "Fastpth1"


def _answer(r: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    return r.status_code, sorted(r.headers.items()), r.content


@pytest.fixture
def clients(app: App) -> Iterator[tuple[TestClient, TestClient, str, str]]:
    app.meta.create_project(P, "fast path")
    key, source = DataSources(app.db).add(P, "web")
    fast = create_app(app, run_workers=False)
    routes = create_app(app, run_workers=False)
    routes.user_middleware = [m for m in routes.user_middleware if m.cls is not collect.CollectFastPath]
    assert len(routes.user_middleware) == len(fast.user_middleware) - 1
    with (
        TestClient(fast, raise_server_exceptions=False) as f,
        TestClient(routes, raise_server_exceptions=False) as r,
    ):
        yield f, r, key, source


def test_every_refusal_is_answered_byte_for_byte_as_the_routes_answer_it(
    app: App, clients: tuple[TestClient, TestClient, str, str]
) -> None:
    fast, routes, key, source = clients
    cases = _bad_cases(key, source)
    assert len(cases) > 20
    for name, body, opts, status, _code, _words in cases:
        a, b = _send(fast, key, body, opts), _send(routes, key, body, opts)
        assert _answer(a) == _answer(b), name
        assert a.status_code == status, name
    assert EventSpool(app.db).count() == 0


def test_accepted_and_duplicate_batches_get_the_routes_answers(
    app: App, clients: tuple[TestClient, TestClient, str, str]
) -> None:
    fast, routes, key, source = clients
    body = json.dumps([event(source, key), event(source, key, eventName="view")]).encode()
    url = f"/v3/projects/{key}/collect"
    for stm in (NOW, NOW + 1):
        first = fast.post(f"{url}?stm={stm}", content=body, headers={"content-type": "application/json"})
        again = routes.post(f"{url}?stm={stm}", content=body, headers={"content-type": "application/json"})
        assert first.json() == {"accepted": 2, "duplicate": False}
        assert again.json() == {"accepted": 2, "duplicate": True}  # the same request, whichever path took it
        assert first.headers["content-length"] == str(len(first.content))
        assert _answer(first)[:2] == _answer(routes.post(f"{url}?stm={stm + 100}", content=body))[:2]
    # a query string the SDKs do not send (percent-encoded, another parameter) is read as the routes read it
    for query in ("stm=%3" + str(NOW)[1:] + "&x=1", "x=%20&stm=" + str(NOW + 5)):
        a = fast.post(f"{url}?{query}", content=body, headers={"content-type": "application/json"})
        b = routes.post(f"{url}?{query}", content=body, headers={"content-type": "application/json; charset=utf-8"})
        assert a.status_code == b.status_code == 200 and b.json()["duplicate"], query
    items = json.dumps([{"key": "sku", "id": "1", "attributes": {"color": "red"}, "dataSourceId": source}]).encode()
    a = fast.post(f"/projects/{key}/collect/item", content=items, headers={"content-type": "application/json"})
    b = routes.post(f"/projects/{key}/collect/item", content=items, headers={"content-type": "application/json"})
    assert (a.json(), b.json()) == ({"accepted": 1, "duplicate": False}, {"accepted": 1, "duplicate": True})
    assert EventSpool(app.db).count() == 7  # 2 + 2 (stm + 100) + 2 (the queries) + 1 (items)


def test_only_a_post_on_a_collect_path_takes_it(
    clients: tuple[TestClient, TestClient, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, routes, key, source = clients
    for method, path in (
        ("GET", f"/v3/projects/{key}/collect"),
        ("PUT", f"/v3/projects/{key}/collect"),
        ("HEAD", f"/projects/{key}/collect/item"),
        ("POST", "/v3/projects//collect"),
        ("POST", f"/v3/projects/{key}/x/collect"),
        ("POST", f"/v3/projects/{key}/collect/more"),
    ):
        a, b = fast.request(method, path), routes.request(method, path)
        assert _answer(a) == _answer(b), (method, path)
        assert a.status_code in (404, 405), (method, path)
    assert fast.get(f"/v3/projects/{key}/collect").headers["allow"] == "POST"

    # the routes' handler is not what answers a POST on the fast app
    async def gone(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the collect route answered")

    monkeypatch.setattr(collect, "_collect", gone)
    body = json.dumps([event(source, key)]).encode()
    r = fast.post(f"/v3/projects/{key}/collect/?stm={NOW + 9}", content=body)  # EdgeGuard drops the slash first
    assert r.status_code == 200 and r.json() == {"accepted": 1, "duplicate": False}
    assert routes.post(f"/v3/projects/{key}/collect?stm={NOW + 10}", content=body).status_code == 500
