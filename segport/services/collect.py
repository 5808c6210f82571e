"""Accepting a collect request: decode, check, normalize, deduplicate, commit to the spool.

Runs in API processes and never opens the engine: the engine role loads the spool. A batch is committed in one
transaction before the caller answers 200, or not at all.

Deduplication: the key is SHA-256 over the endpoint, the ``stm`` query parameter, the encoding headers and the
raw body bytes. The SDKs resend a failed request with the same body and the same ``stm`` (protobuf requests carry
no ``stm``), so a retry has the key of the first try and is stored once, for as long as the first one is in the
spool (:data:`segport.store.events.DEDUP_WINDOW` after it was loaded). Two genuinely different sends of identical
events differ in ``stm`` (JSON, snappy); two protobuf bodies that are byte-identical are one batch to us.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from segport.domain.events import (
    Batch,
    Encoding,
    check_events,
    check_json_events,
    decode_events,
    decode_items,
    decode_json_list,
    json_is_clean,
    normalize_events,
    normalize_items,
    unwrap,
)
from segport.errors import CollectKeyNotFound, DataSourceRefused
from segport.store.events import DataSources, EventSpool, NewBatch, encode_payload, encode_wire_payload

log = logging.getLogger("segport.collect")
# Batches one group commit takes at most (the rest wait for the next, which starts at once).
MAX_GROUP = 64
# The event loop commits groups itself while no other writer holds the store; after this many batches it hands
# the next group to the writer thread, whose commits checkpoint the spool's WAL once it is large (WAL_PAGES): the
# bound on the WAL while no engine process runs (the loop's own commits never checkpoint it).
HANDOVER_EVERY = 500
# An accepted (collection key, dataSourceId) is looked up again after this long: a revoke reaches every API
# process within it (docs/events.md).
RESOLVE_TTL_S = 1.0


@dataclass(frozen=True, slots=True)
class Prepared:
    project_key: str
    datasource_id: str
    dedup_key: str
    n_events: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Accepted:
    events: int
    duplicate: bool


class CollectService:
    def __init__(self, sources: DataSources, spool: EventSpool, *, resolve_ttl_s: float = RESOLVE_TTL_S) -> None:
        self.sources = sources
        self.spool = spool
        self.resolve_ttl_s = resolve_ttl_s
        self._resolved: dict[tuple[str, str], tuple[str, float]] = {}
        self.writer = SpoolWriter(spool)
        self._committers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopCommitter] = (
            weakref.WeakKeyDictionary()
        )

    def collect(self, project_key: str, body: bytes, enc: Encoding, *, items: bool = False) -> Accepted:
        """Store the batch of ``body`` (events, or items with ``items``); raise a 4xx error if any of it is bad."""
        return self.store(self.prepare(project_key, body, enc, items=items))

    def prepare(self, project_key: str, body: bytes, enc: Encoding, *, items: bool = False) -> Prepared:
        """Everything but the database: decode, check, normalize, the deduplication key, the payload (CPU only,
        so the HTTP layer may run it without a thread hop).

        A JSON batch of events is kept as its own text (:func:`segport.store.events.encode_wire_payload`: the
        loader normalizes it again, to the same events), which spares re-encoding the normalized events; items
        and protobuf batches are kept normalized."""
        batch: Batch
        key = dedup_key(project_key, body, enc, items=items)
        if items or enc.protobuf:
            if items:
                batch = normalize_items(decode_items(body, enc), project_key)
            else:
                raw, clean = decode_events(body, enc)
                batch = normalize_events(raw, project_key, clean=clean)
            return Prepared(project_key, batch.datasource_id, key, len(batch.events), encode_payload(batch.events))
        text = unwrap(body, enc)
        clean = json_is_clean(text)
        checked = check_json_events(text, project_key) if clean else None
        if checked is None:  # not the common shape: parsed, then checked (or refused) as normalizing does
            wire = decode_json_list(text, "events")
            checked = check_events(wire, project_key, clean=clean), len(wire)
        source, n_events = checked
        return Prepared(project_key, source, key, n_events, encode_wire_payload(project_key, text))

    def store(self, prepared: Prepared) -> Accepted:
        """Check the key and the data source, commit the batch to the spool (blocking: database I/O)."""
        project_id = self.project_of(prepared)
        stored = self.spool.append(
            project_id,
            prepared.datasource_id,
            prepared.dedup_key,
            [],
            payload=prepared.payload,
            n_events=prepared.n_events,
        )
        return Accepted(prepared.n_events, not stored)

    def cached_project(self, prepared: Prepared) -> str | None:
        """The project of the batch's key and data source if an answer younger than ``resolve_ttl_s`` is known
        (no database read: the HTTP layer calls it on its event loop), else None."""
        hit = self._resolved.get((prepared.project_key, prepared.datasource_id))
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return None

    def project_of(self, prepared: Prepared) -> str:
        return self._project(prepared.project_key, prepared.datasource_id)

    def submit(self, project_id: str, prepared: Prepared) -> Future[bool]:
        """Queue the batch for the group commit; the future's result (True: stored, False: a duplicate) is set
        once the transaction holding it has committed."""
        return self.writer.submit(
            NewBatch(project_id, prepared.datasource_id, prepared.dedup_key, prepared.n_events, prepared.payload)
        )

    async def commit(self, project_id: str, prepared: Prepared) -> bool:
        """:meth:`submit` for a coroutine on an event loop: True once the batch is committed, False if it was
        a duplicate (one hand-over to the writer per group: :class:`LoopCommitter`)."""
        loop = asyncio.get_running_loop()
        committer = self._committers.get(loop)
        if committer is None:
            committer = self._committers[loop] = LoopCommitter(self.writer, loop)
        return await committer.commit(
            NewBatch(project_id, prepared.datasource_id, prepared.dedup_key, prepared.n_events, prepared.payload)
        )

    def _project(self, project_key: str, datasource_id: str) -> str:
        """The project of an accepted (key, data source); an answer is reused for ``resolve_ttl_s``."""
        cache_key = (project_key, datasource_id)
        now = time.monotonic()
        hit = self._resolved.get(cache_key)
        if hit is not None and hit[1] > now:
            return hit[0]
        found = self.sources.check(project_key, datasource_id)
        if found.project_id is None:
            self._resolved.pop(cache_key, None)
            if found.problem == "key":
                raise CollectKeyNotFound(f"no project has the collection key {project_key[:40]!r}")
            reason = "is revoked" if found.problem == "revoked" else "is not a data source of this project"
            raise DataSourceRefused(f"dataSourceId {datasource_id[:40]!r} {reason}")
        if len(self._resolved) > 10_000:
            self._resolved.clear()
        self._resolved[cache_key] = (found.project_id, now + self.resolve_ttl_s)
        return found.project_id


def dedup_key(project_key: str, body: bytes, enc: Encoding, *, items: bool = False) -> str:
    h = hashlib.sha256()
    head = (
        f"{'items' if items else 'events'}\0{project_key}\0{enc.stm if enc.stm is not None else ''}\0"
        f"{int(enc.protobuf)}{int(enc.gzip)}{int(enc.snappy)}{int(enc.xor)}\0"
    )
    h.update(head.encode())
    h.update(body)
    return h.hexdigest()


class SpoolWriter:
    """Group commit: one thread commits the batches waiting for it in one transaction, so concurrent requests
    share its commit (on SQLite one write lock, one WAL append; on PostgreSQL one round trip and one flush of
    the WAL). A batch's answer is given only after the commit that holds it, and the request answers 200 only
    then: the guarantee of a single append (a 200 means committed) holds for every batch of the group.

    Work arrives in lots: :meth:`submit` hands over one batch (a future for threads), :meth:`submit_lot` several
    with one callback (the event loop's :class:`LoopCommitter`: one hand-over to this thread and one back per
    group, not per request)."""

    def __init__(self, spool: EventSpool, max_group: int = MAX_GROUP) -> None:
        self.spool = spool
        self.max_group = max_group
        self._queue: deque[tuple[list[NewBatch], Callable[[list[bool | BaseException]], None]]] = deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, batch: NewBatch) -> Future[bool]:
        """Queue one batch; the future's result (True: stored, False: a duplicate) is set once the transaction
        holding it has committed."""
        done: Future[bool] = Future()

        def answer(results: list[bool | BaseException]) -> None:
            (result,) = results
            if isinstance(result, BaseException):
                done.set_exception(result)
            else:
                done.set_result(result)

        self.submit_lot([batch], answer)
        return done

    def submit_lot(self, batches: list[NewBatch], answer: Callable[[list[bool | BaseException]], None]) -> None:
        """Queue ``batches``; once the transaction holding them has committed (or failed), ``answer`` is called
        on the writer thread with one result per batch: True (stored), False (a duplicate) or the store's
        error. It must not raise."""
        with self._ready:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="segport-spool-writer", daemon=True)
                self._thread.start()
            self._queue.append((batches, answer))
            self._ready.notify()

    def commit_now(self, batches: list[NewBatch]) -> list[bool | BaseException] | None:
        """Commit ``batches`` on the calling thread if no other writer holds the store (SQLite, its write lock
        free at once): one result per batch as :meth:`submit_lot` gives them. None if that would mean waiting
        (the lock held by another thread or process, or PostgreSQL): hand them to :meth:`submit_lot`."""
        try:
            stored = self.spool.try_append_many(batches)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the store's error
            return [exc] * len(batches)
        return None if stored is None else list(stored)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                lots = [self._queue.popleft()]
                size = len(lots[0][0])
                while self._queue and size + len(self._queue[0][0]) <= self.max_group:
                    size += len(self._queue[0][0])
                    lots.append(self._queue.popleft())
            results = self._commit([b for batches, _ in lots for b in batches])
            at = 0
            for batches, answer in lots:
                try:
                    answer(results[at : at + len(batches)])
                except Exception:  # noqa: BLE001 - a caller gone (its loop closed) must not stop the writer
                    log.exception("a spool writer's answer failed")
                at += len(batches)

    def _commit(self, group: list[NewBatch]) -> list[bool | BaseException]:
        try:
            stored = self.spool.append_many(group)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the store's error
            return [exc] * len(group)
        if stored is not None:
            return list(stored)
        # another process committed one of these keys meanwhile: one transaction each
        out: list[bool | BaseException] = []
        for b in group:
            try:
                out.append(
                    self.spool.append(
                        b.project_id, b.datasource_id, b.dedup_key, [], payload=b.payload, n_events=b.n_events
                    )
                )
            except Exception as exc:  # noqa: BLE001 - this request gets the store's error
                out.append(exc)
        return out


class LoopCommitter:
    """The group commit as the event loop sees it: a request queues its batch and awaits its answer. The
    requests read in one turn of the loop form a group. On SQLite, when no other writer holds the store at
    that moment, the loop commits the group itself (~50 µs a batch, less than the two thread hand-overs it
    spares: measured, 8–12% more requests a second at the bench's load); otherwise the group goes to the writer
    thread in one hand-over, whose answers come back in one call onto the loop, and the requests that arrive
    meanwhile wait together for the next group. So the loop never waits for another writer (an import, the
    loader marking batches, another API process): it only ever takes a free lock. Nor does it checkpoint the
    WAL: every ``handover_every`` batches it commits, the next group goes to the writer thread, whose commit
    checkpoints the WAL if it has grown large (:meth:`segport.store.events.EventSpool._append_many_sqlite`).
    Used from one event loop only."""

    def __init__(
        self, writer: SpoolWriter, loop: asyncio.AbstractEventLoop, handover_every: int = HANDOVER_EVERY
    ) -> None:
        self.writer = writer
        self.loop = loop
        self.handover_every = handover_every
        self._waiting: list[tuple[NewBatch, asyncio.Future[bool]]] = []
        self._busy = False
        self._committed_here = 0  # batches the loop committed itself since it last handed a group over

    async def commit(self, batch: NewBatch) -> bool:
        """True once ``batch`` is committed, False if its key was already in the spool (nothing written)."""
        done: asyncio.Future[bool] = self.loop.create_future()
        self._waiting.append((batch, done))
        if not self._busy:
            self._busy = True
            self.loop.call_soon(self._send)  # the requests read in this turn of the loop join the group
        return await done

    def _send(self) -> None:
        group = self._waiting[: self.writer.max_group]
        del self._waiting[: self.writer.max_group]
        if not group:
            self._busy = False
            return
        loop = self.loop
        batches = [b for b, _ in group]
        if self._committed_here < self.handover_every:
            results = self.writer.commit_now(batches)
            if results is not None:  # committed here: answered on the loop's next turn, which reads new requests
                self._committed_here += len(batches)
                loop.call_soon(self._answer, group, results)
                return
        self._committed_here = 0

        def answer(results: list[bool | BaseException]) -> None:  # on the writer thread
            loop.call_soon_threadsafe(self._answer, group, results)

        try:
            self.writer.submit_lot(batches, answer)
        except Exception as exc:  # noqa: BLE001 - no writer thread (none could be started): these requests fail
            self._answer(group, [exc] * len(group))

    def _answer(self, group: list[tuple[NewBatch, asyncio.Future[bool]]], results: list[bool | BaseException]) -> None:
        for (_, done), result in zip(group, results, strict=True):
            if done.done():  # the request was cancelled (its client left): the batch is committed all the same
                continue
            if isinstance(result, BaseException):
                done.set_exception(result)
            else:
                done.set_result(result)
        self._send()
