"""The profile engine as seen from an API process: every :class:`ProfileEngine` call is one HTTP request to
the engine process (segport/engine/internal.py), over a Unix socket in the data dir (``unix:PATH``) or TCP
(``http://HOST:PORT``, a ``segport worker --listen``).

Arguments and answers are JSON. Files travel by path: ``segport serve`` runs both halves on one data dir, so
an upload spooled by an API process is read by the engine process where it lies. The engine answers errors
in the one error shape and this class raises the same :mod:`segport.errors` class again, so services and
handlers cannot tell a remote engine from a local one. An engine that cannot be reached (down, restarting,
not configured) is :class:`EngineUnavailable`: HTTP 503 with ``Retry-After``, never a 500.

Exports never go through here: they run in the engine process, next to the file they read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from segport import errors
from segport.domain.export import ExportSpec
from segport.domain.keys import Catalog, CatalogEntry, KeyKind, ValueType
from segport.engine.base import ComputeResult, ExportOutput, ImportReport, MembersPage, SegmentDefinition, Target
from segport.engine.interrupt import Interrupt

log = logging.getLogger("segport.engine.remote")


def entry_to_json(entry: CatalogEntry) -> dict[str, Any]:
    return asdict(entry)


def entry_from_json(data: dict[str, Any]) -> CatalogEntry:
    return CatalogEntry(
        key=data["key"],
        kind=KeyKind(data["kind"]),
        name=data["name"],
        type=ValueType(data["type"]),
        multi=bool(data["multi"]),
        description=data.get("description", ""),
    )


def transport(url: str) -> tuple[httpx.HTTPTransport, str]:
    """An httpx transport and base URL for ``unix:PATH`` or ``http://HOST:PORT``."""
    if url.startswith("unix:"):
        return httpx.HTTPTransport(uds=url[len("unix:") :]), "http://engine"
    if url.startswith(("http://", "https://")):
        return httpx.HTTPTransport(), url.rstrip("/")
    raise errors.InvalidParameter(
        f"setting engine_url (SEGPORT_ENGINE_URL): expected unix:PATH or http://..., not {url!r}"
    )


class EngineClient:
    """HTTP calls to the engine's internal API, errors turned back into :mod:`segport.errors` types."""

    def __init__(self, url: str) -> None:
        self.url = url
        if not url:
            self.http: httpx.Client | None = None
            return
        t, base = transport(url)
        # no read timeout: an import or a recompute takes as long as it takes (the caller waits, as in-process)
        # an idle connection is dropped after 5 s, well before the engine would close it (ENGINE_KEEP_ALIVE_S)
        self.http = httpx.Client(
            transport=t,
            base_url=base,
            timeout=httpx.Timeout(None, connect=5.0),
            limits=httpx.Limits(keepalive_expiry=5.0),
        )

    def call(self, name: str, body: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        if self.http is None:
            raise errors.EngineUnavailable(
                "no profile engine is configured for this API process (set SEGPORT_ENGINE_URL)", retry_after_s=30
            )
        try:
            extra = {} if timeout is None else {"timeout": timeout}
            r = self.http.post(f"/engine/{name}", json=body or {}, **extra)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            raise errors.EngineUnavailable(
                f"the profile engine is not reachable ({type(exc).__name__}); retry soon"
            ) from None
        if r.status_code >= 400:
            raise _error(r)
        return r.json()

    def close(self) -> None:
        if self.http is not None:
            self.http.close()


def _error(r: httpx.Response) -> errors.SegportError:
    """The exception the engine raised, again: its class and its precise code."""
    wire = errors.decode_error(r.content)
    if wire.code is None:
        return errors.EngineUnavailable(f"the profile engine answered HTTP {r.status_code}; retry soon")
    return errors.class_of_code(wire.code)(wire.message or "", code=wire.code)


class RemoteEngine:
    """A :class:`segport.engine.base.ProfileEngine` whose every call runs in the engine process."""

    def __init__(self, url: str) -> None:
        self.client = EngineClient(url)

    def ensure_project(self, project_id: str, catalog: Catalog) -> None:
        self.client.call("ensure_project", {"project": project_id, "catalog": _catalog(catalog)})

    def drop_column(self, project_id: str, key: str) -> None:
        self.client.call("drop_column", {"project": project_id, "key": key})

    def reconcile(self, catalogs: dict[str, Catalog]) -> list[str]:
        """Nothing here: API processes do not repair; the engine process does when it starts."""
        return []

    def import_users(
        self,
        project_id: str,
        catalog: Catalog,
        path: Path,
        file_format: str,
        match: str,
        recompute: list[SegmentDefinition],
        progress: Any = None,
    ) -> ImportReport:
        # segment definitions go by key: the engine process compiles them from the same metadata store
        data = self.client.call(
            "import_users",
            {
                "project": project_id,
                "catalog": _catalog(catalog),
                "path": str(Path(path).resolve()),
                "format": file_format,
                "match": match,
                "recompute": [d.key for d in recompute],
            },
        )
        return ImportReport(**data)

    def load_member_ids(self, project_id: str, segment_key: str, path: Path) -> int:
        body = {"project": project_id, "key": segment_key, "path": str(Path(path).resolve())}
        return int(self.client.call("load_member_ids", body))

    def compute_segment(self, project_id: str, segment: SegmentDefinition) -> ComputeResult:
        return ComputeResult(**self.client.call("compute_segment", {"project": project_id, "key": segment.key}))

    def drop_segment(self, project_id: str, segment_key: str) -> None:
        self.client.call("drop_segment", {"project": project_id, "key": segment_key})

    def data_version(self, project_id: str) -> int:
        return int(self.client.call("data_version", {"project": project_id}))

    def export(
        self,
        project_id: str,
        target: Target,
        columns: list[CatalogEntry],
        spec: ExportSpec,
        out_dir: Path,
        file_names: Callable[[int], list[str]],
        *,
        max_file_rows: int = 0,
        excel_safe: bool = False,
        interrupt: Interrupt | None = None,
    ) -> ExportOutput:
        raise RuntimeError("exports run in the engine process, not through a remote engine")

    def count(self, project_id: str, target: Target) -> int:
        return int(self.client.call("count", {"project": project_id, "target": _target(target)}))

    def members_page(
        self, project_id: str, target: Target, columns: list[CatalogEntry], limit: int, offset: int
    ) -> MembersPage:
        body = {
            "project": project_id,
            "target": _target(target),
            "columns": [entry_to_json(c) for c in columns],
            "limit": limit,
            "offset": offset,
        }
        return MembersPage(**self.client.call("members_page", body))

    def lookup_user(
        self, project_id: str, catalog: Catalog, identity: CatalogEntry, value: str
    ) -> dict[str, Any] | None:
        body = {
            "project": project_id,
            "catalog": _catalog(catalog),
            "identity": entry_to_json(identity),
            "value": value,
        }
        found: dict[str, Any] | None = self.client.call("lookup_user", body)
        return found

    def tag_counts(self, project_id: str, tags: list[CatalogEntry]) -> dict[str, int]:
        data = self.client.call("tag_counts", {"project": project_id, "tags": [entry_to_json(t) for t in tags]})
        return {k: int(v) for k, v in data.items()}

    def close(self) -> None:
        self.client.close()


class RemoteWorkers:
    """The link of an API process to the engine process's workers (a :class:`segport.wake.WorkerLink`).

    ``wake`` is fire and forget: a background thread sends the request, so a submit never waits for the engine
    (and many submits at once become one request). If the engine is down, its workers find the job on their next
    poll, or at start."""

    def __init__(self, client: EngineClient) -> None:
        self._client = client
        self._pending = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def wake(self) -> None:
        self._pending.set()
        with self._lock:
            if self._thread is None and self._client.http is not None:
                self._thread = threading.Thread(target=self._send, name="segport-wake", daemon=True)
                self._thread.start()

    def _send(self) -> None:
        while True:
            self._pending.wait()
            self._pending.clear()
            try:
                self._client.call("wake", timeout=2.0)
            except errors.SegportError as exc:
                log.debug("wake not delivered: %s", exc.message)

    def interrupt(self, job_id: str, reason: str) -> None:
        """Stop ``job_id`` now if the engine is running it (a cancel); otherwise its heartbeat will."""
        try:
            self._client.call("interrupt", {"job": job_id, "reason": reason}, timeout=2.0)
        except errors.SegportError as exc:
            log.info("interrupt of job %s not delivered (%s); its heartbeat will stop it", job_id, exc.message)


def _catalog(catalog: Catalog) -> list[dict[str, Any]]:
    return [entry_to_json(e) for e in catalog.entries.values()]


def _target(target: Target) -> dict[str, str]:
    return {"kind": target.kind, "key": target.key}
