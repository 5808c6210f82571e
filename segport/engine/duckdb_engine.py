"""The embedded default engine: one DuckDB file in the data dir, owned by one process.

Tables: ``users_<project>`` (``gio_id`` plus one column per catalogue key), ``m_<project>_<segment>`` (a
segment's membership snapshot: its members' ``gio_id``), ``l_<project>_<segment>`` (an uploaded id list),
``segport_state`` (per-project ``gio_id`` counter and data version). Every change to profiles and
memberships is one DuckDB transaction, so an export — one ``COPY`` statement — always reads one snapshot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from segport.domain.export import ExportSpec, FileFormat, HeaderType, split_columns
from segport.domain.keys import GIO_ID, Catalog, CatalogEntry, quote_ident
from segport.engine import duckdb_import, pages
from segport.engine.base import ComputeResult, ExportOutput, ImportReport, SegmentDefinition, Target
from segport.engine.interrupt import Interrupt
from segport.engine.pages import MembersPage
from segport.engine.sql import idlist_table, members_table, rendered, sql_string, users_table
from segport.errors import ExportFailed, SegmentNotFound, StorageFull

_STATE_DDL = """
CREATE TABLE IF NOT EXISTS segport_state (
    project VARCHAR PRIMARY KEY, next_gio_id BIGINT NOT NULL, data_version BIGINT NOT NULL
)"""


class DuckDBEngine:
    """:class:`segport.engine.base.ProfileEngine` on a DuckDB file."""

    def __init__(self, path: Path, *, memory_limit: str = "2GB", threads: int = 0) -> None:
        config: dict[str, Any] = {"memory_limit": memory_limit, "preserve_insertion_order": True}
        if threads:
            config["threads"] = threads
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(path), config=config)
        except duckdb.IOException as exc:
            raise ExportFailed(f"cannot open the profile database {path}: {exc}") from exc
        self._writer = threading.Lock()  # one writer at a time; readers never wait for it
        with self._cursor() as cur:
            cur.execute(_STATE_DDL)

    # --- connections -------------------------------------------------------------------------------
    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cur = self._con.cursor()
        try:
            yield cur
        finally:
            cur.close()

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write transaction under the writer lock: committed whole or rolled back whole."""
        with self._writer, self._cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def close(self) -> None:
        self._con.close()

    # --- schema ------------------------------------------------------------------------------------
    def ensure_project(self, project_id: str, catalog: Catalog) -> None:
        with self._transaction() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {users_table(project_id)} (gio_id BIGINT NOT NULL)")
            cur.execute(
                "INSERT INTO segport_state VALUES (?, 1, 0) ON CONFLICT DO NOTHING", [project_id]
            )
            have = {
                r[0]
                for r in cur.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                    [f"users_{project_id}"],
                ).fetchall()
            }
            for entry in catalog.entries.values():
                if entry.key not in have:
                    cur.execute(
                        f"ALTER TABLE {users_table(project_id)} ADD COLUMN {quote_ident(entry.key)} {entry.sql_type}"
                    )

    def drop_column(self, project_id: str, key: str) -> None:
        with self._transaction() as cur:
            cur.execute(f"ALTER TABLE {users_table(project_id)} DROP COLUMN IF EXISTS {quote_ident(key)}")
            _bump(cur, project_id)

    def data_version(self, project_id: str) -> int:
        with self._cursor() as cur:
            row = cur.execute("SELECT data_version FROM segport_state WHERE project = ?", [project_id]).fetchone()
        return int(row[0]) if row else 0

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
        with self._transaction() as cur:
            report = duckdb_import.import_users(cur, project_id, catalog, path, file_format, match, progress)
            if recompute and progress:
                progress(f"recomputing {len(recompute)} segment(s)")
            for seg in recompute:
                result = _compute(cur, project_id, seg)
                report.segments[seg.key] = result.total_users
                report.unmatched[seg.key] = result.unmatched
            _bump(cur, project_id)
        return report

    def load_member_ids(self, project_id: str, segment_key: str, path: Path) -> int:
        with self._transaction() as cur:
            return duckdb_import.load_id_list(cur, idlist_table(project_id, segment_key), path)

    def compute_segment(self, project_id: str, segment: SegmentDefinition) -> ComputeResult:
        with self._transaction() as cur:
            result = _compute(cur, project_id, segment)
            _bump(cur, project_id)
        return result

    def drop_segment(self, project_id: str, segment_key: str) -> None:
        with self._transaction() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {members_table(project_id, segment_key)}")
            cur.execute(f"DROP TABLE IF EXISTS {idlist_table(project_id, segment_key)}")
            _bump(cur, project_id)

    # --- reading -----------------------------------------------------------------------------------
    def _source(self, cur: duckdb.DuckDBPyConnection, project_id: str, target: Target) -> str:
        """FROM clause (aliased ``u``) of a target's members."""
        users = users_table(project_id)
        if target.kind == "tag":
            return f"{users} u WHERE u.{quote_ident(target.key)} IS NOT NULL"
        members = members_table(project_id, target.key)
        exists = cur.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
            [f"m_{project_id}_{target.key}"],
        ).fetchone()
        if not exists or not exists[0]:
            raise SegmentNotFound(f"segment {target.key!r} has no computed membership yet")
        return f"{members} m JOIN {users} u USING (gio_id)"

    def count(self, project_id: str, target: Target) -> int:
        with self._cursor() as cur:
            row = cur.execute(f"SELECT count(*) FROM {self._source(cur, project_id, target)}").fetchone()
        return int(row[0]) if row else 0

    # --- reading for the API family (pages, one user, tag sizes) -----------------------------------
    def members_page(
        self, project_id: str, target: Target, columns: list[CatalogEntry], limit: int, offset: int
    ) -> MembersPage:
        """A target's total and one page of its members (ordered by ``gio_id``), rendered for the API.

        Both reads run in one DuckDB transaction, so the total and the page come from the same snapshot
        even while an import or a recompute commits a new one.
        """
        keys = [GIO_ID, *(c.key for c in columns)]
        with self._cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                src = self._source(cur, project_id, target)
                total = int(cur.execute(f"SELECT count(*) FROM {src}").fetchone()[0])  # type: ignore[index]
                rows = []
                if offset < total:
                    # pick the page's gio_ids first (a narrow sort), then read only those users' columns
                    rows = cur.execute(
                        f"WITH ids AS (SELECT u.gio_id FROM {src} ORDER BY u.gio_id LIMIT ? OFFSET ?) "
                        f"SELECT {pages.select_list(columns)} FROM ids JOIN {users_table(project_id)} u "
                        "USING (gio_id) ORDER BY u.gio_id",
                        [limit, offset],
                    ).fetchall()
            finally:
                cur.execute("ROLLBACK")
        return MembersPage(total, [dict(zip(keys, r, strict=True)) for r in rows])

    def lookup_user(
        self, project_id: str, catalog: Catalog, identity: CatalogEntry, value: str
    ) -> dict[str, Any] | None:
        """The user (lowest ``gio_id``) holding ``value`` for ``identity``, every catalogue key rendered."""
        col = f"u.{quote_ident(identity.key)}"
        test = f"list_contains({col}, ?)" if identity.multi else f"{col} = ?"
        entries = list(catalog.entries.values())
        with self._cursor() as cur:
            row = cur.execute(
                f"SELECT {pages.select_list(entries)} FROM {users_table(project_id)} u WHERE {test} "
                "ORDER BY u.gio_id LIMIT 1",
                [value],
            ).fetchone()
        return None if row is None else dict(zip([GIO_ID, *(e.key for e in entries)], row, strict=True))

    def tag_counts(self, project_id: str, tags: list[CatalogEntry]) -> dict[str, int]:
        """Members per tag (users with a non-null value), all tags counted in one scan of one snapshot."""
        if not tags:
            return {}
        with self._cursor() as cur:
            row = cur.execute(pages.tag_counts_sql(users_table(project_id), tags)).fetchone()
        return {t.key: int(n) for t, n in zip(tags, row or [0] * len(tags), strict=True)}

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
        select_list = _select_list(columns, spec, excel_safe)
        options = _copy_options(spec)
        try:
            with self._cursor() as cur:
                if interrupt is not None:  # cancel / lost lease: abort the running COPY from another thread
                    interrupt.bind(cur.interrupt)
                src = self._source(cur, project_id, target)
                query = f"SELECT {select_list} FROM {src} ORDER BY u.gio_id"
                if not max_file_rows:
                    path = out_dir / file_names(1)[0]
                    rows = _copy(cur, query, path, options)
                    return ExportOutput(rows, [path])
                # Parts: number the members once, then one COPY per part, all in one read transaction
                # so every part comes from the same snapshot.
                cur.execute("BEGIN TRANSACTION")
                try:
                    cur.execute(
                        f"CREATE TEMP TABLE export_rows AS SELECT row_number() OVER (ORDER BY u.gio_id) AS _n, "
                        f"{select_list} FROM {src}"
                    )
                    total = int(cur.execute("SELECT count(*) FROM export_rows").fetchone()[0])  # type: ignore[index]
                    parts = max(1, -(-total // max_file_rows))
                    paths = [out_dir / n for n in file_names(parts)]
                    for i, path in enumerate(paths):
                        lo, hi = i * max_file_rows + 1, (i + 1) * max_file_rows
                        _copy(cur, f"SELECT * EXCLUDE (_n) FROM export_rows WHERE _n BETWEEN {lo} AND {hi} "
                              "ORDER BY _n", path, options)
                    cur.execute("DROP TABLE export_rows")
                finally:
                    cur.execute("ROLLBACK")
                return ExportOutput(total, paths)
        except duckdb.InterruptException as exc:
            raise ExportFailed("the export was interrupted (cancelled or taken over)") from exc
        except duckdb.IOException as exc:
            text = str(exc)
            if "No space left" in text or "File too large" in text or "Disk quota" in text:
                raise StorageFull(f"the result folder is full: {text.splitlines()[0]}") from exc
            raise ExportFailed(f"writing the result failed: {text.splitlines()[0]}") from exc
        except duckdb.Error as exc:
            raise ExportFailed(f"the export query failed: {str(exc).splitlines()[0]}") from exc
        finally:
            if interrupt is not None:
                interrupt.unbind()


def _bump(cur: duckdb.DuckDBPyConnection, project_id: str) -> None:
    cur.execute("UPDATE segport_state SET data_version = data_version + 1 WHERE project = ?", [project_id])


def _compute(cur: duckdb.DuckDBPyConnection, project_id: str, seg: SegmentDefinition) -> ComputeResult:
    users = users_table(project_id)
    members = members_table(project_id, seg.key)
    unmatched = 0
    if seg.rule is not None:
        cur.execute(
            f"CREATE OR REPLACE TABLE {members} AS SELECT u.gio_id FROM {users} u WHERE {seg.rule.sql} "
            "ORDER BY u.gio_id",
            seg.rule.params,
        )
    elif seg.identity is not None:
        ids = idlist_table(project_id, seg.key)
        col = f"u.{quote_ident(seg.identity)}"
        multi = cur.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = ? AND column_name = ?",
            [f"users_{project_id}", seg.identity],
        ).fetchone()
        if multi and str(multi[0]).endswith("[]"):
            matched = f"SELECT DISTINCT u.gio_id, v.value FROM {users} u, unnest({col}) AS v(value)"
        else:
            matched = f"SELECT u.gio_id, {col} AS value FROM {users} u WHERE {col} IS NOT NULL"
        cur.execute(
            f"CREATE OR REPLACE TEMP TABLE seg_match AS SELECT l.value, x.gio_id FROM {ids} l "
            f"LEFT JOIN ({matched}) x ON x.value = l.value"
        )
        cur.execute(
            f"CREATE OR REPLACE TABLE {members} AS SELECT DISTINCT gio_id FROM seg_match "
            "WHERE gio_id IS NOT NULL ORDER BY gio_id"
        )
        unmatched = int(cur.execute("SELECT count(*) FROM seg_match WHERE gio_id IS NULL").fetchone()[0])  # type: ignore[index]
        cur.execute("DROP TABLE seg_match")
    else:
        raise ValueError(f"segment {seg.key} has neither a rule nor an id list")
    total = int(cur.execute(f"SELECT count(*) FROM {members}").fetchone()[0])  # type: ignore[index]
    return ComputeResult(total, unmatched)


def _select_list(columns: list[CatalogEntry], spec: ExportSpec, excel_safe: bool) -> str:
    gio = "CAST(u.gio_id AS VARCHAR) AS gio_id"
    if spec.file_format is FileFormat.JSON:
        if not columns:
            return gio
        ids, props = split_columns(columns)

        def struct(entries: list[CatalogEntry]) -> str:
            if not entries:
                return "'{}'::JSON"
            fields = ", ".join(f"{sql_string(e.key)}: {rendered(e, excel_safe=excel_safe)}" for e in entries)
            return "{" + fields + "}"

        return f"{gio}, {struct(ids)} AS identifications, {struct(props)} AS properties"
    headers = _headers(columns, spec.header)
    parts = [gio] + [
        f"{rendered(e, excel_safe=excel_safe)} AS {_alias(h)}" for e, h in zip(columns, headers, strict=True)
    ]
    return ", ".join(parts)


def _headers(columns: list[CatalogEntry], header: HeaderType) -> list[str]:
    """Column headers; display names that collide (with each other or ``gio_id``) get their key appended."""
    if header is HeaderType.KEY:
        return [c.key for c in columns]
    names = [c.name or c.key for c in columns]
    seen: dict[str, int] = {}
    for n in [GIO_ID, *names]:
        seen[n.lower()] = seen.get(n.lower(), 0) + 1
    return [n if seen[n.lower()] == 1 else f"{n} ({c.key})" for n, c in zip(names, columns, strict=True)]


def _alias(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _copy_options(spec: ExportSpec) -> str:
    opts = ["FORMAT JSON"] if spec.file_format is FileFormat.JSON else ["FORMAT CSV", "HEADER", "FORCE_QUOTE *"]
    opts.append(f"COMPRESSION {'gzip' if spec.compression.value == 'gzip' else 'uncompressed'}")
    return ", ".join(opts)


def _copy(cur: duckdb.DuckDBPyConnection, query: str, path: Path, options: str) -> int:
    row = cur.execute(f"COPY ({query}) TO {sql_string(str(path))} ({options})").fetchone()
    return int(row[0]) if row else 0
