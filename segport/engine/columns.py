"""The users table's columns against the catalogue, for any engine: one column per key, of the key's type.

The catalogue (metadata store) and the columns (the engine) live in two databases, so a change to both is two
commits; :func:`column_steps` plans what closes any gap between them: add what is missing, replace a column of
the wrong type or case, and (at start-up, when nothing else runs) drop columns no key owns. Each backend applies
the steps in its own SQL (:mod:`segport.engine.duckdb.schema`, :mod:`segport.engine.clickhouse.engine`).
"""

from __future__ import annotations

from dataclasses import dataclass

from segport.domain.keys import GIO_ID

Columns = dict[str, str]  # column name -> the engine's type name


@dataclass(frozen=True, slots=True)
class Step:
    """One ``ALTER TABLE``: drop ``column``, or add it of type ``kind``; ``note`` is the log line, if any."""

    drop: bool
    column: str
    kind: str = ""
    note: str = ""


def column_steps(have: Columns, want: Columns, *, prune: bool) -> list[Step]:
    """What turns the columns ``have`` into ``want`` (key -> type, without ``gio_id``), for any engine: add
    the missing keys, replace a column of another type or case (drop + add: its values are not this key's),
    and with ``prune`` drop the columns no key owns."""
    folded = {name.lower(): name for name in have}
    steps: list[Step] = []
    for key, kind in want.items():
        current = folded.pop(key.lower(), None)
        if current == key and have[current] == kind:
            continue
        if current is not None:  # a column of another life of this key
            steps.append(Step(True, current, note=f"replaced column {current} ({have[current]})"))
        steps.append(Step(False, key, kind, "" if current is not None else f"added column {key}"))
    folded.pop(GIO_ID, None)
    if prune:
        steps += [Step(True, name, note=f"dropped column {name} (no catalogue key)") for name in folded.values()]
    return steps
