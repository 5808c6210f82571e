"""An export attempt written into a local staging folder, published by the store's one ``rename``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from segport.results.local import LocalResultStore


class LocalAttempt:
    def __init__(self, store: LocalResultStore, job_id: str, attempt: int, job_name: str, prefix: bytes) -> None:
        self.store = store
        self.job_name = job_name
        self.prefix = prefix
        self.folder = store.staging(job_id, attempt)
        self.names: list[str] = []
        self.published = False

    def prepare(self, names: list[str]) -> None:
        self.names = list(names)

    def finish(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for name in self.names:
            path = self.folder / name
            if self.prefix:
                _prepend(path, self.prefix)
            sizes[name] = path.stat().st_size
        return sizes

    def failure(self) -> BaseException | None:
        return None  # a local write fails in the engine itself, with its own error

    def publish(self) -> None:
        self.store.publish(self.folder, self.job_name)
        self.published = True

    def discard(self) -> None:
        if self.published:  # published, then the lease was lost before FINISH
            self.store.delete(self.job_name)
        else:
            self.store.discard(self.folder)


def _prepend(path: Path, prefix: bytes) -> None:
    """Put ``prefix`` before the file's bytes (a rewrite: local files are not streamed anywhere)."""
    tmp = path.with_name(path.name + ".prefix")
    with open(tmp, "wb") as out, open(path, "rb") as src:
        out.write(prefix)
        shutil.copyfileobj(src, out, 1 << 20)
    os.replace(tmp, path)
