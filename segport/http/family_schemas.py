"""Response models of the API family (wire names as GrowingIO spells them), and their builders."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from segport.domain.keys import Catalog, CatalogEntry, KeyKind
from segport.services.queries import TagInfo, UserPage
from segport.store.meta import iso_ms
from segport.store.models import SegmentRow

T = TypeVar("T")
Stage = Literal["NONE", "RUNNING", "FINISH", "ERROR"]


class Page(BaseModel, Generic[T]):
    """GrowingIO's paged envelope; ``totalCount`` is the total number of items, not the page's size."""

    limit: int
    offset: int
    totalCount: int
    hasNextPage: bool
    hasPreviousPage: bool
    values: list[T]


class Detector(BaseModel):
    stage: Stage
    detectedAt: str | None = Field(description="ISO-8601 UTC with milliseconds; null if never computed.")
    totalUsers: int


class SegmentValue(BaseModel):
    id: str = Field(examples=["aB3dE6gH"])
    name: str
    key: str = Field(examples=["seg_51activity"])
    createdBy: Literal["DIRECT", "FROM_FUNNEL", "FROM_RETENTION", "FROM_FREQUENCY", "FROM_FILES"]
    description: str
    scheduler: Literal["DAILY", "ONCE", "AUTO"]
    detector: Detector
    creatorId: str
    creator: str
    createdAt: str | None
    updaterId: str
    updater: str
    updatedAt: str | None


class ValueTypeModel(BaseModel):
    type: Literal["STRING", "INT", "DOUBLE", "DATE"]
    isArray: bool


class TagValue(SegmentValue):
    type: Literal["AGGREGATED", "TOP_N_ATTRIBUTE", "ATTRIBUTION_ATTRIBUTE", "DATA_SET_ATTRIBUTE", "HORIZONTAL", "SQL"]
    valueType: ValueTypeModel


class UserValue(BaseModel):
    """A user in a page (E2/E7) or a lookup (E10/E11): identities as lists, everything else strings."""

    gioId: str = Field(examples=["603542"])
    identifications: dict[str, list[str] | None] = Field(examples=[{"id_$basic_userId": ["C001"]}])
    properties: dict[str, str | None] = Field(examples=[{"usr_gender": "男", "tag_rfm": None}])


class ComputeAnswer(BaseModel):
    value: bool
    message: str


UNKNOWN_USER = UserValue(gioId="0", identifications={}, properties={})


def segment_value(row: SegmentRow) -> SegmentValue:
    return SegmentValue(
        id=row.id,
        name=row.name,
        key=row.key,
        createdBy=row.created_by,  # type: ignore[arg-type]
        description=row.description or "",
        scheduler=row.scheduler,  # type: ignore[arg-type]
        detector=Detector(
            stage=row.detector_stage,
            detectedAt=iso_ms(row.detected_at),  # type: ignore[arg-type]
            totalUsers=row.total_users or 0,
        ),
        creatorId=row.creator_id or "",
        creator=row.creator or "",
        createdAt=iso_ms(row.created_at),
        updaterId=row.updater_id or "",
        updater=row.updater or "",
        updatedAt=iso_ms(row.updated_at),
    )


def tag_value(tag: TagInfo) -> TagValue:
    """A catalogue tag as GrowingIO lists tags. A tag loaded with the profiles is a ``DATA_SET_ATTRIBUTE`` tag
    ``FROM_FILES``, always computed (``FINISH``, counted at request time); a tag computed from events has its
    definition's type (``AGGREGATED`` …), ``DIRECT``, its scheduler and its detector (its members counted at
    request time too)."""
    e = tag.entry
    row = tag.computed
    detector = Detector(stage="FINISH", detectedAt=iso_ms(tag.detected_at), totalUsers=tag.total_users)
    if row is not None:
        detector = Detector(
            stage=row.detector_stage,  # type: ignore[arg-type]
            detectedAt=iso_ms(row.detected_at),
            totalUsers=tag.total_users,
        )
    return TagValue(
        id=tag.id,
        name=e.name or e.key,
        key=e.key,
        createdBy="FROM_FILES" if row is None else "DIRECT",
        description=e.description,
        scheduler="DAILY" if row is None else row.scheduler,  # type: ignore[arg-type]
        detector=detector,
        creatorId="",
        creator="" if row is None else row.creator,
        createdAt=iso_ms(tag.created_at),
        updaterId="",
        updater="",
        updatedAt=iso_ms(tag.updated_at),
        type="DATA_SET_ATTRIBUTE" if row is None else row.type,  # type: ignore[arg-type]
        valueType=ValueTypeModel(type=e.type.value.upper(), isArray=e.multi),  # type: ignore[arg-type]
    )


def page_users(result: UserPage) -> list[UserValue]:
    """Rows of a members page split into identities (``id_<key>``, lists) and properties/tags (strings)."""
    out = []
    for row in result.page.rows:
        out.append(
            UserValue(
                gioId=row["gio_id"],
                identifications={c.key: row[c.key] for c in result.columns if c.kind is KeyKind.IDENTITY},
                properties={c.key: row[c.key] for c in result.columns if c.kind is not KeyKind.IDENTITY},
            )
        )
    return out


def looked_up_user(catalog: Catalog, row: dict | None) -> UserValue:
    """A lookup answer: every identity as ``ids_<key>``, every property and tag; unknown user = gioId "0"."""
    if row is None:
        return UNKNOWN_USER
    entries: list[CatalogEntry] = list(catalog.entries.values())
    return UserValue(
        gioId=row["gio_id"],
        identifications={f"ids_{e.identity}": row[e.key] for e in entries if e.kind is KeyKind.IDENTITY},
        properties={e.key: row[e.key] for e in entries if e.kind is not KeyKind.IDENTITY},
    )
