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

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from segport.domain.events import (
    Batch,
    Encoding,
    decode_events,
    decode_items,
    normalize_events,
    normalize_items,
)
from segport.errors import CollectKeyNotFound, DataSourceRefused
from segport.store.events import DataSources, EventSpool, encode_payload

# An accepted (collection key, dataSourceId) is looked up again after this long: a revoke reaches every API
# process within it (docs/events.md).
RESOLVE_TTL_S = 1.0


@dataclass(frozen=True, slots=True)
class Prepared:
    project_key: str
    datasource_id: str
    dedup_key: str
    events: list[dict[str, Any]]
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

    def collect(self, project_key: str, body: bytes, enc: Encoding, *, items: bool = False) -> Accepted:
        """Store the batch of ``body`` (events, or items with ``items``); raise a 4xx error if any of it is bad."""
        return self.store(self.prepare(project_key, body, enc, items=items))

    def prepare(self, project_key: str, body: bytes, enc: Encoding, *, items: bool = False) -> Prepared:
        """Everything but the database: decode, check, normalize, the deduplication key, the payload (CPU only,
        so the HTTP layer may run it without a thread hop)."""
        batch: Batch
        if items:
            batch = normalize_items(decode_items(body, enc), project_key)
        else:
            raw, clean = decode_events(body, enc)
            batch = normalize_events(raw, project_key, clean=clean)
        key = dedup_key(project_key, body, enc, items=items)
        return Prepared(project_key, batch.datasource_id, key, batch.events, encode_payload(batch.events))

    def store(self, prepared: Prepared) -> Accepted:
        """Check the key and the data source, commit the batch to the spool (blocking: database I/O)."""
        project_id = self._project(prepared.project_key, prepared.datasource_id)
        stored = self.spool.append(
            project_id, prepared.datasource_id, prepared.dedup_key, prepared.events, payload=prepared.payload
        )
        return Accepted(len(prepared.events), not stored)

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
