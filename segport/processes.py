"""`segport serve` as a small supervisor of API processes and one engine process.

The supervisor binds the public socket, then starts:

* one **engine process** (segport/roles/engine.py; what `segport worker --uds <data dir>/engine.sock` runs): it
  owns the profile engine (the DuckDB file), runs the export workers, the janitor and the daily recompute, and
  answers the profile reads and imports of the API processes (the operations of segport/engine/protocol.py);
* ``api_processes`` **API processes** (segport/roles/api.py; what `segport api` runs), all accepting on the one
  inherited socket. They read and write the metadata store, read result files for downloads and call the
  engine process for the rest (segport/engine/client.py).

A child that exits is started again: an API process at once, the engine process after a backoff that
doubles up to ``_MAX_BACKOFF_S`` while it keeps dying young (its running jobs come back under the lease
rules). An engine process that stops answering its health check (stopped, hung) is killed and so restarted
(:meth:`Supervisor._probe`). Children are forked from the supervisor (see :class:`Forked`). SIGTERM/SIGINT stop every child (TERM, a grace period, then KILL). Children get
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
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from segport.engine.client import HealthProbe
from segport.errors import SegportError
from segport.settings import Settings

log = logging.getLogger("segport.serve")
_PR_SET_PDEATHSIG = 1
_MIN_BACKOFF_S, _MAX_BACKOFF_S = 0.5, 10.0
_HEALTHY_AFTER_S = 30.0  # a child that lived this long starts its backoff over
_GRACE_S = 10.0
ENGINE_START_S = 120.0  # longer than any engine start (it opens the DuckDB file, replaying its WAL)


def die_with_parent() -> None:
    """Run in a forked child first thing: SIGKILL when the supervisor goes, however it goes."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the children's own parent watch covers it
        return
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


class Forked:
    """A child forked from the supervisor, running ``target``; the subset of ``Popen`` the supervisor uses.

    Forked, not spawned: the supervisor has imported every module already, so a child (or its replacement
    after a crash) starts in milliseconds instead of re-importing for a second or more of CPU. The
    supervisor runs no threads, so forking it is safe."""

    def __init__(self, target: Callable[[], None]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                die_with_parent()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)  # uvicorn installs its own
                target()
                code = 0
            except SegportError as exc:
                print(f"error: {exc.message}", file=sys.stderr)
                code = exc.exit_code
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


@dataclass
class Child:
    role: str  # "engine" | "api"
    target: Callable[[], None]
    process: Forked | None = None
    started: float = 0.0
    backoff_s: float = _MIN_BACKOFF_S
    due: float = 0.0  # when to start it again

    def start(self) -> None:
        self.process = Forked(self.target)
        self.started = time.monotonic()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        self.settings = settings.model_copy(update={"engine_url": f"unix:{settings.engine_socket()}"})
        self.sock = sock
        self.children: list[Child] = []
        self._stopping = False
        self._started = False
        self._next_probe = 0.0
        self._answered_pid = 0  # the engine process that answered a probe (one still starting is not judged)
        self._failed_probes = 0

    # --- the children --------------------------------------------------------------------------------
    def plan(self) -> list[Child]:
        from segport.roles import api
        from segport.roles import engine as engine_role

        s, uds = self.settings, str(self.settings.engine_socket())

        def engine_main() -> None:
            self.sock.close()  # the public port is the API processes' alone
            engine_role.run(s, uds=uds, nice=s.engine_nice, prepared=True)  # run_server migrated and checked

        def api_main() -> None:
            # at `serve`'s start, wait for the engine (requests queue in the backlog); a replacement serves at
            # once, answering 503 for engine reads if the engine happens to be down too
            api.run(s, self.sock, wait_for_engine_s=0.0 if self._started else ENGINE_START_S, prepared=True)

        engine = Child("engine", engine_main)
        apis = [Child("api", api_main) for _ in range(s.api_process_count())]
        return [engine, *apis]

    def run(self) -> None:
        """Start the children and keep them running until SIGTERM/SIGINT.

        All start at once (each API process waits for the engine before it accepts: see `roles.api.run`).
        An engine that exits before it ever answered (the data dir is locked, a bad setting) ends `serve`
        with its exit code, its error line already on stderr, rather than restarting forever."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.children = self.plan()
        engine, ready = self.children[0], False
        self._health = HealthProbe(self.settings.engine_url)
        try:
            for child in self.children:
                child.start()
            self._started = True
            while not self._stopping:
                if not ready:
                    assert engine.process is not None
                    code = engine.process.poll()
                    if code is not None:
                        raise SystemExit(code or 1)
                    ready = self._health.answers()
                else:
                    self._probe(engine)
                self._tend(engine_ready=ready)
                time.sleep(0.1)
        finally:
            self.stop()
            self._health.close()

    def _tend(self, *, engine_ready: bool) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.alive() or (child.role == "engine" and not engine_ready):  # a first start failing: run() ends
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
                child.start()

    def _probe(self, engine: Child) -> None:
        """Every ``engine_probe_interval_s``, ask the engine's health (``engine_probe_deadline_s``). An engine
        that answered once and then fails ``engine_probe_failures`` probes in a row is stopped or hung: SIGKILL
        it, and `_tend` starts another (its running jobs come back under the lease rules). An engine still
        opening its file (it never answered yet) is not judged."""
        s, now = self.settings, time.monotonic()
        if now < self._next_probe or not engine.alive():
            return
        self._next_probe = now + s.engine_probe_interval_s
        assert engine.process is not None
        pid = engine.process.pid
        if self._health.answers(s.engine_probe_deadline_s):
            self._answered_pid, self._failed_probes = pid, 0
            return
        if self._answered_pid != pid:
            return
        self._failed_probes += 1
        if self._failed_probes < s.engine_probe_failures:
            return
        log.warning("engine process %s failed %s health checks in a row: killing it", pid, self._failed_probes)
        print(
            f"segport: engine process {pid} stopped answering ({self._failed_probes} health checks of "
            f"{s.engine_probe_deadline_s:g} s failed); killing it",
            file=sys.stderr,
            flush=True,
        )
        self._failed_probes = 0
        engine.process.kill()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def stop(self) -> None:
        """TERM every child, wait up to the grace period, KILL the rest."""
        self._stopping = True
        live = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for p in live:
            p.terminate()
        deadline = time.monotonic() + _GRACE_S
        for p in live:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(_GRACE_S)
