"""Job stages and the one table of allowed transitions.

The wire stages are GrowingIO's: ``NONE`` (accepted, queued) -> ``RUNNING`` -> ``FINISH`` | ``ERROR``.
``EXPIRED`` is segport's own, internal stage for a finished job whose files were deleted; the job-result
endpoint answers it with HTTP 410 rather than showing it as a stage.
"""

from __future__ import annotations

from enum import StrEnum

from segport.errors import InvalidTransition


class Stage(StrEnum):
    NONE = "NONE"
    RUNNING = "RUNNING"
    FINISH = "FINISH"
    ERROR = "ERROR"
    EXPIRED = "EXPIRED"


class TargetKind(StrEnum):
    SEGMENT = "segment"
    TAG = "tag"

    @property
    def name_prefix(self) -> str:
        return "DES" if self is TargetKind.SEGMENT else "DET"


TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    Stage.NONE: frozenset({Stage.RUNNING, Stage.ERROR}),  # claimed; cancelled
    Stage.RUNNING: frozenset({Stage.FINISH, Stage.ERROR, Stage.NONE}),  # done; failed/cancelled; lease lost
    Stage.FINISH: frozenset({Stage.EXPIRED}),
    Stage.ERROR: frozenset({Stage.EXPIRED}),
    Stage.EXPIRED: frozenset(),
}

ACTIVE = frozenset({Stage.NONE, Stage.RUNNING})


def check_transition(src: Stage, dst: Stage) -> None:
    """Raise :class:`InvalidTransition` unless the table allows ``src -> dst``."""
    if dst not in TRANSITIONS[src]:
        raise InvalidTransition(f"job stage cannot change from {src} to {dst}")
