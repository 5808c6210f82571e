"""Virtual environments for the real GrowingIO clients the tests drive (growingio-tracker, gio-importer).

Their pins clash with segport's (protobuf 3.x, old requests), so each gets a venv of its own under `.venv/`,
installed with hashes from its lock file and rebuilt only when that file changes.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path


def client_python(lock: Path, venv: Path, *, what: str, no_deps: bool = False) -> Path:
    """The python of ``venv``, (re)built from ``lock`` when the lock file changed since it was made."""
    stamp = venv / ".lock-sha256"
    want = hashlib.sha256(lock.read_bytes()).hexdigest()
    python = venv / "bin" / "python"
    if not (stamp.is_file() and stamp.read_text() == want and python.exists()):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        install = [str(python), "-m", "pip", "install", "--quiet", *(["--no-deps"] if no_deps else [])]
        done = subprocess.run(
            [*install, "--require-hashes", "-r", str(lock)], capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"could not install {what} from {lock}:\n{done.stdout}\n{done.stderr}"
        stamp.write_text(want)
    return python
