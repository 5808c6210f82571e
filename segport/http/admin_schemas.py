"""Request and response models of the admin API (camelCase on the wire, like the public API)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from segport.domain.keys import CatalogEntry
from segport.http.schemas import KEY_GRAMMAR
from segport.store.meta import iso_ms, segment_rule
from segport.store.models import SegmentRow

# Grammars the services check (segport.domain.keys, segport.domain.text, segport.store.meta), declared in the
# JSON schema only (json_schema_extra): the services' own checks and error codes stay what they are.
# a catalogue key as the admin API takes it: a column key, or an identity written bare (``$basic_userId``)
CATALOG_KEY_PATTERN = rf"^\s*(\$[A-Za-z0-9_$]{{0,96}}|{KEY_GRAMMAR})\s*$"
SEGMENT_KEY_PATTERN = "^[A-Za-z0-9_]{1,100}$"
_REFUSED = r"\u0000-\u001f\u007f-\u009f\u2028\u2029"  # control characters, line and paragraph separators
# a display name: not blank, none of the refused characters
DISPLAY_NAME_PATTERN = rf"^[^{_REFUSED}]*[^\s{_REFUSED}][^{_REFUSED}]*$"
# a description: tabs and line breaks allowed
DESCRIPTION_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u2028\u2029]*$"


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


_TYPES = ("string", "str", "varchar", "int", "integer", "long", "double", "float", "date")
TYPE_PATTERN = r"^(\s*(" + "|".join(_any_case(t) for t in _TYPES) + r")(\[\])?\s*)?$"  # empty: string

_SCALAR: dict[str, Any] = {"type": ["string", "number", "boolean"]}
_LEAF_KEY: dict[str, Any] = {"type": "string", "pattern": rf"^({KEY_GRAMMAR}|gio_id)$"}


def _leaf(ops: list[str], value: dict[str, Any] | None, key: dict[str, Any] = _LEAF_KEY) -> dict[str, Any]:
    properties: dict[str, Any] = {"key": key, "op": {"enum": ops}}
    properties["value"] = value if value is not None else {"type": "null"}
    return {
        "type": "object",
        "properties": properties,
        "required": ["key", "op"] + (["value"] if value is not None else []),
        "additionalProperties": False,
    }


_REF = {"$ref": "#/components/schemas/Rule"}
_EVENT_REF = {"$ref": "#/components/schemas/EventRule"}
RULE_FIELD: dict[str, Any] = {"anyOf": [_REF, {"type": "string"}]}


def _tree(ref: dict[str, Any], key: dict[str, Any]) -> list[dict[str, Any]]:
    """and/or/not of ``ref`` and the key/op/value leaves, their keys ``key``."""
    return [
        {
            "type": "object",
            "properties": {"and": {"type": "array", "items": ref, "minItems": 1}},
            "required": ["and"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"or": {"type": "array", "items": ref, "minItems": 1}},
            "required": ["or"],
            "additionalProperties": False,
        },
        {"type": "object", "properties": {"not": ref}, "required": ["not"], "additionalProperties": False},
        _leaf(["eq", "ne", "gt", "gte", "lt", "lte"], _SCALAR, key),
        _leaf(["in", "not_in"], {"type": "array", "items": _SCALAR, "minItems": 1, "maxItems": 10_000}, key),
        _leaf(["between"], {"type": "array", "items": _SCALAR, "minItems": 2, "maxItems": 2}, key),
        _leaf(["contains"], {"type": "string"}, key),
        _leaf(["is_null", "not_null"], None, key),
    ]


def _one(name: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {name: value}, "required": [name], "additionalProperties": False}


def _count(limit: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": limit}


# Event conditions (segport.domain.behaviour_parse, docs/behaviour.md): event names and attribute keys are the
# project's event catalogue's, and the limits are MAX_STEPS / MAX_DAYS there.
_EVENT_NAME: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z_$][A-Za-z0-9_$]{0,99}$"}
_ATTRIBUTE: dict[str, Any] = {
    "type": "string",
    "pattern": r"^([A-Za-z_][A-Za-z0-9_]{0,99}|\$[A-Za-z][A-Za-z0-9_]{0,99})$",
}
_WHERE: dict[str, Any] = {"anyOf": [_EVENT_REF, {"type": "null"}]}
_BOUND: dict[str, Any] = {"type": "string", "maxLength": 40, "examples": ["2026-05-01", "2026-05-01T08:00:00+08:00"]}
_TIME: dict[str, Any] = {
    "description": "A time window, resolved at each computation in the project's time zone.",
    "oneOf": [
        _one("last_days", _count(3660)),
        _one("last_hours", _count(3660 * 24)),
        _one("between", {"type": "array", "items": _BOUND, "minItems": 2, "maxItems": 2}),
        _one("since", _BOUND),
    ],
}
_DURATION: dict[str, Any] = {
    "oneOf": [_one("minutes", _count(3660 * 1440)), _one("hours", _count(3660 * 24)), _one("days", _count(3660))]
}
_MEASURE: dict[str, Any] = {
    "oneOf": [{"enum": ["count", "distinct_days"]}]
    + [_one(m, _ATTRIBUTE) for m in ("sum", "avg", "min", "max", "distinct")]
}
_NUMBER: dict[str, Any] = {"type": "number"}
_STEP: dict[str, Any] = {
    "type": "object",
    "properties": {"event": _EVENT_NAME, "where": _WHERE},
    "required": ["event"],
    "additionalProperties": False,
}
EVENT_CONDITIONS: list[dict[str, Any]] = [
    {
        "title": "EventCondition",
        "type": "object",
        "properties": {
            "event": _EVENT_NAME,
            "where": _WHERE,
            "measure": _MEASURE,
            "op": {"enum": ["eq", "ne", "gt", "gte", "lt", "lte", "between"]},
            "value": {"oneOf": [_NUMBER, {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2}]},
            "time": _TIME,
        },
        "required": ["event"],
        "additionalProperties": False,
    },
    {
        "title": "SequenceCondition",
        "type": "object",
        "properties": {
            "sequence": {"type": "array", "items": _STEP, "minItems": 2, "maxItems": 10},
            "time": _TIME,
            "max_gap": _DURATION,
        },
        "required": ["sequence"],
        "additionalProperties": False,
    },
    {
        "title": "DropOffCondition",
        "type": "object",
        "properties": {
            "event": _EVENT_NAME,
            "where": _WHERE,
            "time": _TIME,
            "not_followed_by": {
                "type": "object",
                "properties": {"event": _EVENT_NAME, "where": _WHERE, "within": _DURATION},
                "required": ["event", "within"],
                "additionalProperties": False,
            },
        },
        "required": ["event", "not_followed_by"],
        "additionalProperties": False,
    },
]
# The rule tree as JSON (segport.domain.rules): its keys and their types are the project's catalogue's.
RULE_SCHEMA: dict[str, Any] = {
    "title": "Rule",
    "description": "and/or/not of rules, a {key, op, value} leaf, or an event condition (docs/behaviour.md); at "
    "most 32 levels and 1000 objects.",
    "oneOf": _tree(_REF, _LEAF_KEY) + EVENT_CONDITIONS,
}
# A step's `where`: a property rule over the event's attributes and standard fields ($path ...).
EVENT_RULE_SCHEMA: dict[str, Any] = {
    "title": "EventRule",
    "description": "and/or/not of rules, or a {key, op, value} leaf whose key is an event attribute or a standard "
    "field ($path ...).",
    "oneOf": _tree(_EVENT_REF, _ATTRIBUTE),
}


class CatalogEntryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(
        ...,
        max_length=110,
        examples=["usr_gender"],
        description="`id_<identity>` (or the bare `$<identity>`), `usr_<key>` or `tag_<key>`.",
        json_schema_extra={"pattern": CATALOG_KEY_PATTERN},
    )
    name: str | None = Field(
        None,
        max_length=200,
        examples=["性别"],
        description="Display name (default: the key).",
        json_schema_extra={"pattern": f"^$|{DISPLAY_NAME_PATTERN}"},
    )
    type: str = Field(
        "string",
        max_length=16,
        description="`string`, `int`, `double` or `date` (any case; `str`, `varchar`, `integer`, `long`, "
        "`float` too); `[]` for multi-valued. An identity is a `string`.",
        json_schema_extra={"pattern": TYPE_PATTERN},
    )
    description: str = Field("", max_length=2000, json_schema_extra={"pattern": DESCRIPTION_PATTERN})


class CatalogPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        None, max_length=200, description="New display name.", json_schema_extra={"pattern": DISPLAY_NAME_PATTERN}
    )
    description: str | None = Field(
        None, max_length=2000, description="New description.", json_schema_extra={"pattern": DESCRIPTION_PATTERN}
    )


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

    key: str = Field(
        ..., max_length=100, examples=["seg_51activity"], json_schema_extra={"pattern": SEGMENT_KEY_PATTERN}
    )
    name: str = Field(..., max_length=200, examples=["51活动用户"], json_schema_extra={"pattern": DISPLAY_NAME_PATTERN})
    description: str = Field("", max_length=2000, json_schema_extra={"pattern": DESCRIPTION_PATTERN})
    rule: Any = Field(
        ...,
        description="Rule tree: and/or/not, or a {key, op, value} leaf (the `Rule` schema), or that JSON as a string.",
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
