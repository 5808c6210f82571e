"""Event files: the columns of an event file, the grammar of event names and attribute keys, and the attribute
catalogue's entries.

An event file (``segport events import``) and the spool's batches (turned into the same rows by the loader)
have these columns:

* ``event``: the event name (:data:`EVENT_NAME_RE`);
* ``time``: ISO 8601 with an offset (``2026-05-01T10:00:00+08:00``, ``…Z``), or milliseconds since the epoch;
* an identity: ``userId`` (with an optional ``userKey``: absent or empty means ``$basic_userId``), or
  ``deviceId`` (``$anonymous_user``), or ``gio_id`` (a user segport already knows);
* ``$``-prefixed standard fields (``$type``, ``$path``, ``$domain``, …), stored as text;
* every other column is an event attribute of that name (:data:`ATTRIBUTE_KEY_RE`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from segport.domain.keys import ValueType
from segport.errors import InvalidKey

EVENT_COLUMN, TIME_COLUMN = "event", "time"
USER_ID, USER_KEY, DEVICE_ID, GIO_ID_COLUMN = "userId", "userKey", "deviceId", "gio_id"
RESERVED_COLUMNS = (EVENT_COLUMN, TIME_COLUMN, USER_ID, USER_KEY, DEVICE_ID, GIO_ID_COLUMN)
BATCH_COLUMN = "$batch"  # the spool batch a row came from (the loader's rows only)
TYPE_COLUMN = "$type"
DEFAULT_TYPE = "CUSTOM"
LOGIN_IDENTITY, DEVICE_IDENTITY = "$basic_userId", "$anonymous_user"

MAX_NAME_LEN = 100
EVENT_NAME_RE = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]{0,99}$")
ATTRIBUTE_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
STANDARD_RE = re.compile(r"^\$[A-Za-z][A-Za-z0-9_]{0,99}$")
USER_KEY_RE = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]{0,99}$")
MIN_TIME_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: earlier times are refused


@dataclass(frozen=True, slots=True)
class EventAttribute:
    """One key of a project's event attribute catalogue: its stored type decides how values are kept."""

    key: str
    name: str
    type: ValueType = ValueType.STRING
    description: str = ""


def check_attribute_key(key: str) -> str:
    """``key`` if it is a valid event attribute key, else :class:`InvalidKey`."""
    if not ATTRIBUTE_KEY_RE.match(key) or key in RESERVED_COLUMNS:
        raise InvalidKey(
            f"invalid event attribute key {key[:40]!r}: letters, digits and '_', not starting with a digit, at "
            f"most {MAX_NAME_LEN} characters, and none of {', '.join(RESERVED_COLUMNS)}"
        )
    return key


def identity_of_user_key(user_key: str | None) -> str:
    """The identity a ``userKey`` names (none: the login id ``$basic_userId``)."""
    return user_key if user_key else LOGIN_IDENTITY
