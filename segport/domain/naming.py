"""Job ids, job names, result file names and uris, exactly as GrowingIO writes them."""

from __future__ import annotations

import re
import secrets
import string
from datetime import datetime
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

from segport.domain.jobs import TargetKind

_ALPHABET = string.ascii_letters + string.digits
RESULT_PREFIX = "/jobs/results/"
JOB_NAME_RE = re.compile(r"^DE[ST]-\d{12}-\d{1,24}$")
JOB_ID_RE = re.compile(r"^[A-Za-z0-9]{8}$")
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
# file names are at most 255 bytes (NAME_MAX), and a Chinese character takes 3: 150 bytes leave room for
# "_yyyy-MM-dd_UserList_<part>.json.gz" and a temporary suffix
MAX_STEM_BYTES = 150


def new_job_id() -> str:
    """Eight random characters ``[A-Za-z0-9]``, like ``kqQeWeGr``."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(8))


def new_job_name(kind: TargetKind, now: datetime, tz: str) -> str:
    """``DES-<yyyyMMddHHmm>-<seconds of day><milliseconds><6 random digits>`` in the project's timezone.

    GrowingIO's sample ``DES-202205240136-5818534160000`` reads: 01:36:58 is second 5818 of the day,
    534 ms, then more digits; ours are random so that two jobs in one millisecond differ.
    """
    local = now.astimezone(ZoneInfo(tz))
    seconds = local.hour * 3600 + local.minute * 60 + local.second
    millis = local.microsecond // 1000
    tail = "".join(secrets.choice(string.digits) for _ in range(6))
    return f"{kind.name_prefix}-{local:%Y%m%d%H%M}-{seconds}{millis:03d}{tail}"


def safe_file_stem(name: str) -> str:
    """A display name made safe as one path component: separators and control characters become ``_``, and
    at most ``MAX_STEM_BYTES`` of UTF-8 (cut between characters) so the file name fits the file system."""
    cleaned = _UNSAFE.sub("_", name).strip().strip(".")
    cleaned = cleaned.encode()[:MAX_STEM_BYTES].decode("utf-8", "ignore").rstrip().rstrip(".")
    return cleaned or "segment"


def result_file_names(target_name: str, day: str, extension: str, parts: int) -> list[str]:
    """``{name}_{yyyy-MM-dd}_UserList.{ext}``; with several parts ``..._UserList_1.{ext}``, ``_2``..."""
    stem = f"{safe_file_stem(target_name)}_{day}_UserList"
    if parts <= 1:
        return [f"{stem}.{extension}"]
    return [f"{stem}_{i}.{extension}" for i in range(1, parts + 1)]


def result_uri(job_name: str, file_name: str) -> str:
    """The seed's uri: the whole result path percent-encoded, ``/`` included."""
    return quote(f"{RESULT_PREFIX}{job_name}/{file_name}", safe="")


def parse_result_path(file_param: str) -> tuple[str, str] | None:
    """Split a ``/download?file=`` value into (job name, file name), or ``None`` if it is not one.

    Accepts the decoded path (what a server sees after one round of query decoding) or a still-encoded
    uri. Nothing here touches the filesystem: the caller resolves the job by name and compares the file
    name to the job's own list.
    """
    path = file_param
    if not path.startswith(RESULT_PREFIX) and path.upper().startswith("%2F"):
        path = unquote(path)
    if not path.startswith(RESULT_PREFIX):
        return None
    rest = path[len(RESULT_PREFIX) :]
    job_name, sep, file_name = rest.partition("/")
    if not sep or not JOB_NAME_RE.match(job_name) or not file_name or "/" in file_name:
        return None
    return job_name, file_name
