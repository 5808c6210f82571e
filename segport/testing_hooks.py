"""Points where a test can stop a real segport process between two commits, to kill it there.

With ``SEGPORT_TEST_PAUSE_AT=<name>`` set, the process reaching :func:`pause_point` ``name`` writes its pid to
the file ``SEGPORT_TEST_PAUSE_FILE`` (when set) and sleeps until it is killed. Nothing sets these variables
outside the tests; unset, a pause point is one dictionary lookup.
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
        Path(marker).write_text(str(os.getpid()), encoding="utf-8")
    while True:  # the test kills us here
        time.sleep(1)
