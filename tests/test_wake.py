"""The wake-up call from a submit to a process's idle export workers (segport/wake.py).

Several workers share one wake. With a plain event each cleared it after waiting, and one worker's clear could
wipe a wake that came for another, which then slept through a queued job until its next poll (2 s). Here no
wake is ever lost: not one that comes while a worker looks for a job, nor one meant for several workers."""

from __future__ import annotations

import threading
import time

from segport.wake import Wake


def test_a_wake_while_the_worker_looked_for_a_job_is_not_slept_through() -> None:
    wake = Wake()
    seen = wake.count  # before looking for a job
    wake.set()  # a submit, while the worker looks (and finds nothing yet)
    started = time.monotonic()
    assert wake.wait_past(seen, timeout=30) is True
    assert time.monotonic() - started < 5


def test_one_wake_reaches_every_waiting_worker() -> None:
    wake = Wake()
    seen = wake.count
    woken: list[bool] = []
    waiters = [threading.Thread(target=lambda: woken.append(wake.wait_past(seen, timeout=30))) for _ in range(3)]
    for t in waiters:
        t.start()
    time.sleep(0.05)
    wake.set()
    for t in waiters:
        t.join(10)
    assert woken == [True, True, True]


def test_without_a_wake_a_worker_waits_its_poll_interval_and_the_event_never_reads_as_set() -> None:
    wake = Wake()
    assert wake.wait_past(wake.count, timeout=0.05) is False
    wake.set()
    assert not wake.is_set()  # `segport worker`'s main thread sleeps on wake.wait(): a set must not make it spin
    assert wake.wait(0.01) is False
