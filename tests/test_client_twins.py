"""Client and AsyncClient are one implementation (issue 15): each public method of either twin is made from the
same function of segport.client.base, so signatures, defaults and docstrings cannot drift apart, and what
`help()` shows is the method a caller sees (the value, not the flow behind it)."""

from __future__ import annotations

import inspect

import pytest

from segport.client import AsyncClient, Client, base

API = [
    "submit_segment_export",
    "submit_tag_export",
    "job_result",
    "wait",
    "download",
    "export_segment",
    "export_tag",
]


@pytest.mark.parametrize("name", API)
def test_both_twins_make_the_method_from_one_function(name: str) -> None:
    flow = getattr(base, name)
    for twin in (Client, AsyncClient):
        method = vars(twin)[name]
        assert method.__wrapped__ is flow
        assert method.__doc__ == flow.__doc__ and method.__doc__
        assert method.__qualname__ == f"{twin.__name__}.{name}"  # tracebacks and reprs name the twin
    assert inspect.signature(getattr(Client, name)) == inspect.signature(getattr(AsyncClient, name))
    assert inspect.iscoroutinefunction(getattr(AsyncClient, name)) and not inspect.iscoroutinefunction(
        getattr(Client, name)
    )


def test_signatures_show_the_value_not_the_flow() -> None:
    assert inspect.signature(Client.wait).return_annotation == "JobResult"
    assert inspect.signature(AsyncClient.download).return_annotation == "Path"
    bound = inspect.signature(Client("http://127.0.0.1:9", "t").export_segment)
    assert list(bound.parameters)[:2] == ["project", "segment"] and bound.parameters["timeout"].default == 3600.0


def test_the_twins_define_no_public_method_of_their_own() -> None:
    # anything public beyond closing must be written once in base.py, not twice in sync.py and aio.py
    own = {
        twin: {n for n, v in vars(twin).items() if callable(v) and not n.startswith("_") and n not in API}
        for twin in (Client, AsyncClient)
    }
    assert own == {Client: {"close"}, AsyncClient: {"aclose"}}
