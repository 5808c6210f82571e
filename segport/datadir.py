"""The data dir is private to the user segport runs as, like PostgreSQL's: a folder 0700, files 0600.

Every segport process sets its umask to 077 first thing (:func:`private_umask`: the CLI's entry, and every role
that opens the stores), so whatever it creates (the SQLite file and its WAL, the DuckDB file, result files,
``server.json``) is the user's alone whatever umask it was started under. :func:`prepare_data_dir` creates the
folder 0700, takes group and other access away from one that has it, and refuses a folder another user owns or
that group or others may write: such a folder lets another local user swap the files under segport.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from segport.errors import UnsafeDataDir

PRIVATE_UMASK = 0o077


def private_umask() -> None:
    """Files and folders this process creates from now on are its user's alone (0600 / 0700)."""
    os.umask(PRIVATE_UMASK)


def prepare_data_dir(path: Path) -> None:
    """Create ``path`` 0700 (parents included) or check an existing one; raise :class:`UnsafeDataDir` for a
    folder another user owns or that group or others may write; make one that others may read 0700."""
    private_umask()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.geteuid():
        raise UnsafeDataDir(
            f"data dir {path} is owned by another user (uid {st.st_uid}); segport runs only on a data dir of its "
            f"own user (uid {os.geteuid()})"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise UnsafeDataDir(
            f"data dir {path} may be written by group or others (mode {mode:04o}); "
            f"make it private first: chmod 700 {path}"
        )
    if mode & 0o077:
        path.chmod(0o700)
