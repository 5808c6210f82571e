"""What an export asks for, normalised and checked against the catalogue."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from enum import StrEnum

from segport.domain.keys import GIO_ID, Catalog, CatalogEntry, KeyKind, canonical_key
from segport.errors import InvalidParameter, TooManyProperties, UnknownKey

# excel_safe: a cell that starts with one of OWASP's formula characters (= + - @ TAB CR) gets a leading quote.
# One regular expression (RE2 and Python read it alike) for the engines' SQL and for the CSV header.
EXCEL_FORMULA_START = r"^[=+\-@\t\r]"


def excel_safe_text(text: str) -> str:
    """``text`` as an ``excel_safe`` export writes a string cell: prefixed with a quote if it could start a formula."""
    return "'" + text if re.match(EXCEL_FORMULA_START, text) else text


class FileFormat(StrEnum):
    CSV = "csv"
    JSON = "json"


class HeaderType(StrEnum):
    KEY = "key"
    NAME = "name"


class Compression(StrEnum):
    NONE = "none"
    GZIP = "gzip"


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """A normalised export request: canonical keys in request order, duplicates dropped."""

    properties: tuple[str, ...] = ()
    file_format: FileFormat = FileFormat.CSV
    header: HeaderType = HeaderType.KEY
    bom: bool = False
    compression: Compression = Compression.NONE

    @property
    def extension(self) -> str:
        ext = self.file_format.value
        return ext + ".gz" if self.compression is Compression.GZIP else ext

    def to_json(self) -> str:
        data = asdict(self)
        data["properties"] = list(self.properties)
        return json.dumps(data, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> ExportSpec:
        data = json.loads(text)
        return cls(
            properties=tuple(data["properties"]),
            file_format=FileFormat(data["file_format"]),
            header=HeaderType(data["header"]),
            bom=bool(data.get("bom", False)),
            compression=Compression(data.get("compression", "none")),
        )

    def fingerprint(self, *parts: str) -> str:
        """Stable hash of the request and the given context (project, target, data version)."""
        digest = hashlib.sha256()
        for part in (*parts, self.to_json()):
            digest.update(part.encode())
            digest.update(b"\0")
        return digest.hexdigest()


def build_spec(
    properties: list[str] | None,
    file_format: str | None,
    header: str | None,
    catalog: Catalog,
    max_properties: int,
    *,
    bom: bool = False,
    compression: str | None = None,
) -> ExportSpec:
    """Check a request against the limits and the catalogue and return its normalised form."""
    raw = list(properties or [])
    for item in raw:
        if not isinstance(item, str):
            raise InvalidParameter(f"properties must be strings, got {item!r}")
    # counted as exported: duplicates (``ids_x`` is ``id_x``) and ``gio_id`` are dropped first
    distinct = {canonical_key(item.strip()) for item in raw} - {GIO_ID}
    if len(distinct) > max_properties:
        raise TooManyProperties(
            f"properties lists {len(distinct)} distinct keys; at most {max_properties} may be exported at once"
        )
    try:
        fmt = FileFormat((file_format or "csv").lower())
    except ValueError:
        raise InvalidParameter(f"fileFormat must be 'csv' or 'json', not {file_format!r}") from None
    try:
        hdr = HeaderType((header or "key").lower())
    except ValueError:
        raise InvalidParameter(f"csvHeaderType must be 'key' or 'name', not {header!r}") from None
    try:
        comp = Compression((compression or "none").lower())
    except ValueError:
        raise InvalidParameter(f"compression must be 'gzip' or 'none', not {compression!r}") from None

    keys: list[str] = []
    unknown: list[str] = []
    for item in raw:
        key = canonical_key(item.strip())
        if key == GIO_ID or key in keys:
            continue
        if key not in catalog:
            unknown.append(item)
            continue
        keys.append(key)
    if unknown:
        shown = ", ".join(repr(k) for k in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise UnknownKey(f"unknown keys for this project: {shown}{more}")
    return ExportSpec(tuple(keys), fmt, hdr, bom, comp)


def columns_of(spec: ExportSpec, catalog: Catalog) -> list[CatalogEntry]:
    """The catalogue entries of a spec's keys, in request order."""
    out = []
    for key in spec.properties:
        entry = catalog.get(key)
        if entry is None:
            raise UnknownKey(f"key {key!r} is no longer in the catalogue")
        out.append(entry)
    return out


def split_columns(entries: list[CatalogEntry]) -> tuple[list[CatalogEntry], list[CatalogEntry]]:
    """(identities, properties-and-tags), each in request order: the two objects of a JSON line."""
    ids = [e for e in entries if e.kind is KeyKind.IDENTITY]
    props = [e for e in entries if e.kind is not KeyKind.IDENTITY]
    return ids, props


def column_headers(columns: list[CatalogEntry], header: HeaderType, *, excel_safe: bool = False) -> list[str]:
    """CSV column headers after ``gio_id``, the same in every engine: keys, or display names where those that
    collide (with each other or ``gio_id``, case-insensitively) get their key appended. With ``excel_safe``
    a display name is prefixed as a string cell is (before the collision check, so ``=a`` and ``'=a`` collide);
    a key never starts with a formula character."""
    if header is HeaderType.KEY:
        return [c.key for c in columns]
    names = [c.name or c.key for c in columns]
    if excel_safe:
        names = [excel_safe_text(n) for n in names]
    seen: dict[str, int] = {}
    for n in [GIO_ID, *names]:
        seen[n.lower()] = seen.get(n.lower(), 0) + 1
    return [n if seen[n.lower()] == 1 else f"{n} ({c.key})" for n, c in zip(names, columns, strict=True)]
