"""What the API family tests share: addresses, the documented field sets, and the expected members
computed from ``conftest.USERS`` independently of segport."""

from __future__ import annotations

import re

from tests.conftest import OTHER_PROJECT, PROJECT, SEGMENT, USERS
from tests.expected import members

P = f"/v1/api/projects/{PROJECT}"
OTHER = f"/v1/api/projects/{OTHER_PROJECT}"
SEGMENTS = f"{P}/segment_profiles"
SEG_USERS = f"{SEGMENTS}/{SEGMENT}/users"
TAGS = f"{P}/user_tags"
TAG_USERS = f"{TAGS}/tag_rfm/users"

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
SEGMENT_FIELDS = {
    "id",
    "name",
    "key",
    "createdBy",
    "description",
    "scheduler",
    "detector",
    "creatorId",
    "creator",
    "createdAt",
    "updaterId",
    "updater",
    "updatedAt",
}
TAG_FIELDS = SEGMENT_FIELDS | {"type", "valueType"}
ENVELOPE_FIELDS = {"limit", "offset", "totalCount", "hasNextPage", "hasPreviousPage", "values"}
IDENTITIES = ("id_$basic_userId", "id_$anonymous_user")


def segment_members() -> list[int]:
    """gio_ids of the test segment (everyone but the user aged >= 50)."""
    return [gio_id for gio_id, _ in members()]


def tag_members(key: str = "tag_rfm") -> list[tuple[int, dict[str, str | None]]]:
    """(gio_id, user) of the users holding a value for a tag, by gio_id."""
    return [(i, u) for i, u in enumerate(USERS, start=1) if u.get(key) is not None]


def user_of(gio_id: int) -> dict[str, str | None]:
    return USERS[gio_id - 1]


def api_value(key: str, user: dict[str, str | None]) -> object:
    """A value as the family's JSON shows it: identities as lists (split on ``||``), the rest strings."""
    raw = user.get(key)
    if key.startswith("id_"):
        return None if raw is None else raw.split("||")
    return raw
