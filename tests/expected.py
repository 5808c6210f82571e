"""The file formats, written out independently of segport's engine, to compare downloads against."""

from __future__ import annotations

import json

from tests.conftest import USERS

MULTI_IDENTITIES = {"id_$anonymous_user"}  # string[] in tests.conftest.CATALOG_CSV


def members(users: list[dict[str, str | None]] = USERS) -> list[tuple[int, dict[str, str | None]]]:
    """Members of the test segment (not age >= 50), with the gio_id the first import assigns (file order)."""
    out = []
    for gio_id, user in enumerate(users, start=1):
        age = user.get("usr_age")
        if age is None or int(age) < 50:
            out.append((gio_id, user))
    return out


def _q(value: str | None) -> str:
    return "" if value is None else '"' + value.replace('"', '""') + '"'


def expected_csv(keys: list[str], header: list[str] | None = None, rows=None) -> bytes:
    rows = members() if rows is None else rows
    lines = [",".join(_q(h) for h in ["gio_id", *(header or keys)])]
    for gio_id, user in rows:
        lines.append(",".join([_q(str(gio_id)), *(_q(user.get(k)) for k in keys)]))
    return ("\n".join(lines) + "\n").encode()


def expected_jsonl(keys: list[str], rows=None) -> list[dict]:
    rows = members() if rows is None else rows
    out = []
    for gio_id, user in rows:
        line: dict = {"gio_id": str(gio_id)}
        if keys:
            line["identifications"] = {k: _identity(k, user.get(k)) for k in keys if k.startswith("id_")}
            line["properties"] = {k: user.get(k) for k in keys if not k.startswith("id_")}
        out.append(line)
    return out


def _identity(key: str, value: str | None) -> str | list[str] | None:
    """JSON Lines writes a multi-valued identity as a list of strings (CSV joins it with ``||``)."""
    if key not in MULTI_IDENTITIES or value is None:
        return value
    return value.split("||")


def parse_jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]
