"""The SQLite write lock, shared by the processes of one data dir.

SQLite runs one writer at a time, and a writer that finds the file locked sleeps in growing steps (up to
100 ms) before it retries. With `segport serve` split into API processes and an engine process, writers of
different processes meet (a submit in one, a heartbeat or a claim in another): measured, a submit then
waited tens of milliseconds for a lock that was free most of that time. So writers queue on a kernel lock
first (``flock`` on ``<meta.sqlite>.lock``), which wakes the next one the moment the lock is released, and
inside a process on a thread lock (a ``flock`` is held per open file, not per thread).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType


class WriteLock:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int | None:
        if self.path is None:
            return None
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own (flock is per open file)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        try:
            fd = self._file()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def acquire_nowait(self) -> bool:
        """Take the lock if no thread or process holds it; False at once, holding nothing, if one does."""
        if not self._thread_lock.acquire(blocking=False):
            return False
        try:
            fd = self._file()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._thread_lock.release()
            return False
        except BaseException:
            self._thread_lock.release()
            raise
        return True

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.release()

    def release(self) -> None:
        try:
            if self._fd is not None and self._pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
