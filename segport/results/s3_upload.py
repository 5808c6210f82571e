"""An export attempt streamed into S3 multipart uploads while the engine writes it.

Every file the engine is about to write (:meth:`S3Attempt.prepare`) becomes a FIFO in a local folder, read by
a thread that cuts the stream into parts of ``part_size`` bytes and hands them to an uploading thread. At
most ``buffers`` parts of one file are in memory (a semaphore): when S3 is slower than the engine, the
engine waits on the pipe instead of the process growing. Nothing is written to disk but the FIFOs.

We hold a writer end of each FIFO ourselves until the engine has returned, so a reader sees end-of-file
only when the engine is done with every file (an engine may open, close and reopen its paths, or never
open one). If an upload fails, its reader closes the FIFO: the engine's next write fails at once (broken
pipe) instead of blocking, and :meth:`failure` tells the real reason.

Multipart uploads are completed only in :meth:`publish`, after the whole attempt succeeded; their keys carry
the attempt (``<job id>-<attempt>``), so the job's uris point at them only once its FINISH transition
records that attempt. Whatever fails is aborted here, or by the janitor if this process died.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segport.errors import ResultStoreUnavailable
from segport.testing_hooks import hold_point

log = logging.getLogger("segport.results.s3")
_F_SETPIPE_SZ = 1031  # Linux: a 1 MiB pipe buffer means fewer wake-ups between the engine and the reader


class _Upload:
    """One file: FIFO -> parts -> one multipart upload."""

    def __init__(self, attempt: S3Attempt, name: str) -> None:
        self.attempt = attempt
        self.name = name
        self.key = attempt.key_of(name)
        self.fifo = attempt.folder / name
        self.size = 0
        self.parts: list[dict[str, Any]] = []
        self.upload_id: str | None = None
        self.completed = False
        self.error: BaseException | None = None
        self._queue: queue.Queue[tuple[int, bytearray] | None] = queue.Queue()
        self._slots = threading.Semaphore(attempt.buffers)
        self._reader_fd = -1
        self._keep_fd = -1
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        os.mkfifo(self.fifo, 0o600)
        self._reader_fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        self._keep_fd = os.open(self.fifo, os.O_WRONLY)  # cannot block: the FIFO has a reader
        os.set_blocking(self._reader_fd, True)
        with contextlib.suppress(ImportError, OSError):
            import fcntl

            fcntl.fcntl(self._reader_fd, _F_SETPIPE_SZ, 1 << 20)
        self.upload_id = self.attempt.call(
            "create_multipart_upload", Key=self.key, **self.attempt.object_headers(self.name)
        )["UploadId"]
        for target, role in ((self._read, "read"), (self._send, "send")):
            thread = threading.Thread(target=target, name=f"segport-s3-{role}-{self.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    # --- the two threads ---------------------------------------------------------------------------
    def _read(self) -> None:
        number = 0
        pending = self.attempt.prefix
        try:
            while True:
                if not self._take_slot():
                    return
                buf = bytearray(self.attempt.part_size)
                view = memoryview(buf)
                filled = len(pending)
                view[:filled] = pending
                pending = b""
                eof = False
                while filled < len(buf):
                    n = os.readv(self._reader_fd, [view[filled:]])
                    if n == 0:
                        eof = True
                        break
                    filled += n
                    if self.failed():
                        return
                view.release()
                del buf[filled:]
                self.size += filled
                number += 1
                if filled or number == 1:  # S3 needs one part even for an empty file
                    self._queue.put((number, buf))
                else:
                    self._slots.release()
                if eof:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by finish() / failure()
            self.error = self.error or exc
        finally:
            # closing our read end makes the engine's next write fail (EPIPE) instead of block
            with contextlib.suppress(OSError):
                os.close(self._reader_fd)
            self._queue.put(None)

    def _take_slot(self) -> bool:
        while not self._slots.acquire(timeout=0.2):
            if self.failed():
                return False
        return not self.failed()

    def _send(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            number, data = item
            try:
                if not self.failed():
                    answer = self.attempt.call(
                        "upload_part", Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
                    )
                    self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                    hold_point("s3-part-sent")  # tests hold an upload here (open, a part in) to act on it
            except BaseException as exc:  # noqa: BLE001 - reported by finish() / failure()
                self.error = self.error or exc
            finally:
                del data
                self._slots.release()

    def failed(self) -> bool:
        return self.error is not None or self.attempt.aborted.is_set()

    # --- driven by the attempt ---------------------------------------------------------------------
    def end_of_input(self) -> None:
        if self._keep_fd >= 0:
            os.close(self._keep_fd)
            self._keep_fd = -1

    def wait(self) -> None:
        for thread in self._threads:
            thread.join()
        if not self._threads and self._reader_fd >= 0:  # start() failed before the reader owned it
            os.close(self._reader_fd)
            self._reader_fd = -1

    def complete(self) -> None:
        parts = sorted(self.parts, key=lambda p: p["PartNumber"])
        self.attempt.call(
            "complete_multipart_upload", Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts}
        )
        self.completed = True

    def remove(self) -> None:
        """Abort the upload, or delete the object if it was completed. Best effort: the janitor retries."""
        try:
            if self.completed:
                self.attempt.call("delete_object", Key=self.key)
            elif self.upload_id is not None:
                self.attempt.call("abort_multipart_upload", Key=self.key, UploadId=self.upload_id)
        except ResultStoreUnavailable as exc:
            log.warning("could not remove %s (the janitor will): %s", self.key, exc)
        with contextlib.suppress(FileNotFoundError):
            self.fifo.unlink()


class S3Attempt:
    """:class:`~segport.results.base.Attempt` for the S3 store."""

    def __init__(
        self,
        folder: Path,
        key_of: Callable[[str], str],
        call: Callable[..., dict[str, Any]],
        object_headers: Callable[[str], dict[str, str]],
        *,
        prefix: bytes,
        part_size: int,
        buffers: int,
    ) -> None:
        self.folder = folder
        self.key_of = key_of
        self.call = call
        self.object_headers = object_headers
        self.prefix = prefix
        self.part_size = part_size
        self.buffers = buffers
        self.aborted = threading.Event()
        self.uploads: list[_Upload] = []

    def prepare(self, names: list[str]) -> None:
        known = {u.name for u in self.uploads}
        for name in names:
            if name in known:  # an engine may ask for the names more than once
                continue
            upload = _Upload(self, name)
            self.uploads.append(upload)  # before start: discard() cleans up whatever start got to
            try:
                upload.start()
            except BaseException as exc:
                upload.error = exc
                raise

    def finish(self) -> dict[str, int]:
        for upload in self.uploads:
            upload.end_of_input()
        for upload in self.uploads:
            upload.wait()
        error = self.failure()
        if error is not None:
            raise error
        return {u.name: u.size for u in self.uploads}

    def failure(self) -> BaseException | None:
        for upload in self.uploads:
            if upload.error is not None:
                if isinstance(upload.error, ResultStoreUnavailable):
                    return upload.error
                return ResultStoreUnavailable(f"storing {upload.name} failed: {upload.error}")
        return None

    def publish(self) -> None:
        for upload in self.uploads:
            upload.complete()
        self._close_folder()

    def discard(self) -> None:
        self.aborted.set()
        for upload in self.uploads:
            upload.end_of_input()
        for upload in self.uploads:
            upload.wait()
        for upload in self.uploads:
            upload.remove()
        self._close_folder()

    def _close_folder(self) -> None:
        for entry in self.folder.iterdir() if self.folder.exists() else []:
            with contextlib.suppress(OSError):
                entry.unlink()
        with contextlib.suppress(OSError):
            self.folder.rmdir()
