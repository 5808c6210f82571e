"""Request and response models of the admin API (camelCase on the wire, like the public API)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from segport.domain.keys import CatalogEntry
from segport.store.meta import iso_ms, segment_rule
from segport.store.models import SegmentRow


class CatalogEntryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(
        ..., max_length=110, examples=["usr_gender"], description="`id_<identity>`, `usr_<key>` or `tag_<key>`."
    )
    name: str | None = Field(None, max_length=200, examples=["性别"], description="Display name (default: the key).")
    type: str = Field(
        "string", max_length=16, description="`string`, `int`, `double` or `date`; `[]` for multi-valued."
    )
    description: str = Field("", max_length=2000)


class CatalogPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200, description="New display name.")
    description: str | None = Field(None, max_length=2000, description="New description.")


class CatalogEntryOut(BaseModel):
    key: str
    kind: str
    name: str
    type: str
    description: str


class CatalogImportOut(BaseModel):
    added: int
    updated: int


class ImportOut(BaseModel):
    file: str | None = None
    rowsRead: int
    inserted: int
    updated: int
    elapsedSeconds: float
    segments: dict[str, int] = Field(default_factory=dict, description="DAILY segments recomputed: key → users.")


class SegmentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(..., max_length=100, examples=["seg_51activity"])
    name: str = Field(..., max_length=200, examples=["51活动用户"])
    description: str = Field("", max_length=2000)
    rule: Any = Field(
        ...,
        description="Rule tree: and/or/not, or a {key, op, value} leaf.",
        examples=[
            {"and": [{"key": "usr_gender", "op": "eq", "value": "男"}, {"key": "usr_age", "op": "gte", "value": 18}]}
        ],
    )
    scheduler: str | None = Field(None, pattern="^(DAILY|ONCE|daily|once)$", description="DAILY (default) or ONCE.")


class Detector(BaseModel):
    stage: str
    detectedAt: str | None
    totalUsers: int


class SegmentOut(BaseModel):
    key: str
    id: str
    name: str
    description: str
    createdBy: str
    scheduler: str
    rule: Any = None
    identity: str | None = None
    detector: Detector
    unmatchedIds: int | None = None
    error: str | None = None
    creator: str
    createdAt: str | None
    updatedAt: str | None


def catalog_out(e: CatalogEntry) -> CatalogEntryOut:
    return CatalogEntryOut(
        key=e.key,
        kind=e.kind.value,
        name=e.name,
        type=e.type.value + ("[]" if e.multi else ""),
        description=e.description,
    )


def segment_out(r: SegmentRow) -> SegmentOut:
    return SegmentOut(
        key=r.key,
        id=r.id,
        name=r.name,
        description=r.description,
        createdBy=r.created_by,
        scheduler=r.scheduler,
        rule=segment_rule(r),
        identity=r.identity,
        detector=Detector(stage=r.detector_stage, detectedAt=iso_ms(r.detected_at), totalUsers=r.total_users),
        unmatchedIds=r.unmatched if r.created_by == "FROM_FILES" else None,
        error=r.detector_error,
        creator=r.creator,
        createdAt=iso_ms(r.created_at),
        updatedAt=iso_ms(r.updated_at),
    )
