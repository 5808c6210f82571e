"""The engine process's operations, declared once: the table its server and its client are both generated from.

An operation is a method of a Protocol: :class:`segport.engine.base.ProfileAccess` for what the engine itself
serves (profile reads, imports, segment computes), :class:`EngineProcess` for what the engine process answers
about itself. The method's name is the operation's (``POST /engine/<name>``), its parameters are the request
(a JSON object, one member per parameter, see :mod:`segport.engine.wire`) and its return type the answer. The
server (:mod:`segport.engine.server`) calls the method of that name on what it serves; the client
(:mod:`segport.engine.client`) sends the call. Both read this table, so they agree by construction.

A new engine operation: add the method to the Protocol, implement it in each backend, and add one line here.
Per operation, ``deadline_s`` bounds how long a caller waits for the answer (past it the call is
:class:`segport.errors.EngineUnavailable`, HTTP 503 with ``Retry-After``; docs/processes.md, "Deadlines", lists
them), ``read`` says it changes nothing (a caller may give up on it at once when the engine is known to have
stopped answering) and ``local`` names parameters that never travel (a progress callback). A further
per-operation property (an admission or memory class the server checks before it runs the call, say) is a
field of :class:`Op` beside these.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from segport.engine.base import ProfileAccess
from segport.engine.wire import from_wire, to_wire


@dataclass(frozen=True, slots=True)
class Health:
    """The engine process's answer to ``health``."""

    pid: int
    workers: bool  # whether it runs export workers


class EngineProcess(Protocol):
    """What the engine process answers about itself (its role serves these)."""

    def health(self) -> Health:
        """It is up, and says who it is."""

    def wake(self) -> None:
        """A job was queued: wake an idle export worker."""

    def interrupt(self, job_id: str, reason: str) -> bool:
        """Stop the running export of ``job_id``; whether this process was running it."""


@dataclass(frozen=True)
class Op:
    """One operation: ``method`` names and types it (its parameters the request, its return type the answer)."""

    method: Callable[..., Any]
    deadline_s: float  # how long a caller waits for the answer, then 503 ENGINE_UNAVAILABLE
    read: bool = False  # changes nothing: dropped by its caller as soon as the engine is known to be down
    local: tuple[str, ...] = ()  # parameters that stay in the calling process
    _signature: inspect.Signature = field(init=False, repr=False, compare=False)
    _types: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(self.method)
        signature = inspect.signature(self.method)
        sent = [p for p in list(signature.parameters)[1:] if p not in self.local]  # [0] is self
        object.__setattr__(self, "_signature", signature)
        object.__setattr__(self, "_types", {name: hints[name] for name in sent} | {"return": hints["return"]})

    @property
    def name(self) -> str:
        return self.method.__name__

    def request(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The request body of a call ``method(*args, **kwargs)`` (``self`` left out)."""
        bound = self._signature.bind(None, *args, **kwargs)
        bound.apply_defaults()
        return {name: to_wire(bound.arguments[name]) for name in self._types if name != "return"}

    def arguments(self, body: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments a request body stands for."""
        return {name: from_wire(body.get(name), kind) for name, kind in self._types.items() if name != "return"}

    def answer(self, value: Any) -> Any:
        """The answer body of the method's result."""
        return to_wire(value)

    def result(self, body: Any) -> Any:
        """The result an answer body stands for."""
        return from_wire(body, self._types["return"])


# Deadlines (seconds). Reads answer a page or a number: far below READ_S on any data segport is sized for, so
# a read past it means a stopped or hung engine. Changes of the catalogue are quick; a segment computation reads
# every user once; an import (users, or an id list) loads a whole file (10M users: minutes), so its deadline is generous. An export is
# not an API call: it runs in the engine process under its lease, whatever the callers do.
QUICK_S, READ_S, CHANGE_S, COMPUTE_S, IMPORT_S = 2.0, 30.0, 60.0, 600.0, 3600.0

# What the engine serves: every method of ProfileAccess but close (each process closes its own).
PROFILE_OPS: tuple[Op, ...] = (
    Op(ProfileAccess.ensure_project, CHANGE_S),
    Op(ProfileAccess.drop_column, CHANGE_S),
    Op(ProfileAccess.import_users, IMPORT_S, local=("progress",)),
    Op(ProfileAccess.load_member_ids, IMPORT_S),
    Op(ProfileAccess.compute_segment, COMPUTE_S),
    Op(ProfileAccess.compute_segments, COMPUTE_S),
    Op(ProfileAccess.drop_segment, CHANGE_S),
    Op(ProfileAccess.data_version, READ_S, read=True),
    Op(ProfileAccess.count, READ_S, read=True),
    Op(ProfileAccess.members_page, READ_S, read=True),
    Op(ProfileAccess.lookup_user, READ_S, read=True),
    Op(ProfileAccess.tag_counts, READ_S, read=True),
    Op(ProfileAccess.import_events, IMPORT_S),
    Op(ProfileAccess.user_events, READ_S, read=True),
    Op(ProfileAccess.count_events, READ_S, read=True),
    Op(ProfileAccess.compute_tag, COMPUTE_S),
)

# What the engine process answers about itself: quick, so a caller never waits long for them. ``health`` is
# answered on the engine's event loop (never behind its busy threads): it is the liveness probe.
HEALTH = Op(EngineProcess.health, QUICK_S, read=True)
WAKE = Op(EngineProcess.wake, QUICK_S)
INTERRUPT = Op(EngineProcess.interrupt, QUICK_S)
PROCESS_OPS: tuple[Op, ...] = (HEALTH, WAKE, INTERRUPT)
