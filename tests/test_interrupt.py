"""Stopping an export from another thread (segport/engine/interrupt.py) at the edges of its life.

A cancel can arrive a moment after the export's statement ended and its DuckDB cursor closed; CI once saw the
cancel request itself fail there (``Connection already closed!``). Firing must never fail its caller, and the
engines must let go of their abort function before the thing it aborts is gone.
"""

from __future__ import annotations

import logging

import duckdb
import pytest

from segport.domain.jobs import Stage, TargetKind
from segport.engine.interrupt import Interrupt
from segport.services.exports import ExportRequest
from segport.store.queue import LeaseLost
from tests.conftest import PROJECT, SEGMENT, Seeded


def closed_cursor_interrupt() -> object:
    """The abort function of a DuckDB cursor that has been closed: calling it raises."""
    con = duckdb.connect()
    cur = con.cursor()
    cur.close()
    con.close()
    with pytest.raises(duckdb.ConnectionException):
        cur.interrupt()
    return cur.interrupt


def test_firing_after_the_statement_closed_does_not_fail_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    interrupt = Interrupt()
    interrupt.bind(closed_cursor_interrupt())  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, "segport.exports"):
        interrupt.fire("cancelled")
    assert interrupt.fired and interrupt.reason == "cancelled"
    assert "found nothing to stop" in caplog.text


def test_binding_after_a_fire_does_not_fail_the_engine() -> None:
    interrupt = Interrupt()
    interrupt.fire("lease lost")
    interrupt.bind(closed_cursor_interrupt())  # type: ignore[arg-type]  # aborts at once, and finds it ended
    assert interrupt.fired


class AbortAtUnbind(Interrupt):
    """Calls the engine's bound abort function at the moment the engine lets go of it: the latest moment a
    cancel could find it. It must still work then (the statement's connection still open)."""

    def __init__(self) -> None:
        super().__init__()
        self.outcomes: list[str] = []

    def unbind(self) -> None:
        abort = self._abort
        if abort is not None:
            try:
                abort()
                self.outcomes.append("ok")
            except Exception as exc:  # what a cancel at this moment would have met
                self.outcomes.append(f"{type(exc).__name__}: {exc}")
        super().unbind()


def test_the_engine_lets_go_of_its_abort_before_its_connection_closes(seeded: Seeded) -> None:
    app = seeded.app
    who = app.meta.authenticate(seeded.token)
    job = app.exports.submit(who, PROJECT, TargetKind.SEGMENT, SEGMENT, ExportRequest(["id_$basic_userId"]))
    row = app.queue.claim("probe", app.settings.lease_s)
    assert row is not None and row.id == job.id
    probe = AbortAtUnbind()
    app.runner.run(row, "probe", probe)
    assert probe.outcomes == ["ok"]
    assert app.queue.get(job.id).stage == Stage.FINISH.value


class FiresWhenAsked(Interrupt):
    """A cancel that lands while the engine is between two statements: at the ``on_ask``-th time the engine
    asks whether it was stopped, it fires (and ``cursor.interrupt()`` then finds no statement running)."""

    def __init__(self, on_ask: int) -> None:
        super().__init__()
        self.on_ask, self.asked = on_ask, 0

    @property
    def fired(self) -> bool:
        self.asked += 1
        if self.asked == self.on_ask:
            self.fire("cancelled")
        return self._fired


@pytest.mark.parametrize("on_ask", [1, 4], ids=["before-the-first-statement", "between-two-chunks"])
def test_an_export_stopped_between_statements_stops_there(seeded: Seeded, on_ask: int) -> None:
    app = seeded.app
    if not hasattr(app.engine, "chunk_rows"):
        pytest.skip("the chunked writer is DuckDB's")
    app.engine.chunk_rows = 1  # type: ignore[attr-defined]  # a chunk per member: asks 1, 2 = snapshot, plan; 3.. = chunks
    app.engine.one_scan = False  # type: ignore[attr-defined]  # the chunked writer, not one scan
    who = app.meta.authenticate(seeded.token)
    job = app.exports.submit(who, PROJECT, TargetKind.SEGMENT, SEGMENT, ExportRequest(["id_$basic_userId"]))
    row = app.queue.claim("probe", app.settings.lease_s)
    assert row is not None
    interrupt = FiresWhenAsked(on_ask)
    with pytest.raises(LeaseLost):
        app.runner.run(row, "probe", interrupt)
    assert interrupt.asked == on_ask + 1  # no statement asked again: the service asked once, to report it
    assert app.queue.get(job.id).stage == Stage.RUNNING.value  # nothing published (the cancel records ERROR)
