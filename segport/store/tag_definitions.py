"""Computed tags in the metadata store: a tag's definition and its detector, kept beside the catalogue's ``tag_``
entry of the same key (its display name and value type live there, as for an imported tag). The row is
removed with its catalogue entry (a foreign key, ``ON DELETE CASCADE``)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from segport.errors import AlreadyExists, TagNotFound
from segport.store.db import Database
from segport.store.models import TagDefinitionRow


class TagStore:
    def __init__(self, meta: Any) -> None:
        self.db: Database = meta if isinstance(meta, Database) else meta.db

    def add(self, row: TagDefinitionRow) -> TagDefinitionRow:
        try:
            with self.db.write() as s:
                if s.get(TagDefinitionRow, (row.project_id, row.key)) is not None:
                    raise AlreadyExists(f"tag {row.key!r} already exists in project {row.project_id}")
                s.add(row)
        except IntegrityError:  # PostgreSQL: a concurrent writer, or the catalogue entry went meanwhile
            raise AlreadyExists(f"tag {row.key!r} already exists in project {row.project_id}") from None
        return row

    def find(self, project_id: str, key: str) -> TagDefinitionRow | None:
        with self.db.read() as s:
            return s.get(TagDefinitionRow, (project_id, key))

    def get(self, project_id: str, key: str) -> TagDefinitionRow:
        row = self.find(project_id, key)
        if row is None:
            raise TagNotFound(f"computed tag {key!r} not found in project {project_id}")
        return row

    def all(self, project_id: str) -> list[TagDefinitionRow]:
        """The project's computed tags, oldest first (the order the DAILY recompute follows)."""
        with self.db.read() as s:
            return list(
                s.scalars(
                    select(TagDefinitionRow)
                    .where(TagDefinitionRow.project_id == project_id)
                    .order_by(TagDefinitionRow.created_at, TagDefinitionRow.key)
                )
            )

    def update(self, project_id: str, key: str, **fields: Any) -> TagDefinitionRow:
        with self.db.write() as s:
            row = s.get(TagDefinitionRow, (project_id, key))
            if row is None:
                raise TagNotFound(f"computed tag {key!r} not found in project {project_id}")
            for name, value in fields.items():
                setattr(row, name, value)
        return row

    def start_compute(self, project_id: str, key: str, allowed: tuple[str, ...]) -> str | None:
        """Set the detector to RUNNING if its stage is one of ``allowed``, in one write transaction; ``None``
        when it was set, else the stage that prevented it (two recomputes cannot both start)."""
        with self.db.write() as s:
            row = s.get(TagDefinitionRow, (project_id, key))
            if row is None:
                raise TagNotFound(f"computed tag {key!r} not found in project {project_id}")
            if row.detector_stage not in allowed:
                return row.detector_stage
            row.detector_stage = "RUNNING"
        return None

    def layered_on(self, project_id: str, key: str) -> list[str]:
        """The computed tags that read tag ``key`` (HORIZONTAL tags layered on it)."""
        out = []
        for row in self.all(project_id):
            if row.type == "HORIZONTAL":
                source = json.loads(row.definition).get("source")
                if isinstance(source, str) and key in (source, f"tag_{source}"):
                    out.append(row.key)
        return out

    def delete(self, project_id: str, key: str) -> None:
        with self.db.write() as s:
            row = s.get(TagDefinitionRow, (project_id, key))
            if row is not None:
                s.delete(row)
