"""Typed settings: one object, read from ``SEGPORT_<NAME>`` environment variables and CLI flags.

Names carry their units (``_s`` seconds, ``_bytes``, ``_rows``). Every field has a default and a help line;
the settings table of docs/configuration.md is generated from (and checked against) this class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEGPORT_", extra="ignore", validate_default=True)

    # --- where things live ------------------------------------------------------------------------
    data_dir: Path = Field(Path("./segport-data"), description="Folder holding the metadata, profile and result files.")
    metadata_url: str = Field(
        "",
        description="SQLAlchemy URL of the metadata store; empty means the SQLite file `meta.sqlite` in the data dir.",
    )
    engine: Literal["duckdb", "clickhouse"] = Field(
        "duckdb", description="Profile engine backend: `duckdb` (a file in the data dir) or `clickhouse`."
    )
    results: Literal["local", "s3"] = Field(
        "local", description="Result file store backend: `local` (the data dir) or `s3` (S3-compatible storage)."
    )

    # --- S3 result store (results=s3; credentials and region from the standard AWS_* variables) ---------
    s3_bucket: str = Field("", description="Bucket holding result files (must exist; checked at start-up).")
    s3_prefix: str = Field("segport/", description="Key prefix of every object segport writes in the bucket.")
    s3_endpoint_url: str = Field("", description="S3 endpoint, e.g. http://minio:9000; empty means AWS S3.")
    s3_part_size_bytes: int = Field(
        8 * 1024**2, ge=5 * 1024**2, description="Multipart upload part size (S3's minimum is 5 MiB)."
    )
    s3_upload_buffers: int = Field(
        2, ge=1, le=16, description="Parts held in memory per file being uploaded (memory = parts x part size)."
    )
    s3_presigned_redirect: bool = Field(
        False, description="`/download` answers 302 to a presigned S3 URL instead of streaming the file."
    )
    s3_presigned_ttl_s: int = Field(300, ge=1, le=7 * 24 * 3600, description="Lifetime of a presigned download URL.")
    s3_timeout_s: float = Field(20.0, gt=0, description="Connect and read timeout of one S3 request.")

    # --- HTTP --------------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address `segport serve` listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port `segport serve` listens on.")
    public_url: str = Field("", description="Base URL printed in examples; empty means http://{host}:{port}.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest accepted request body.")
    api_processes: int = Field(
        0, ge=0, description="API processes `segport serve` runs on its one port; 0 = one per core."
    )
    engine_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Niceness added to the engine process of `segport serve`: under CPU contention exports yield "
        "the CPU to API requests (see docs/processes.md); 0 = same priority.",
    )
    engine_url: str = Field(
        "",
        description="Where `segport api` sends engine reads and imports: `unix:PATH` or `http://HOST:PORT` of a "
        "`segport worker --listen`; empty: engine endpoints answer 503.",
    )
    engine_max_calls: int = Field(
        16,
        ge=1,
        description="Engine calls one API process has in flight at once (at most half of `api_threads`, so "
        "submits, polls and downloads always find a thread); one more is answered 503 at once.",
    )
    engine_probe_interval_s: float = Field(
        1.0, gt=0, description="How often the supervisor and each API process check that the engine answers."
    )
    engine_probe_deadline_s: float = Field(
        2.0, gt=0, description="An engine health check not answered within this failed: engine reads answer 503."
    )
    engine_probe_failures: int = Field(
        5,
        ge=1,
        description="Failed health checks in a row after which `segport serve` kills (SIGKILL) and restarts an "
        "engine process that stopped answering.",
    )
    max_upload_bytes: int = Field(
        50 * 1024**3, ge=1024, description="Largest file uploaded to the admin API (users files, id lists)."
    )
    request_read_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request's headers, and a body of at most `max_body_bytes`, must arrive within this time "
        "(uploads: between two reads); else HTTP 408 and the connection closes.",
    )
    keep_alive_timeout_s: float = Field(
        30.0,
        gt=0,
        description="An idle keep-alive connection is closed after this (30 s: clients polling about once a second "
        "on a busy machine lost connections closed just as they sent on them with uvicorn's 5 s).",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Connections one API process holds open at once (`segport serve` runs `api_processes` of them); one more is answered 503 and closed.",
    )
    api_threads: int = Field(
        40, ge=1, description="Threads one API process runs blocking handlers on (FastAPI's thread pool)."
    )
    metadata_pool_size: int = Field(
        0,
        ge=0,
        description="Metadata connections per process; 0 = api_threads + 2 × max_running_jobs + 3 "
        "(every thread that may hold one at once). A request waits at most 30 s for one, then HTTP 503.",
    )

    # --- exports -----------------------------------------------------------------------------------
    max_properties: int = Field(60, ge=1, description="Most keys one export may request (GrowingIO: 60).")
    max_file_rows: int = Field(
        0, ge=0, description="Split an export into parts of at most this many rows; 0 = one file."
    )
    excel_safe: bool = Field(
        False,
        description="Prefix ' to cells and CSV header names that start with = + - @ TAB CR (off: the seed's bytes win).",
    )

    # --- jobs and workers --------------------------------------------------------------------------
    serve_workers: bool = Field(
        True, description="Run export workers inside `segport serve` (off: use `segport worker`)."
    )
    max_running_jobs: int = Field(2, ge=1, description="Exports running at once in one process (its worker threads).")
    lease_s: float = Field(60.0, gt=0, description="How long a claimed job stays owned without a heartbeat.")
    heartbeat_s: float = Field(10.0, gt=0, description="How often a running job renews its lease.")
    poll_interval_s: float = Field(
        2.0, gt=0, description="How often an idle worker looks for jobs it was not woken for."
    )
    max_attempts: int = Field(3, ge=1, description="Runs a job gets (after lost leases) before it is ERROR.")
    result_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="How long finished results are kept.")
    cleanup_interval_s: float = Field(300.0, gt=0, description="How often expired results are deleted.")

    max_queued_jobs_per_project: int = Field(
        100, ge=1, description="Exports one project may have waiting to run; one more is refused with HTTP 429."
    )
    max_running_jobs_per_project: int = Field(
        2, ge=1, description="Exports of one project running at once; the rest wait in the queue (fairness)."
    )
    retry_after_s: int = Field(5, ge=1, description="`Retry-After` sent with HTTP 429 when a project is at its cap.")

    # --- engine ------------------------------------------------------------------------------------
    engine_memory_bytes: int = Field(
        0,
        ge=0,
        description="Memory budget of the process that owns the engine; every export, page, count, lookup, import "
        "and segment computation runs inside it (docs/operations.md). 0 = half the memory of the machine or "
        "of the container (cgroup limit), at least 256 MiB.",
    )
    engine_queue_max: int = Field(
        32,
        ge=0,
        description="Engine reads (member pages, counts, lookups) waiting for memory at once; one more is answered "
        "503 `ENGINE_OVERLOADED` with `Retry-After`.",
    )
    engine_queue_wait_s: float = Field(
        10.0,
        ge=0,
        description="Longest an engine read waits for memory before it is answered 503 `ENGINE_OVERLOADED`.",
    )
    duckdb_memory_limit: str = Field(
        "",
        description="DuckDB `memory_limit` (spills to the data dir's `tmp/duckdb` beyond it); empty = 80% of "
        "`engine_memory_bytes`.",
    )
    recompute_interval_s: float = Field(
        86400.0, ge=0, description="`segport serve` recomputes DAILY segments this often (0: only after imports)."
    )
    event_load_interval_s: float = Field(
        1.0,
        ge=0,
        description="The engine process loads the event spool's pending batches this often (0: never; see docs/events.md).",
    )
    duckdb_threads: int = Field(
        0,
        ge=0,
        description="DuckDB worker threads; 0 = one per core, fewer when an export's share of the memory budget "
        "leaves under 32 MiB a thread.",
    )
    console_session_ttl_s: int = Field(
        12 * 3600, ge=60, description="How long a web console sign-in lasts (its session cookie and row)."
    )
    clickhouse_url: str = Field(
        "",
        description="ClickHouse for `engine=clickhouse`: `http(s)://user:pass@host:8123/db`, or `chdb://DIR` "
        "(`?database=db`) for ClickHouse's engine in process; empty means `chdb://` in the data dir.",
    )
    clickhouse_keep_s: float = Field(
        3600.0,
        gt=0,
        description="How long ClickHouse tables an import or recompute replaced are kept for exports still reading them.",
    )

    def resolved_metadata_url(self) -> str:
        return self.metadata_url or f"sqlite:///{(self.data_dir / 'meta.sqlite').resolve()}"

    def resolved_pool_size(self) -> int:
        """Threads that may hold a metadata connection at once: the API's thread pool, each running job and
        its heartbeat, and the event loop, the janitor and the daily scheduler."""
        return self.metadata_pool_size or self.api_threads + 2 * self.max_running_jobs + 3

    def engine_memory(self) -> int:
        """The engine process's memory budget in bytes: ``engine_memory_bytes``, or half the memory this
        process may use (the machine's, or the container's cgroup limit when lower), at least 256 MiB."""
        if self.engine_memory_bytes:
            return self.engine_memory_bytes
        return max(256 * 1024**2, available_memory() // 2)

    def api_process_count(self) -> int:
        import os

        return self.api_processes or max(1, os.cpu_count() or 1)

    def engine_socket(self) -> Path:
        """The Unix socket of the engine process `segport serve` starts (in the data dir, shared by both)."""
        return self.data_dir.resolve() / "engine.sock"

    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"


def available_memory() -> int:
    """The memory this process may use: the machine's, or its cgroup's limit (v2 or v1) when that is lower."""
    import os

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 4 * 1024**3
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def settings_table() -> str:
    """The documented settings table (markdown), generated from :class:`Settings` so it cannot drift."""
    lines = ["| setting | environment variable | default | what |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = str(default) if not isinstance(default, bool) else str(default).lower()
        if isinstance(default, str) and not default:
            shown = '""'
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | `SEGPORT_{name.upper()}` | `{shown}` | {description} |")
    return "\n".join(lines)


TABLE_START, TABLE_END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def with_settings_table(readme: str) -> str:
    """``readme`` (a markdown page) with the text between the settings-table markers replaced by :func:`settings_table`."""
    head, sep, rest = readme.partition(TABLE_START)
    _, sep2, tail = rest.partition(TABLE_END)
    if not sep or not sep2:
        raise ValueError(f"the page has no {TABLE_START} ... {TABLE_END} markers")
    return f"{head}{TABLE_START}\n{settings_table()}\n{TABLE_END}{tail}"


# python -m segport.settings [docs/configuration.md]: print the table, or rewrite it in place
if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1:
        target = Path(sys.argv[1])
        target.write_text(with_settings_table(target.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        print(settings_table())
