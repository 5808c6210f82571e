"""The event catalogue in the metadata store: attribute keys (key, display name, type) and the event names a
project's store holds with the attribute keys their events carried (what GrowingIO's metadata endpoints list).

An attribute is declared (``segport events keys add``, the admin API) or recorded the first time a load meets
it, with the type the load stored it as (``declared`` false). Its type never changes once values are stored
under it: the event store's column has that type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from segport.domain.event_files import EventAttribute
from segport.domain.keys import ValueType
from segport.store.db import Database
from segport.store.models import EventAttributeRow, EventNameRow, utcnow


@dataclass(frozen=True, slots=True)
class EventName:
    key: str
    name: str
    description: str
    attrs: list[str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AttributeInfo:
    attribute: EventAttribute
    declared: bool
    created_at: datetime
    updated_at: datetime


class EventCatalog:
    def __init__(self, meta: Any) -> None:
        self.db: Database = meta if isinstance(meta, Database) else meta.db

    def attributes(self, project_id: str) -> list[EventAttribute]:
        return [a.attribute for a in self.attribute_rows(project_id)]

    def attribute_rows(self, project_id: str) -> list[AttributeInfo]:
        with self.db.read() as s:
            rows = s.scalars(
                select(EventAttributeRow)
                .where(EventAttributeRow.project_id == project_id)
                .order_by(EventAttributeRow.key)
            ).all()
        return [
            AttributeInfo(
                EventAttribute(r.key, r.name, ValueType(r.type), r.description), r.declared, r.created_at, r.updated_at
            )
            for r in rows
        ]

    def declare(self, project_id: str, attributes: list[EventAttribute]) -> tuple[int, int]:
        """Add or update declared keys (the caller checked that no stored type changes); (added, updated)."""
        added = updated = 0
        now = utcnow()
        with self.db.write() as s:
            for a in attributes:
                row = s.get(EventAttributeRow, (project_id, a.key))
                if row is None:
                    s.add(
                        EventAttributeRow(
                            project_id=project_id,
                            key=a.key,
                            name=a.name,
                            type=a.type.value,
                            description=a.description,
                            declared=True,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                    added += 1
                else:
                    row.name, row.type, row.description, row.declared, row.updated_at = (
                        a.name,
                        a.type.value,
                        a.description,
                        True,
                        now,
                    )
                    updated += 1
        return added, updated

    def record(self, project_id: str, seen: list[EventAttribute], events: dict[str, list[str]]) -> None:
        """What a load met: attribute keys recorded with their stored type (a declared key is left alone), and
        event names with the union of the attribute keys their events carried."""
        now = utcnow()
        with self.db.write() as s:
            for a in seen:
                if s.get(EventAttributeRow, (project_id, a.key)) is None:
                    s.add(
                        EventAttributeRow(
                            project_id=project_id,
                            key=a.key,
                            name=a.name,
                            type=a.type.value,
                            description="",
                            declared=False,
                            created_at=now,
                            updated_at=now,
                        )
                    )
            for key, attrs in events.items():
                row = s.get(EventNameRow, (project_id, key))
                if row is None:
                    s.add(
                        EventNameRow(
                            project_id=project_id,
                            key=key,
                            name=key,
                            description="",
                            attrs=json.dumps(sorted(set(attrs))),
                            created_at=now,
                            updated_at=now,
                        )
                    )
                else:
                    have = set(json.loads(row.attrs))
                    if not set(attrs) <= have:
                        row.attrs, row.updated_at = json.dumps(sorted(have | set(attrs))), now

    def names(self, project_id: str) -> list[EventName]:
        with self.db.read() as s:
            rows = s.scalars(
                select(EventNameRow).where(EventNameRow.project_id == project_id).order_by(EventNameRow.key)
            ).all()
        return [EventName(r.key, r.name, r.description, json.loads(r.attrs), r.created_at, r.updated_at) for r in rows]
