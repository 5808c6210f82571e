"""Request and response models of the public API (wire names as GrowingIO spells them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from segport.errors import InvalidBody

MAX_LIST_ITEMS = 1000
MAX_STRING = 200

_BODY = "[A-Za-z_$][A-Za-z0-9_$]"
# a column key (segport.domain.keys.parse_key): at most 100 characters once ``ids_`` is written ``id_``
KEY_GRAMMAR = rf"((id|ids)_{_BODY}{{0,96}}|(usr|tag)_{_BODY}{{0,95}})"
# a key in a list of keys to export or show: the services strip spaces around it and drop ``gio_id``
LISTED_KEY_PATTERN = rf"^\s*({KEY_GRAMMAR}|gio_id)\s*$"


def _case_insensitive(data: Any, fields: dict[str, str]) -> Any:
    """Map body keys to their canonical spelling ignoring case (one doc copy writes ``fileformat``)."""
    if not isinstance(data, dict):
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        canonical = fields.get(str(key).lower(), key)
        if canonical in out:
            # our words, not pydantic's "Value error, ..." (a SegportError passes through model_validate)
            raise InvalidBody(f"field {canonical!r} is given twice in the body (field names are case-insensitive)")
        out[canonical] = value
    for name in ("fileFormat", "csvHeaderType", "compression"):
        if isinstance(out.get(name), str):
            out[name] = out[name].lower()
    return out


class ExportJobBody(BaseModel):
    """Body of an export submission. Every field is optional; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    properties: (
        list[Annotated[str, Field(max_length=MAX_STRING, json_schema_extra={"pattern": LISTED_KEY_PATTERN})]] | None
    ) = Field(
        None,
        max_length=MAX_LIST_ITEMS,
        description="Identities (`id_`/`ids_`), user properties (`usr_`) and tags (`tag_`) to export; at most 60.",
        examples=[["ids_$basic_userId", "usr_gender", "tag_rfm"]],
    )
    fileFormat: Literal["csv", "json"] | None = Field(None, description="`csv` (default) or `json` (JSON Lines).")
    csvHeaderType: Literal["key", "name"] | None = Field(
        None, description="CSV header: keys (`key`, default) or display names (`name`)."
    )
    bom: StrictBool = Field(
        False,
        description="segport extension: start a CSV file with a UTF-8 byte-order mark (Excel); `true` or `false`.",
    )
    compression: Literal["none", "gzip"] | None = Field(
        None, description="segport extension: `gzip` writes `.csv.gz` / `.json.gz`."
    )

    @model_validator(mode="before")
    @classmethod
    def _keys_ignore_case(cls, data: Any) -> Any:
        return _case_insensitive(data, {name.lower(): name for name in cls.model_fields})


class JobCreated(BaseModel):
    id: str = Field(description="Job id: 8 characters [A-Za-z0-9].", examples=["kqQeWeGr"])
    name: str = Field(description="Job name: DES-<yyyyMMddHHmm>-<digits>.", examples=["DES-202205240136-5818534160000"])


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class JobResult(BaseModel):
    """GrowingIO's ``stage`` and ``uris``, plus segport's extra fields (absent when not known)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"stage": "FINISH", "uris": ["%2Fjobs%2Fresults%2F..."]}]}
    )

    stage: Literal["NONE", "RUNNING", "FINISH", "ERROR"]
    uris: list[str]
    id: str | None = None
    name: str | None = None
    createdAt: str | None = None
    startedAt: str | None = None
    finishedAt: str | None = None
    expiresAt: str | None = None
    attempts: int | None = None
    rows: int | None = None
    bytes: int | None = None
    submitDataVersion: int | None = Field(
        None, description="The project's data version when the job was submitted (what deduplication compares)."
    )
    dataVersion: int | None = Field(
        None, description="The data version of the snapshot the file was read from (finished jobs)."
    )
    dataVersionAt: str | None = Field(None, description="When that snapshot was taken (the export began reading).")
    dataNote: str | None = Field(
        None, description="Present when the file holds newer data than the submit saw (a retry after a crash)."
    )
    error: ErrorDetail | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "Bad request",
        401: "Missing or invalid token",
        404: "Not found (or not visible to this token)",
        410: "Results expired",
        429: "Too many jobs",
    }.items()
}
