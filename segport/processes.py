"""`segport serve` as a small supervisor of API processes and one engine process.

The supervisor binds the public socket, then starts:

* one **engine process** (`segport worker --uds <data dir>/engine.sock`): it owns the profile engine
  (the DuckDB file), runs the export workers, the janitor and the daily recompute, and answers the profile
  reads and imports of the API processes on its internal API (segport/engine/internal.py);
* ``api_processes`` **API processes** (`segport api --fd N`), all accepting on the one inherited socket.
  They read and write the metadata store, read result files for downloads and call the engine process for
  the rest (segport/engine/remote.py).

A child that exits is started again: an API process at once, the engine process after a backoff that
doubles up to ``_MAX_BACKOFF_S`` while it keeps dying young (its running jobs come back under the lease
rules). SIGTERM/SIGINT stop every child (TERM, a grace period, then KILL). Children get
``PR_SET_PDEATHSIG`` = SIGKILL, so a supervisor killed with -9 takes them with it: no orphans.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from segport.settings import Settings

log = logging.getLogger("segport.serve")
_PR_SET_PDEATHSIG = 1
_MIN_BACKOFF_S, _MAX_BACKOFF_S = 0.5, 10.0
_HEALTHY_AFTER_S = 30.0  # a child that lived this long starts its backoff over
_GRACE_S = 10.0


def die_with_parent() -> None:
    """Run in the child between fork and exec: SIGKILL when the supervisor goes, however it goes."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the children's own parent watch covers it
        return
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Child:
    role: str  # "engine" | "api"
    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff_s: float = _MIN_BACKOFF_S
    due: float = 0.0  # when to start it again
    restarts: int = 0
    history: list[int] = field(default_factory=list)  # pids it had, oldest first

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, env=self.env, pass_fds=self.pass_fds, preexec_fn=die_with_parent, close_fds=True
        )
        self.started = time.monotonic()
        self.history.append(self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        self.settings = settings
        self.sock = sock
        self.children: list[Child] = []
        self._stopping = False

    # --- the children --------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SEGPORT_DATA_DIR"] = str(self.settings.data_dir.resolve())
        env["SEGPORT_ENGINE_URL"] = f"unix:{self.settings.engine_socket()}"
        env["SEGPORT_SUPERVISOR_PID"] = str(os.getpid())
        return env

    def plan(self) -> list[Child]:
        python = [sys.executable, "-m", "segport.cli"]
        engine = Child("engine", [*python, "worker", "--uds", str(self.settings.engine_socket())], self._env())
        fd = self.sock.fileno()
        apis = [
            Child("api", [*python, "api", "--fd", str(fd)], self._env(), pass_fds=(fd,))
            for _ in range(self.settings.api_process_count())
        ]
        return [engine, *apis]

    def run(self) -> None:
        """Start the children and keep them running until SIGTERM/SIGINT.

        All start at once (each API process waits for the engine before it accepts: see `segport api`).
        An engine that exits before it ever answered (the data dir is locked, a bad setting) ends `serve`
        with its exit code, its error line already on stderr, rather than restarting forever."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.children = self.plan()
        engine, url, ready = self.children[0], f"unix:{self.settings.engine_socket()}", False
        try:
            for child in self.children:
                child.start()
            while not self._stopping:
                if not ready:
                    assert engine.process is not None
                    code = engine.process.poll()
                    if code is not None:
                        raise SystemExit(code or 1)
                    ready = engine_answers(url)
                self._tend()
                time.sleep(0.1)
        finally:
            self.stop()

    def _tend(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.alive():
                continue
            if child.process is not None:  # it just died
                code = child.process.returncode
                lived = now - child.started
                child.backoff_s = (
                    _MIN_BACKOFF_S if lived > _HEALTHY_AFTER_S else min(child.backoff_s * 2, _MAX_BACKOFF_S)
                )
                delay = child.backoff_s if child.role == "engine" else 0.0
                log.warning(
                    "%s process %s exited (%s); starting another in %.1fs", child.role, child.process.pid, code, delay
                )
                print(
                    f"segport: {child.role} process {child.process.pid} exited ({code}); restarting",
                    file=sys.stderr,
                    flush=True,
                )
                child.process = None
                child.due = now + delay
            if now >= child.due:
                child.restarts += 1
                child.start()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def stop(self) -> None:
        """TERM every child, wait up to the grace period, KILL the rest."""
        self._stopping = True
        live = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
        deadline = time.monotonic() + _GRACE_S
        for p in live:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def engine_answers(url: str) -> bool:
    """Whether the engine's internal API at ``url`` answers its health check."""
    from segport.engine.remote import EngineClient
    from segport.errors import SegportError

    client = EngineClient(url)
    try:
        client.call("health", timeout=2.0)
        return True
    except (SegportError, httpx.HTTPError):
        return False
    finally:
        client.close()


def wait_for_engine(url: str, timeout_s: float) -> bool:
    """Wait until the engine answers (True) or ``timeout_s`` passed (False: serve anyway, engine reads 503).

    Connections wait in the shared socket's backlog meanwhile, so clients see a slow first answer rather
    than a 503 while `segport serve` starts."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if engine_answers(url):
            return True
        time.sleep(0.05)
    return False


def unlink_stale_socket(path: Path) -> None:
    """Remove the socket a killed engine process left behind (uvicorn cannot bind over it)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
