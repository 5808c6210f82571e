"""A FIFO whose bytes a thread moves into a result file: how the chunks of one export become one file.

DuckDB writes each chunk's ``COPY`` into the FIFO; the pump moves the bytes into the file (kernel-side with
splice on Linux) or gzips them into it (zlib works outside the GIL). We hold a writer end open for the whole
file, so the pump sees end-of-file only after the last chunk.

Every file descriptor has one owner at every moment, so no failure path leaks one: until the pump thread has
started, :func:`fifo_into` closes whatever it opened; from then on the pump owns the reading end and the
result file and closes both when it ends, and the caller's side owns only the extra writer end.

* If the pump fails (the disk is full, a write error), it records the error and keeps *draining* the FIFO
  until the last writer closes it. A FIFO without a reader would make DuckDB's next ``open`` of it block
  forever (opening a FIFO for writing waits for a reader) or its writes fail with a broken pipe that hides
  the real error; instead :meth:`Pump.check` raises the pump's error before the next chunk starts.
* The pump never blocks in a read: it polls with a short timeout and stops when told to, so a writer that
  never closes (a stuck statement) cannot keep the thread and its two descriptors alive after the caller
  gave up waiting (``stall_s``).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

from segport.testing_hooks import hold_point

_F_SETPIPE_SZ = 1031  # Linux: a bigger FIFO buffer means fewer context switches between DuckDB and the pump
_BLOCK = 1 << 20
_POLL_MS = 200


class Pump:
    """The running pump of one result file: ``path`` is the FIFO to write into."""

    def __init__(self, fifo: Path, target: Path) -> None:
        self.path = fifo
        self.target = target
        self.failed: list[BaseException] = []
        self.stop = threading.Event()

    def check(self) -> None:
        """Raise the pump's error, if it failed: call it before each chunk."""
        if self.failed:
            raise self.failed[0]

    def run(self, reader: int, out: int, gzipped: bool) -> None:
        """The thread's body: it owns ``reader`` and ``out`` and closes both, whatever happens."""
        try:
            try:
                self._move(reader, out, gzipped)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through check()
                self.failed.append(exc)
                self._drain(reader)
        finally:
            os.close(reader)
            os.close(out)

    def _readable(self, reader: int) -> bool:
        """Wait until ``reader`` has bytes or end-of-file; False if told to stop meanwhile."""
        poller = select.poll()
        poller.register(reader, select.POLLIN | select.POLLHUP)
        while not self.stop.is_set():
            if poller.poll(_POLL_MS):
                return True
        return False

    def _move(self, reader: int, out: int, gzipped: bool) -> None:
        move = None if gzipped else getattr(os, "splice", None)
        packer = zlib.compressobj(6, zlib.DEFLATED, 31) if gzipped else None  # 31: gzip container
        held = False
        while self._readable(reader):
            try:
                if move is not None:
                    n = wrote = move(reader, out, _BLOCK)
                else:  # through user space: gzip, or no splice (not Linux)
                    data = os.read(reader, _BLOCK)
                    n = len(data)
                    packed = packer.compress(data) if packer is not None and n else data
                    if n == 0 and packer is not None:
                        packed = packer.flush()
                    _write_all(out, packed)
                    wrote = len(packed)
            except BlockingIOError:  # woken without bytes (another poll will tell)
                continue
            if wrote and not held:
                held = True
                hold_point("export-file-written")  # tests hold an export here (its file begun, not done) to act on it
            if n == 0:
                return

    def _drain(self, reader: int) -> None:
        with contextlib.suppress(OSError):
            while self._readable(reader):
                with contextlib.suppress(BlockingIOError):
                    if not os.read(reader, _BLOCK):
                        return


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


@contextlib.contextmanager
def fifo_into(path: Path, *, gzipped: bool = False, stall_s: float = 60.0) -> Iterator[Pump]:
    """A FIFO next to ``path`` (``pump.path``) whose bytes end up in ``path`` when the block ends.

    The block's error wins, except that an error of the pump (the real cause of a failed write) is raised
    instead of DuckDB's. ``stall_s``: how long the end waits for the pump to finish before giving up.
    """
    pump = Pump(path.with_name(f".{path.name}.fifo"), path)
    fifo = pump.path
    with contextlib.suppress(FileNotFoundError):
        fifo.unlink()
    opened: list[int] = []
    try:
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        opened.append(out)
        os.mkfifo(fifo, 0o600)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # non-blocking: the pump polls before reading
        opened.append(reader)
        keep = os.open(fifo, os.O_WRONLY)  # does not wait: the FIFO has a reader
        opened.append(keep)
        with contextlib.suppress(ImportError, OSError):
            import fcntl

            fcntl.fcntl(reader, _F_SETPIPE_SZ, _BLOCK)
        thread = threading.Thread(
            target=pump.run, args=(reader, out, gzipped), name=f"segport-fifo-{path.name}", daemon=True
        )
        thread.start()
    except BaseException:
        for fd in opened:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            fifo.unlink()
        raise
    try:
        try:
            yield pump
        except Exception:
            if pump.failed:  # DuckDB only saw a failed write; the pump knows why
                raise pump.failed[0] from None
            raise
        finally:
            os.close(keep)  # end of file for the pump (once DuckDB closed its own writer)
            thread.join(stall_s)
            if thread.is_alive():  # a writer never closed: stop the pump, which then closes its descriptors
                pump.stop.set()
                thread.join(1)
                raise OSError(f"the writer of {path.name} did not finish within {stall_s:.0f}s")
        pump.check()
    finally:
        with contextlib.suppress(FileNotFoundError):
            fifo.unlink()
