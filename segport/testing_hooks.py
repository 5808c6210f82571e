"""Points where a test can stop a real segport process between two commits, to kill it there, or make it fail.

With ``SEGPORT_TEST_PAUSE_AT=<name>`` set, the process reaching :func:`pause_point` ``name`` writes its pid to
the file ``SEGPORT_TEST_PAUSE_FILE`` (when set) and sleeps until it is killed. Nothing sets these variables
outside the tests; unset, a pause point is one dictionary lookup.

:func:`hold_point` is a pause a test ends: with ``SEGPORT_TEST_HOLD_AT=<name>`` set, a process reaching it while
the file ``SEGPORT_TEST_HOLD_FILE`` exists writes its pid to that path + ``.held`` and waits until the test
removes the file, then goes on (with no file it goes on at once).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def pause_point(name: str) -> None:
    if os.environ.get("SEGPORT_TEST_PAUSE_AT") != name:
        return
    marker = os.environ.get("SEGPORT_TEST_PAUSE_FILE")
    if marker:
        _write_pid(marker)
    while True:  # the test kills us here
        time.sleep(1)


def _write_pid(path: str) -> None:
    """This process's pid into ``path``, written whole then renamed: a test that sees the file never reads it
    empty."""
    written = Path(f"{path}.{os.getpid()}.tmp")
    written.write_text(str(os.getpid()), encoding="utf-8")
    os.replace(written, path)


def hold_point(name: str) -> None:
    if os.environ.get("SEGPORT_TEST_HOLD_AT") != name:
        return
    gate = Path(os.environ.get("SEGPORT_TEST_HOLD_FILE", ""))
    if not gate.name or not gate.exists():
        return
    _write_pid(f"{gate}.held")
    while gate.exists():  # the test removes it once it has acted
        time.sleep(0.01)


def fault_point(name: str) -> bool:
    """Whether a test asks for a fault at ``name`` now: with ``SEGPORT_TEST_FAULT=<name>`` and
    ``SEGPORT_TEST_FAULT_FILE`` holding a count, each pass takes one from the count and answers true while it
    lasts (the file is shared, so a served process and its restarts see one count). Unset: one lookup."""
    if os.environ.get("SEGPORT_TEST_FAULT") != name:
        return False
    counter = Path(os.environ.get("SEGPORT_TEST_FAULT_FILE", ""))
    try:
        left = int(counter.read_text(encoding="utf-8").strip() or 0)
    except (OSError, ValueError):
        return False
    if left <= 0:
        return False
    counter.write_text(str(left - 1), encoding="utf-8")
    return True
