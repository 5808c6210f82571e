"""Tables of the metadata store. Changes to them go through an Alembic migration."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from segport.errors import InvalidParameter


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # the engine's data version, mirrored here by DataService so a submit never asks the engine (dedupe)
    data_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    data_version_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # what the SDKs call the product id / project key; made by the first `segport datasources add`
    collect_key: Mapped[str | None] = mapped_column(String(32), nullable=True)

    __table_args__ = (Index("ux_projects_collect_key", "collect_key", unique=True),)


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class TokenProject(Base):
    __tablename__ = "token_projects"
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)


class CatalogRow(Base):
    __tablename__ = "catalog"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(110), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16), default="string")
    multi: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SegmentRow(Base):
    __tablename__ = "segments"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(110), primary_key=True)
    id: Mapped[str] = mapped_column(String(8), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(20), default="DIRECT")
    scheduler: Mapped[str] = mapped_column(String(10), default="DAILY")
    rule: Mapped[str | None] = mapped_column(Text, nullable=True)
    identity: Mapped[str | None] = mapped_column(String(110), nullable=True)
    detector_stage: Mapped[str] = mapped_column(String(10), default="NONE")
    detected_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    total_users: Mapped[int] = mapped_column(Integer, default=0)
    unmatched: Mapped[int] = mapped_column(Integer, default=0)
    detector_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    creator_id: Mapped[str] = mapped_column(String(64), default="")
    creator: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updater_id: Mapped[str] = mapped_column(String(64), default="")
    updater: Mapped[str] = mapped_column(String(200), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class JobRow(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    target_kind: Mapped[str] = mapped_column(String(10))
    target_key: Mapped[str] = mapped_column(String(110))
    target_name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str] = mapped_column(String(10), default="NONE")
    files: Mapped[str] = mapped_column(Text, default="[]")
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # host:pid:random/thread; a Linux host name alone may be 64 characters (migration pg_widen_columns)
    lease_owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # 64-bit: PostgreSQL's INTEGER stops at 2 GiB and a big export's files pass that
    rows: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    file_day: Mapped[str] = mapped_column(String(10))
    # the project's data version at submit; the version (and time) of the snapshot the file was read from
    submit_version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    data_version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    data_version_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_jobs_stage_created", "stage", "created_at"),
        Index("ix_jobs_project_fingerprint", "project_id", "fingerprint"),
    )


class ConsoleSession(Base):
    """A signed-in browser of the web console. Only a hash of the session id (the cookie's value) is
    stored, like tokens; the session lives as long as its token and never past ``expires_at``."""

    __tablename__ = "console_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class DataSourceRow(Base):
    """A data source of a project: the ``dataSourceId`` an SDK sends with the project's collection key."""

    __tablename__ = "datasources"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class EventBatchRow(Base):
    """The spool: one accepted collect request (gzip of the JSON list of its normalized events), kept until
    the engine has loaded it and the deduplication window has passed."""

    __tablename__ = "event_batches"
    # SQLite: only INTEGER PRIMARY KEY is the auto-numbered rowid (BIGINT would be a plain, NOT NULL column)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    datasource_id: Mapped[str] = mapped_column(String(32))
    dedup_key: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    n_events: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    loaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ux_event_batches_dedup", "project_id", "dedup_key", unique=True),
        Index("ix_event_batches_loaded", "loaded_at", "id"),
    )


# What a table's rows are called in the message of a too-long value.
_ROW_NAMES = {
    "projects": "project",
    "tokens": "token",
    "catalog": "catalogue entry",
    "segments": "segment",
    "jobs": "job",
    "datasources": "data source",
}


@event.listens_for(Session, "before_flush")
def _check_lengths(session: Session, _context: object, _instances: object) -> None:
    """Refuse text longer than its column on every backend, before the database sees it.

    PostgreSQL rejects such a value with an error of its own (a 500 in the API) while SQLite stores it
    whole; checking here makes both answer the same :class:`InvalidParameter`.
    """
    for obj in (*session.new, *session.dirty):
        check_lengths(obj)


def check_lengths(obj: object) -> None:
    """Raise :class:`InvalidParameter` if a text attribute of ``obj`` is longer than its column (for rows
    inserted with Core statements, which skip the session's check)."""
    table = getattr(obj, "__table__", None)
    if table is None:
        return
    for column in table.columns:
        limit = getattr(column.type, "length", None)
        value = getattr(obj, column.key, None)
        if limit is not None and isinstance(value, str) and len(value) > limit:
            what = _ROW_NAMES.get(table.name, table.name)
            raise InvalidParameter(f"{what} {column.key} is too long: at most {limit} characters (got {len(value)})")


class EventAttributeRow(Base):
    """A key of a project's event attribute catalogue: declared (CLI, admin API) or recorded on first sight."""

    __tablename__ = "event_attributes"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(110), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16), default="string")
    description: Mapped[str] = mapped_column(Text, default="")
    declared: Mapped[bool] = mapped_column(Boolean, default=False)  # False: recorded with an inferred type
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class EventNameRow(Base):
    """An event name a project's store holds, and the attribute keys its events carried (JSON list)."""

    __tablename__ = "event_names"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(110), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    attrs: Mapped[str] = mapped_column(Text, default="[]")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TagDefinitionRow(Base):
    """A tag computed from events: its definition (JSON as given) beside the catalogue's ``tag_`` entry of the
    same key, which holds its name and value type, and its detector (the last computation)."""

    __tablename__ = "tag_definitions"
    project_id: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(110), primary_key=True)
    type: Mapped[str] = mapped_column(String(24))  # AGGREGATED, ATTRIBUTION_ATTRIBUTE, TOP_N_ATTRIBUTE, HORIZONTAL
    definition: Mapped[str] = mapped_column(Text)
    scheduler: Mapped[str] = mapped_column(String(10), default="DAILY")
    detector_stage: Mapped[str] = mapped_column(String(10), default="NONE")
    detected_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    total_users: Mapped[int] = mapped_column(Integer, default=0)
    detector_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    creator: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        ForeignKeyConstraint(["project_id", "key"], ["catalog.project_id", "catalog.key"], ondelete="CASCADE"),
    )
