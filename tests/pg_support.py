"""A throwaway PostgreSQL 15 cluster for the tests that need a real server.

``PgCluster.start()`` runs ``initdb`` + ``pg_ctl start`` in a fresh temp folder, listening on a free TCP port on
127.0.0.1 only (and a unix socket in that folder), trust auth, no fsync (the data is thrown away). Each test
gets its own empty schema from :meth:`PgCluster.new_store_url`, named in the URL's ``search_path`` (a schema
costs nothing; a database per test would copy a template of ~8 MB each time). ``initdb`` refuses to run as root, so as root the
server runs as the ``postgres`` system user (the folder is handed to it). Without the binaries the tests skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

PG_BIN = Path(os.environ.get("SEGPORT_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
SERVER_USER = "postgres"  # the system user the server runs as when the tests run as root


def missing_reason() -> str | None:
    """Why a cluster cannot be started here, or ``None`` if it can."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).is_file():
            return f"PostgreSQL 15 binaries not found ({PG_BIN / tool} is missing; set SEGPORT_TEST_PG_BIN)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no {SERVER_USER!r} system user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root and `runuser` is missing (needed to run initdb as postgres)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """One PostgreSQL server in a temp folder; :meth:`stop` removes every trace of it."""

    def __init__(self) -> None:
        # not under pytest's tmp dir: that one is 0700 root, and the server user must reach its folder
        self.root = Path(tempfile.mkdtemp(prefix="segport-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._options = ""
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as_user = ["runuser", "-u", SERVER_USER, "--"]

    def _run(self, *args: str) -> None:
        # cwd: the server user may not be allowed into the directory the tests run from
        proc = subprocess.run([*self._as_user, *args], capture_output=True, text=True, timeout=60, cwd=self.root)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}{log}")

    def start(self) -> PgCluster:
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        for attempt in range(3):  # a free port can be taken between probing and binding it
            self.port = _free_port()
            options = (
                f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            self._options = options
            try:
                self.resume()
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
        return self

    def pause(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m mode``), keeping its data: :meth:`resume` starts it again."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def resume(self) -> None:
        """Start the server (again), on the same port."""
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            self._options,
            "-w",
            "-t",
            "30",
            "start",
        )

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def new_store_url(self) -> str:
        """Create an empty schema and return the SQLAlchemy URL (psycopg 3 driver) whose tables live in it,
        as ``SEGPORT_METADATA_URL`` takes it."""
        schema = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres?options=-csearch_path%3D{schema}"

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL server for the whole test session (skips the test if PostgreSQL 15 is not installed)."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = PgCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """A new, empty metadata store (its own schema) on the session's server, as a ``postgresql+psycopg://`` URL."""
    return pg_cluster.new_store_url()
