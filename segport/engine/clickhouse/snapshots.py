"""Snapshots of a project's profile data in ClickHouse: immutable tables and one pointer row per change.

ClickHouse has no multi-statement transactions, so segport never changes a table that a reader may be reading.
Every import, recompute or drop builds *new* tables (``u_<project>_<seq>`` users, ``m_<project>_<segment>_<seq>``
memberships, ``l_<project>_<segment>_<seq>`` id lists) and then publishes them with one ``INSERT`` of one row
into ``segport_snapshots``: that insert is the commit, atomic in ClickHouse. A reader (an export, a page, a
count) reads the newest row once and then only the tables it names, so it sees one snapshot however long it
runs, while the next import builds beside it. A failed import publishes nothing, and its tables are dropped.

Tables a newer snapshot replaced are kept ``keep_s`` seconds for readers still on them, then dropped.
``gio_id`` allocation (``next_gio_id``) lives in the same row, so it moves only with a published import:
monotonic, and never reused for another user.

One writer: changes are serialised by a lock in this process. Several processes writing one ClickHouse
database (the multi-host topology) would need a lock beside it (e.g. a PostgreSQL advisory lock); a
conflicting publish is detected, as the ``seq`` of the new row must be the current one plus one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

_DDL = """
CREATE TABLE IF NOT EXISTS {db}.segport_snapshots (
    project String, seq UInt64, data_version Int64, next_gio_id Int64, users String,
    members Map(String, String), idlists Map(String, String), created Float64
) ENGINE = MergeTree ORDER BY (project, seq)"""


class PublishConflict(RuntimeError):
    """Another writer published the ``seq`` this one meant to."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One published state of a project: its tables and counters."""

    project: str
    seq: int
    data_version: int
    next_gio_id: int
    users: str  # table name, unqualified
    members: dict[str, str] = field(default_factory=dict)  # segment key -> membership table
    idlists: dict[str, str] = field(default_factory=dict)  # segment key -> uploaded id list table

    def tables(self) -> set[str]:
        return {self.users, *self.members.values(), *self.idlists.values()}

    def next(self, **changes: Any) -> Snapshot:
        """The snapshot that follows this one (``seq`` + 1) with ``changes``."""
        return replace(self, seq=self.seq + 1, **changes)


def ddl(db: str) -> str:
    return _DDL.format(db=db)


def read_current(client: Any, db: str, project: str) -> Snapshot | None:
    rows = client.query(
        f"SELECT seq, data_version, next_gio_id, users, members, idlists FROM {db}.segport_snapshots "
        "WHERE project = {p:String} ORDER BY seq DESC LIMIT 1",
        parameters={"p": project},
    ).result_rows
    if not rows:
        return None
    seq, version, next_id, users, members, idlists = rows[0]
    return Snapshot(project, int(seq), int(version), int(next_id), users, dict(members), dict(idlists))


def columns(client: Any, db_name: str, table: str) -> dict[str, str]:
    """A table's columns in order, as name -> ClickHouse type (``{}``: no such table)."""
    rows = client.query(
        "SELECT name, type FROM system.columns WHERE database = {d:String} AND table = {t:String} ORDER BY position",
        parameters={"d": db_name, "t": table},
    ).result_rows
    return {str(name): str(kind) for name, kind in rows}


def current_columns(client: Any, db: str, db_name: str) -> dict[str, dict[str, str]]:
    """Every project's current users table as column name -> ClickHouse type (``{}`` if the table is
    missing), in one read."""
    rows = client.query(
        f"SELECT s.project, c.name, c.type FROM (SELECT project, argMax(users, seq) AS users "
        f"FROM {db}.segport_snapshots GROUP BY project) AS s "
        "LEFT JOIN (SELECT table, name, type, position FROM system.columns WHERE database = {d:String}) AS c "
        "ON c.table = s.users ORDER BY s.project, c.position",
        parameters={"d": db_name},
    ).result_rows
    out: dict[str, dict[str, str]] = {}
    for project, name, kind in rows:
        columns = out.setdefault(str(project), {})
        if name:  # no match in a LEFT JOIN: the default, ''
            columns[str(name)] = str(kind)
    return out


def publish(client: Any, db: str, snap: Snapshot) -> None:
    """The commit: one row, inserted atomically. Refuses if another writer published this ``seq`` first."""
    current = read_current(client, db, snap.project)
    if current is not None and current.seq != snap.seq - 1:
        raise PublishConflict(f"project {snap.project}: snapshot {snap.seq - 1} was replaced by another writer")
    # one INSERT … SELECT of typed parameters: clickhouse-connect's row insert imports pandas on its first use
    # (about a second), which the first publish of every process paid
    client.command(
        f"INSERT INTO {db}.segport_snapshots "
        "(project, seq, data_version, next_gio_id, users, members, idlists, created) "
        "SELECT {p:String}, {s:UInt64}, {v:Int64}, {g:Int64}, {u:String}, "
        "mapFromArrays({mk:Array(String)}, {mv:Array(String)}), mapFromArrays({ik:Array(String)}, {iv:Array(String)}), "
        "{t:Float64}",
        parameters={
            "p": snap.project,
            "s": snap.seq,
            "v": snap.data_version,
            "g": snap.next_gio_id,
            "u": snap.users,
            "mk": list(snap.members),
            "mv": list(snap.members.values()),
            "ik": list(snap.idlists),
            "iv": list(snap.idlists.values()),
            "t": time.time(),
        },
    )


def collect(client: Any, db: str, project: str, keep_s: float) -> list[str]:
    """Drop the tables no snapshot needs any more; returns their names.

    A table is needed by the current snapshot, or by a snapshot replaced less than ``keep_s`` ago (an export
    that began on it may still be reading)."""
    rows = client.query(
        f"SELECT seq, users, members, idlists, created FROM {db}.segport_snapshots "
        "WHERE project = {p:String} ORDER BY seq",
        parameters={"p": project},
    ).result_rows
    if not rows:
        return []
    now = time.time()
    needed: set[str] = set()
    every: set[str] = set()
    for i, (_seq, users, members, idlists, _created) in enumerate(rows):
        tables = {users, *dict(members).values(), *dict(idlists).values()}
        every |= tables
        replaced_at = rows[i + 1][4] if i + 1 < len(rows) else None
        if replaced_at is None or now - float(replaced_at) < keep_s:
            needed |= tables
    unneeded = every - needed
    if not unneeded:
        return []
    # the history keeps the names of tables dropped long ago: drop only those still there (one read)
    present = client.query(
        "SELECT name FROM system.tables WHERE database = {d:String} AND name IN {n:Array(String)}",
        parameters={"d": db.strip("`"), "n": sorted(unneeded)},
    ).result_rows
    dropped = sorted(str(r[0]) for r in present)
    for name in dropped:
        client.command(f"DROP TABLE IF EXISTS {db}.`{name}`")
    return dropped
