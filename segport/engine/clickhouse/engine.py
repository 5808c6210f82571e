"""The scale-out engine: user profiles in ClickHouse, through clickhouse-connect (a server over HTTP(S), or
ClickHouse's own engine in process through chdb).

It answers the same :class:`segport.engine.base.ProfileEngine` as DuckDB and writes the same bytes: values are
rendered by :mod:`segport.engine.clickhouse.sql` exactly as DuckDB renders them, rules compile to ClickHouse
SQL with the same semantics, and files are written by ClickHouse's own formats (``CSVWithNames``,
``JSONEachRow``), streamed to the result file. Consistency comes from immutable tables and one pointer row per
change (:mod:`segport.engine.clickhouse.snapshots`); imports are checked and staged by
:mod:`segport.engine.clickhouse.importer`, exports written by :mod:`segport.engine.clickhouse.writer`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

from segport.domain.event_files import EventAttribute
from segport.domain.export import ExportSpec
from segport.domain.keys import GIO_ID, Catalog, CatalogEntry, KeyKind, quote_ident
from segport.domain.rules import compile_rule
from segport.engine.base import (
    ComputeResult,
    EventImportReport,
    EventScan,
    ExportOutput,
    ImportReport,
    MembersPage,
    SegmentDefinition,
    TagComputation,
    Target,
    UserEvents,
)
from segport.engine.behaviour_sql import SharedPass, shared_conditions, shared_groups
from segport.engine.clickhouse import behaviour, events, importer, tags, writer
from segport.engine.clickhouse import snapshots as snaps
from segport.engine.clickhouse.collector import Collector
from segport.engine.clickhouse.rules import ClickHouseRules, rule_parameters
from segport.engine.clickhouse.sql import column_type, page_select_list, present
from segport.engine.columns import Step, column_steps
from segport.engine.interrupt import Interrupt
from segport.errors import ComputeFailed, EngineBusy, ExportFailed, ImportRejected, SegmentNotFound, SegportError


def parse_url(url: str) -> tuple[str, str]:
    """(clickhouse-connect DSN without a database, database): ``http(s)://…/db`` or ``chdb://DIR?database=db``."""
    parsed = urlparse(url)
    if parsed.scheme == "chdb":
        query = parse_qs(parsed.query)
        db = query.pop("database", ["segport"])[0]
        path = parsed.netloc + parsed.path  # chdb://DIR (relative) or chdb:///abs
        if not path:
            raise ExportFailed("SEGPORT_CLICKHOUSE_URL chdb:// needs a directory: chdb:///path/to/dir")
        rest = urlencode({k: v[0] for k, v in query.items()})
        return f"chdb:///{Path(path).resolve().as_posix().lstrip('/')}" + (f"?{rest}" if rest else ""), db
    if parsed.scheme in ("http", "https"):
        db = parsed.path.strip("/") or "default"
        return urlunparse(parsed._replace(path="")), db
    raise ExportFailed(f"SEGPORT_CLICKHOUSE_URL must be http://, https:// or chdb://, not {parsed.scheme or url}")


class ClickHouseEngine:
    """:class:`segport.engine.base.ProfileEngine` on ClickHouse."""

    def __init__(
        self,
        url: str,
        *,
        scratch: Path,
        keep_s: float = 3600.0,
        import_memory_limit: str = "2GB",
        query_memory_bytes: int = 0,
        spill_bytes: int = 0,
    ) -> None:
        try:
            import clickhouse_connect
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ExportFailed("SEGPORT_ENGINE=clickhouse needs the extra: pip install 'segport[clickhouse]'") from exc
        self._connect = clickhouse_connect.get_client
        self._dsn, self.db_name = parse_url(url)
        self.db = f"`{self.db_name}`"
        self.local_files = self._dsn.startswith("chdb:")
        self.scratch = scratch
        self.keep_s = keep_s
        self.import_memory_limit = import_memory_limit
        # every query of ours runs inside the process's memory budget: no query holds more than the engine's
        # share of it, and sorts and GROUP BYs spill to disk past an export's share instead of failing
        self._query_settings: dict[str, Any] = {}
        if query_memory_bytes:
            self._query_settings["max_memory_usage"] = query_memory_bytes
        if spill_bytes:
            self._query_settings["max_bytes_before_external_sort"] = spill_bytes
            self._query_settings["max_bytes_before_external_group_by"] = spill_bytes
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        self._writer = threading.Lock()
        # replaced tables are dropped after a publish, off the writer's path (engine/clickhouse/collector.py)
        self._collector = Collector(lambda project: snaps.collect(self.client(), self.db, project, self.keep_s))
        # project -> its event table and columns, as computations read them; only an event import changes them
        self._event_tables: dict[str, tuple[str, dict[str, str]]] = {}
        try:
            client = self.client()
            client.command(f"CREATE DATABASE IF NOT EXISTS {self.db}")
            client.command(snaps.ddl(self.db))
        except Exception as exc:
            raise EngineBusy(f"cannot use ClickHouse at {_shown(url)}: {_first_line(exc)}") from exc

    # --- connections -------------------------------------------------------------------------------
    def client(self) -> Any:
        """This thread's client: clickhouse-connect clients are not shared between threads."""
        client = getattr(self._local, "client", None)
        if client is None:
            # no HTTP session: a session serialises queries, and each thread has its own client anyway
            extra = {} if self._dsn.startswith("chdb:") else {"autogenerate_session_id": False}
            if self._query_settings:
                extra["settings"] = dict(self._query_settings)
            client = self._connect(dsn=self._dsn, **extra)
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        self._collector.close()  # before the clients: a collection in progress uses its own
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
        self._local = threading.local()

    def table(self, name: str) -> str:
        return f"{self.db}.`{name}`"

    def current(self, project_id: str) -> snaps.Snapshot:
        snap = snaps.read_current(self.client(), self.db, project_id)
        if snap is None:
            raise SegmentNotFound(f"project {project_id} has no profile data yet")
        return snap

    def publish(self, snap: snaps.Snapshot) -> None:
        """Publish ``snap``; the tables it replaced are collected afterwards, by the collector's thread."""
        snaps.publish(self.client(), self.db, snap)
        self._collector.request(snap.project)

    def collected(self, timeout: float | None = None) -> bool:
        """Wait until the collections asked for by the publishes so far have run (tests, and a clean stop)."""
        return self._collector.wait_idle(timeout)

    # --- schema ------------------------------------------------------------------------------------
    def ensure_project(self, project_id: str, catalog: Catalog) -> None:
        """Create the project if new; a column for every key (metadata only: readers never ask for a new column).
        A column left by an earlier life of a key (another type or case) is replaced: never inherited."""
        with self._writer:
            self._align(self.client(), project_id, catalog, prune=False)

    def reconcile(self, catalogs: dict[str, Catalog]) -> list[str]:
        """Make every project's current users table hold exactly its catalogue's columns (start-up repair after
        a kill between a catalogue change and its ``ALTER TABLE``). One read when nothing differs; a change
        publishes the next snapshot with ``data_version`` + 1. Every statement is ``IF [NOT] EXISTS`` and a
        publish that lost to another process is tried again on what that one published, so processes starting
        together are harmless. Returns what was changed, as log lines."""
        client = self.client()
        have = snaps.current_columns(client, self.db, self.db_name)
        changes: list[str] = []
        for project_id, catalog in catalogs.items():
            want = {GIO_ID: "Int64", **{e.key: column_type(e) for e in catalog.entries.values()}}
            if have.get(project_id, {} if catalog.entries else want) == want:
                continue
            for attempt in range(3):
                try:
                    with self._writer:
                        snap, steps = self._align(client, project_id, catalog, prune=True)
                        if steps:
                            self.publish(snap.next(data_version=snap.data_version + 1))
                    break
                except snaps.PublishConflict:
                    if attempt == 2:
                        raise
            changes += [f"project {project_id}: {step.note}" for step in steps if step.note]
        return changes

    def _align(
        self, client: Any, project_id: str, catalog: Catalog, *, prune: bool
    ) -> tuple[snaps.Snapshot, list[Step]]:
        """:func:`segport.engine.column_steps` applied to the current users table (made first for a new
        project: its first snapshot, published). Returns the snapshot and the steps taken."""
        snap = snaps.read_current(client, self.db, project_id)
        new = snap is None
        if snap is None:
            snap = snaps.Snapshot(project_id, 1, 0, 1, f"u_{project_id}_1")
        table = self.table(snap.users)
        have = self.column_types(snap.users)
        if not have:  # a new project, or (repair) a snapshot whose table is gone: an empty one
            client.command(f"CREATE TABLE IF NOT EXISTS {table} (gio_id Int64) ENGINE = MergeTree ORDER BY gio_id")
        if new:
            with contextlib.suppress(snaps.PublishConflict):  # another process made it first: the same table
                snaps.publish(client, self.db, snap)
        want = {e.key: column_type(e) for e in catalog.entries.values()}
        steps = column_steps(have, want, prune=prune)
        for step in steps:
            if step.drop:
                client.command(f"ALTER TABLE {table} DROP COLUMN IF EXISTS {quote_ident(step.column)}")
            else:
                client.command(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {quote_ident(step.column)} {step.kind}")
        return snap, steps

    def column_types(self, table: str) -> dict[str, str]:
        return snaps.columns(self.client(), self.db_name, table)

    def drop_column(self, project_id: str, key: str) -> None:
        with self._writer:
            snap = self.current(project_id)
            self.client().command(f"ALTER TABLE {self.table(snap.users)} DROP COLUMN IF EXISTS {quote_ident(key)}")
            self.publish(snap.next(data_version=snap.data_version + 1))

    def data_version(self, project_id: str) -> int:
        snap = snaps.read_current(self.client(), self.db, project_id)
        return snap.data_version if snap else 0

    # --- imports and segments ----------------------------------------------------------------------
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
        started = time.perf_counter()
        with self._writer:
            snap = self.current(project_id)
            nxt = snap.next()
            built: list[str] = []
            try:
                report, users, inserted = importer.import_users(
                    self, snap, nxt.seq, catalog, path, file_format, match, progress, built
                )
                members = dict(snap.members)
                if recompute and progress:
                    progress(f"recomputing {len(recompute)} segment(s)")
                passes: list[str] = []
                try:  # the events did not change: their measures shared as for the DAILY recompute
                    shared = self._shared_pass(project_id, nxt.seq, recompute, passes)
                    for seg in recompute:
                        table, result = self._compute(project_id, nxt.seq, users, seg, snap.idlists, built, shared)
                        members[seg.key] = table
                        report.segments[seg.key] = result.total_users
                        report.unmatched[seg.key] = result.unmatched
                finally:
                    self._drop(passes)
                self.publish(
                    snaps.Snapshot(
                        project_id,
                        nxt.seq,
                        snap.data_version + 1,
                        snap.next_gio_id + inserted,
                        users,
                        members,
                        dict(snap.idlists),
                    )
                )
            except BaseException:
                self._drop(built)
                raise
        report.elapsed_s = time.perf_counter() - started  # the whole import, not its check alone
        return report

    def load_member_ids(self, project_id: str, segment_key: str, path: Path) -> int:
        with self._writer:
            snap = self.current(project_id)
            name = f"l_{project_id}_{segment_key}_{snap.seq + 1}"
            try:
                count = importer.load_id_list(self, name, path)
                self.publish(snap.next(idlists={**snap.idlists, segment_key: name}))
            except BaseException:
                self._drop([name])
                raise
            return count

    def compute_segment(self, project_id: str, segment: SegmentDefinition) -> ComputeResult:
        with self._writer:
            snap = self.current(project_id)
            built: list[str] = []
            try:
                table, result = self._compute(project_id, snap.seq + 1, snap.users, segment, snap.idlists, built)
                self.publish(
                    snap.next(data_version=snap.data_version + 1, members={**snap.members, segment.key: table})
                )
            except ComputeFailed:
                self._drop(built)
                raise
            except Exception as exc:
                self._drop(built)
                raise ComputeFailed(f"segment {segment.key} could not be computed: {_first_line(exc)}") from exc
        return result

    def compute_segments(self, project_id: str, segments: list[SegmentDefinition]) -> dict[str, ComputeResult]:
        """Several segments published in one snapshot; the event measures of their rules come from one pass
        over the events (a table of the measures per user, dropped after), each segment's statement reads it."""
        with self._writer:
            snap = self.current(project_id)
            seq = snap.seq + 1
            built: list[str] = []
            passes: list[str] = []
            try:
                shared = self._shared_pass(project_id, seq, segments, passes)
                members, results = dict(snap.members), {}
                for seg in segments:
                    table, result = self._compute(project_id, seq, snap.users, seg, snap.idlists, built, shared)
                    members[seg.key], results[seg.key] = table, result
                self.publish(snap.next(data_version=snap.data_version + 1, members=members))
            except ComputeFailed:
                self._drop(built)
                raise
            except Exception as exc:
                self._drop(built)
                keys = ", ".join(s.key for s in segments)
                raise ComputeFailed(f"segments {keys} could not be computed: {_first_line(exc)}") from exc
            finally:
                self._drop(passes)
        return results

    def _shared_pass(
        self, project_id: str, seq: int, segments: list[SegmentDefinition], made: list[str]
    ) -> SharedPass | None:
        """As the DuckDB engine's: each pass a table ``beh_<project>_<seq>_<i>`` (named in ``made``, for the caller
        to drop); ``None`` when no measures share a pass."""
        shared = shared_conditions(segments)
        if shared is None:
            return None
        ctx, conds = shared
        table, columns = self.event_table(project_id)
        found: dict[str, tuple[str, str]] = {}
        for i, group in enumerate(shared_groups(conds, ctx.now_ms, ctx.time_zone)):
            rules = ClickHouseRules.on_events(table, columns)(Catalog([]), "u", behaviour=ctx)
            built = behaviour.ClickHouseEventSQL(ctx, rules, table, columns).shared_pass(group)
            if built is None:
                continue
            sql, measures = built
            name = f"beh_{project_id}_{seq}_{i}"
            made.append(name)
            self.client().command(f"DROP TABLE IF EXISTS {self.table(name)}")
            self.client().command(
                f"CREATE TABLE {self.table(name)} ENGINE = MergeTree ORDER BY gio_id AS {sql}",
                parameters=rule_parameters(rules.params),
            )
            found.update({key: (self.table(name), column) for key, column in measures.items()})
        return SharedPass(found) if found else None

    def event_table(self, project_id: str) -> tuple[str | None, dict[str, str]]:
        """:func:`.behaviour.event_table`, kept between computations: its columns change only when an event
        import (:meth:`import_events`, which forgets them) adds an attribute. A project without an event table
        yet is asked again each time."""
        found = self._event_tables.get(project_id)
        if found is None:
            table, columns = behaviour.event_table(self, project_id)
            if table is None:
                return None, columns
            found = self._event_tables[project_id] = (table, columns)
        return found[0], dict(found[1])

    def compute_tag(self, project_id: str, tag: TagComputation) -> ComputeResult:
        """A tag from events into its column: a new users table, published as the next snapshot (:mod:`.tags`)."""
        with self._writer:
            built: list[str] = []
            try:
                return tags.compute_tag(self, project_id, tag, built)
            except SegportError:
                self._drop(built)
                raise
            except Exception as exc:
                self._drop(built)
                raise ComputeFailed(f"tag {tag.key} could not be computed: {_first_line(exc)}") from exc

    def drop_segment(self, project_id: str, segment_key: str) -> None:
        with self._writer:
            snap = snaps.read_current(self.client(), self.db, project_id)
            if snap is None:
                return
            members = {k: v for k, v in snap.members.items() if k != segment_key}
            idlists = {k: v for k, v in snap.idlists.items() if k != segment_key}
            self.publish(snap.next(data_version=snap.data_version + 1, members=members, idlists=idlists))

    def _drop(self, tables: list[str]) -> None:
        for name in tables:
            # the original error matters more than a failed clean-up
            with contextlib.suppress(Exception):
                self.client().command(f"DROP TABLE IF EXISTS {self.table(name)}")

    def _compute(
        self,
        project_id: str,
        seq: int,
        users: str,
        seg: SegmentDefinition,
        idlists: dict[str, str],
        built: list[str],
        shared: SharedPass | None = None,
    ) -> tuple[str, ComputeResult]:
        client = self.client()
        name = f"m_{project_id}_{seg.key}_{seq}"
        table = self.table(name)
        built.append(name)
        unmatched = 0
        # made and filled by one statement: an empty table created first, then filled, cost a second statement
        # (and its round trip) per computation
        create = f"CREATE TABLE {table} ENGINE = MergeTree ORDER BY gio_id AS"
        if seg.rule_tree is not None and seg.catalog is not None:
            dialect = ClickHouseRules
            if seg.behaviour is not None:  # event conditions read the project's event table (if it has one yet)
                dialect = ClickHouseRules.on_events(*self.event_table(project_id), shared)
            rule = compile_rule(seg.rule_tree, seg.catalog, dialect, behaviour=seg.behaviour)
            client.command(
                f"{create} SELECT u.gio_id AS gio_id FROM {self.table(users)} AS u WHERE {rule.sql}",
                parameters=rule_parameters(rule.params),
            )
        elif seg.identity is not None:
            ids = idlists.get(seg.key)
            if ids is None:
                raise ComputeFailed(f"segment {seg.key} has no uploaded id list")
            col = f"u.{quote_ident(seg.identity)}"
            if self._is_multi(users, seg.identity):
                matched = f"SELECT DISTINCT u.gio_id AS gio_id, v AS value FROM {self.table(users)} AS u ARRAY JOIN {col} AS v"
            else:
                matched = (
                    f"SELECT u.gio_id AS gio_id, assumeNotNull({col}) AS value FROM {self.table(users)} AS u "
                    f"WHERE {col} IS NOT NULL"
                )
            client.command(
                f"{create} SELECT DISTINCT gio_id FROM ({matched}) WHERE value IN (SELECT value FROM {self.table(ids)})"
            )
            unmatched = int(
                client.query(
                    f"SELECT count() FROM {self.table(ids)} WHERE value NOT IN (SELECT value FROM ({matched}))"
                ).result_rows[0][0]
            )
        else:
            raise ValueError(f"segment {seg.key} has neither a rule nor an id list")
        total = int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])
        return name, ComputeResult(total, unmatched)

    def _is_multi(self, users: str, key: str) -> bool:
        return self.column_types(users).get(key, "").startswith("Array")

    # --- reading -----------------------------------------------------------------------------------
    def source(self, snap: snaps.Snapshot, target: Target, within: tuple[int, int] | None = None) -> str:
        """FROM clause (aliased ``u``) with its ``WHERE``: a segment's members are looked up in a set of ids,
        so the wide users table is streamed in ``gio_id`` order, never hashed. ``within`` (lo, hi) keeps the
        ids ``lo <= gio_id < hi``, the set of members included (a range of an export: the set is that range's)."""
        users = f"{self.table(snap.users)} AS u"
        cut = f" AND u.gio_id >= {int(within[0])} AND u.gio_id < {int(within[1])}" if within else ""
        if target.kind == "tag":
            entry = CatalogEntry(target.key, KeyKind.TAG, target.key, multi=self._is_multi(snap.users, target.key))
            return f"{users} WHERE {present(entry)}{cut}"
        members = snap.members.get(target.key)
        if members is None:
            raise SegmentNotFound(f"segment {target.key!r} has no computed membership yet")
        inner = f" WHERE gio_id >= {int(within[0])} AND gio_id < {int(within[1])}" if within else ""
        return f"{users} WHERE u.gio_id IN (SELECT gio_id FROM {self.table(members)}{inner}){cut}"

    def count(self, project_id: str, target: Target) -> int:
        snap = self.current(project_id)
        return int(self.client().query(f"SELECT count() FROM {self.source(snap, target)}").result_rows[0][0])

    def members_page(
        self, project_id: str, target: Target, columns: list[CatalogEntry], limit: int, offset: int
    ) -> MembersPage:
        snap = self.current(project_id)  # every read below names this snapshot's tables: one snapshot
        src = self.source(snap, target)
        client = self.client()
        total = int(client.query(f"SELECT count() FROM {src}").result_rows[0][0])
        rows: list[tuple[Any, ...]] = []
        if offset < total:
            rows = client.query(
                f"SELECT {page_select_list(columns)} FROM {src} ORDER BY u.gio_id LIMIT {int(limit)} OFFSET {int(offset)}"
            ).result_rows
        keys = [GIO_ID, *(c.key for c in columns)]
        return MembersPage(total, [_api_row(keys, r) for r in rows])

    def lookup_user(
        self, project_id: str, catalog: Catalog, identity: CatalogEntry, value: str
    ) -> dict[str, Any] | None:
        snap = self.current(project_id)
        # the user events resolve it to: a linked device is its login user (docs/events.md, "Identity links")
        gio_id = events.resolve_gio_id(self, snap.users, project_id, identity, value)
        entries = list(catalog.entries.values())
        rows = (
            self.client()
            .query(
                f"SELECT {page_select_list(entries)} FROM {self.table(snap.users)} AS u WHERE u.gio_id = {{g:Int64}}",
                parameters={"g": gio_id},
            )
            .result_rows
            if gio_id
            else []
        )
        return _api_row([GIO_ID, *(e.key for e in entries)], rows[0]) if rows else None

    def tag_counts(self, project_id: str, tags: list[CatalogEntry]) -> dict[str, int]:
        if not tags:
            return {}
        snap = self.current(project_id)
        counts = ", ".join(f"countIf({present(t)})" for t in tags)
        row = self.client().query(f"SELECT {counts} FROM {self.table(snap.users)} AS u").result_rows[0]
        return {t.key: int(n) for t, n in zip(tags, row, strict=True)}

    # --- events ------------------------------------------------------------------------------------
    def import_events(
        self, project_id: str, catalog: Catalog, attributes: list[EventAttribute], path: Path, file_format: str
    ) -> EventImportReport:
        with self._writer:
            self._align(self.client(), project_id, catalog, prune=False)
            before = events.store_state(self, project_id)
            try:
                return events.import_events(
                    self, project_id, catalog, attributes, path, file_format, int(time.time() * 1000)
                )
            except ImportRejected:  # a refused file stores nothing: the tables and columns made for it go again
                events.restore_store(self, project_id, before)
                raise
            finally:  # it may have made the table or added columns, even if it failed after that
                self._event_tables.pop(project_id, None)

    def user_events(
        self,
        project_id: str,
        identity: CatalogEntry,
        value: str,
        start_ms: int,
        end_ms: int,
        limit: int,
        offset: int,
        descending: bool,
    ) -> UserEvents:
        return events.user_events(self, project_id, identity, value, start_ms, end_ms, limit, offset, descending)

    def count_events(self, project_id: str, start_ms: int, end_ms: int) -> EventScan:
        return events.count_events(self, project_id, start_ms, end_ms)

    # --- export ------------------------------------------------------------------------------------
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
        snap = self.current(project_id)
        members = snap.members.get(target.key) if target.kind == "segment" else None
        return writer.write_export(
            self,
            lambda within=None: self.source(snap, target, within),
            columns,
            spec,
            out_dir,
            file_names,
            max_file_rows=max_file_rows,
            excel_safe=excel_safe,
            interrupt=interrupt,
            data_version=snap.data_version,
            members=self.table(members) if members else None,
        )


def _api_row(keys: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    """A row as the API family answers it: identities' empty arrays are ``None`` (no value)."""
    return {k: (None if isinstance(v, list) and not v else v) for k, v in zip(keys, row, strict=True)}


def _shown(url: str) -> str:
    """The URL without its password, for messages."""
    parsed = urlparse(url)
    if parsed.password:
        parsed = parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@"))
    return urlunparse(parsed)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
