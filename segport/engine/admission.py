"""The engine's memory budget and its admission control: every piece of engine work runs inside one budget.

The process that owns the engine has one memory budget (``engine_memory_bytes``; by default half the memory of
the machine or of the container, see :func:`segport.settings.Settings.engine_memory`). The engine's own limit
(DuckDB's ``memory_limit``, chDB's ``max_memory_usage``) is 80% of it; the rest is the process itself (Python,
the rows of an answer in transit, the engine's allocations outside its buffer pool). That limit is split in two
pools, so reads never starve behind exports and exports never behind reads:

- **work** (75%): exports, imports, segment computations. An export reserves ``work / max_running_jobs`` (so the
  export workers always fit side by side), an import or a computation half the pool. Work that does not fit
  waits, first come first served, as long as it takes (an export waiting here is ``RUNNING`` and heartbeats;
  a cancel stops its wait).
- **reads** (25%): member pages, counts, single-user lookups, tag counts. Each reserves 1/16 of the pool (at
  least 16 MiB), so at most 16 run at once. A read that does not fit waits in a bounded queue
  (``engine_queue_max`` waiting reads) for at most ``engine_queue_wait_s``; past either it is refused with
  :class:`segport.errors.EngineOverloaded` (HTTP 503, ``Retry-After``), never run into an out-of-memory error.

Cheap bookkeeping (the data version every submit reads, the catalogue's column changes) is not admitted: it
holds no memory to speak of, and a submit must never wait for an export. A reservation is what work may use,
not what the engine enforces per statement: the engine's work is sized from it (an export's chunk of rows,
the engine's threads), and the engine's own limit, spilling to ``temp_directory`` beyond it, backs it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from segport.errors import EngineOverloaded

MiB = 1024**2
ENGINE_SHARE = 0.8  # of the budget: the engine's own limit; the rest is the process around it
READS_SHARE = 0.25  # of the engine's limit: the reads pool; the rest is the work pool
READS_AT_ONCE = 16
MIN_READ_BYTES = 16 * MiB


class Kind(StrEnum):
    """What a piece of engine work is, for its reservation."""

    EXPORT = "export"
    IMPORT = "import"  # imports, id lists and segment computations: bulk writes
    READ = "read"  # pages, counts, lookups, tag counts


@dataclass(frozen=True, slots=True)
class Budget:
    """The budget and what each kind of work reserves of it, in bytes."""

    total_bytes: int
    engine_bytes: int  # the engine's own memory limit
    work_bytes: int
    reads_bytes: int
    export_bytes: int
    import_bytes: int
    read_bytes: int

    @classmethod
    def of(cls, total_bytes: int, *, max_running_jobs: int) -> Budget:
        engine = int(total_bytes * ENGINE_SHARE)
        reads = int(engine * READS_SHARE)
        work = engine - reads
        return cls(
            total_bytes=total_bytes,
            engine_bytes=engine,
            work_bytes=work,
            reads_bytes=reads,
            export_bytes=work // max(1, max_running_jobs),
            import_bytes=work // 2,
            read_bytes=min(reads, max(MIN_READ_BYTES, reads // READS_AT_ONCE)),
        )

    def threads(self, cores: int) -> int:
        """Engine threads: one per core, fewer when an export's share leaves less than 32 MiB a thread (each
        thread of a sort holds buffers of its own)."""
        return max(1, min(cores, self.export_bytes // (32 * MiB)))

    def describe(self) -> str:
        def mb(n: int) -> str:
            return f"{n / MiB:.0f} MiB"

        return (
            f"memory budget {mb(self.total_bytes)}: engine limit {mb(self.engine_bytes)}, an export reserves "
            f"{mb(self.export_bytes)}, an import {mb(self.import_bytes)}, a read {mb(self.read_bytes)}"
        )


class _Pool:
    """Bytes handed out first come first served: a waiter goes when it is first in line and fits."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.used = 0
        self._line: deque[object] = deque()
        self._cond = threading.Condition()

    def acquire(
        self,
        amount: int,
        *,
        wait_s: float | None,
        max_waiting: int | None,
        stopped: Callable[[], bool] | None = None,
    ) -> int:
        amount = min(amount, self.capacity)
        ticket = object()
        deadline = None if wait_s is None else time.monotonic() + wait_s
        with self._cond:
            if not self._line and self.used + amount <= self.capacity:
                self.used += amount
                return amount
            if max_waiting is not None and len(self._line) >= max_waiting:
                raise _Refused(f"{len(self._line)} engine reads are already waiting for memory")
            self._line.append(ticket)
            try:
                while not (self._line[0] is ticket and self.used + amount <= self.capacity):
                    if stopped is not None and stopped():
                        raise _Stopped
                    left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                    if left <= 0:
                        raise _Refused(f"no room in the engine's {self.name} memory within {wait_s:g} s")
                    self._cond.wait(left)
                self.used += amount
                return amount
            finally:
                self._line.remove(ticket)
                self._cond.notify_all()  # the next in line may fit now

    def release(self, amount: int) -> None:
        with self._cond:
            self.used -= amount
            self._cond.notify_all()


class _Refused(Exception):
    pass


class _Stopped(Exception):
    pass


class Admission:
    """Admits engine work into the budget: :meth:`admit` holds a reservation while the work runs."""

    def __init__(self, budget: Budget, *, max_waiting_reads: int, read_wait_s: float, retry_after_s: int = 2) -> None:
        self.budget = budget
        self.max_waiting_reads = max_waiting_reads
        self.read_wait_s = read_wait_s
        self.retry_after_s = retry_after_s
        self.work = _Pool("work", budget.work_bytes)
        self.reads = _Pool("reads", budget.reads_bytes)

    @contextmanager
    def admit(self, kind: Kind, *, stopped: Callable[[], bool] | None = None) -> Iterator[None]:
        """Run the ``with`` body once ``kind``'s reservation fits. Reads that cannot get in raise
        :class:`EngineOverloaded`; exports and imports wait (an export until ``stopped()`` turns true, then
        the body does not run and the work is left to notice it was stopped)."""
        if kind is Kind.READ:
            pool, amount = self.reads, self.budget.read_bytes
            limits: dict[str, Any] = {"wait_s": self.read_wait_s, "max_waiting": self.max_waiting_reads}
        else:
            pool = self.work
            amount = self.budget.export_bytes if kind is Kind.EXPORT else self.budget.import_bytes
            limits = {"wait_s": None, "max_waiting": None}
        try:
            got = pool.acquire(amount, stopped=stopped, **limits)
        except _Refused as exc:
            raise EngineOverloaded(
                f"the engine is busy ({exc}); retry in {self.retry_after_s} s", retry_after_s=self.retry_after_s
            ) from None
        except _Stopped:
            got = 0  # stopped while waiting: the work runs its first check and stops there
        try:
            yield
        finally:
            if got:
                pool.release(got)


_ADMITTED: dict[str, Kind] = {
    "export": Kind.EXPORT,
    "import_users": Kind.IMPORT,
    "load_member_ids": Kind.IMPORT,
    "compute_segment": Kind.IMPORT,
    "compute_segments": Kind.IMPORT,
    "members_page": Kind.READ,
    "count": Kind.READ,
    "lookup_user": Kind.READ,
    "tag_counts": Kind.READ,
    "import_events": Kind.IMPORT,  # a file's history, and the loader's batches from the spool
    "user_events": Kind.READ,
    "count_events": Kind.READ,
    "compute_tag": Kind.IMPORT,  # a tag from events: one pass over them, its column rewritten
}


class AdmittedEngine:
    """A :class:`segport.engine.base.ProfileEngine` whose every piece of work runs inside ``admission``'s budget.

    The roles open every engine through this (segport/roles/parts.py), so exports, pages, counts, lookups,
    imports and computations share one budget in whatever process owns the engine. Anything else (the data
    version, column changes, ``close``, a backend's own attributes) goes straight to the engine."""

    def __init__(self, engine: Any, admission: Admission) -> None:
        object.__setattr__(self, "engine", engine)
        object.__setattr__(self, "admission", admission)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.engine, name)
        kind = _ADMITTED.get(name)
        if kind is None or not callable(value):
            return value
        admission = self.admission

        def admitted(*args: Any, **kwargs: Any) -> Any:
            interrupt = kwargs.get("interrupt")
            stopped = (lambda: interrupt.fired) if interrupt is not None else None
            with admission.admit(kind, stopped=stopped):
                return value(*args, **kwargs)

        admitted.__name__ = name
        admitted.__doc__ = value.__doc__
        return admitted

    def __setattr__(self, name: str, value: Any) -> None:  # a backend's knobs (tests set chunk_rows)
        setattr(self.engine, name, value)
