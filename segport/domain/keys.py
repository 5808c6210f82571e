"""Keys and the catalogue: what may be exported and how it is named.

Three kinds of key, told apart by their prefix (GrowingIO's own convention):

* ``id_<identity>``  an identity such as ``id_$basic_userId`` (``ids_`` is accepted as the same key),
* ``usr_<key>``      a user property such as ``usr_gender``,
* ``tag_<key>``      a tag such as ``tag_rfm``.

``gio_id`` is the system's own user number and is always the first column of an export.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from segport.errors import InvalidKey

GIO_ID = "gio_id"
MAX_KEY_LEN = 100

_BODY = r"[A-Za-z_$][A-Za-z0-9_$]*"
KEY_RE = re.compile(rf"^(id|usr|tag)_({_BODY})$")
IDENTITY_RE = re.compile(rf"^{_BODY}$")


class KeyKind(StrEnum):
    IDENTITY = "identity"
    PROPERTY = "property"
    TAG = "tag"


_PREFIX_KIND = {"id": KeyKind.IDENTITY, "usr": KeyKind.PROPERTY, "tag": KeyKind.TAG}


class ValueType(StrEnum):
    STRING = "string"
    INT = "int"
    DOUBLE = "double"
    DATE = "date"

    @property
    def sql(self) -> str:
        return {"string": "VARCHAR", "int": "BIGINT", "double": "DOUBLE", "date": "DATE"}[self.value]


def canonical_key(raw: str) -> str:
    """``ids_$basic_userId`` -> ``id_$basic_userId``; other keys unchanged. No validation."""
    if raw.startswith("ids_"):
        return "id_" + raw[4:]
    return raw


def parse_key(raw: str) -> tuple[KeyKind, str]:
    """Validate a column key's grammar and return its kind and canonical spelling."""
    key = canonical_key(raw.strip())
    if len(key) > MAX_KEY_LEN:
        raise InvalidKey(f"key is longer than {MAX_KEY_LEN} characters: {key[:40]!r}...")
    m = KEY_RE.match(key)
    if not m:
        raise InvalidKey(
            f"invalid key {raw!r}: expected id_<identity>, usr_<key> or tag_<key> "
            "(letters, digits, '_' and '$', not starting with a digit)"
        )
    return _PREFIX_KIND[m.group(1)], key


def identity_column(identity: str) -> str:
    """``$basic_userId`` -> ``id_$basic_userId`` (accepts the column form too, and surrounding blanks)."""
    identity = identity.strip()
    if identity.startswith(("id_", "ids_")):
        kind, key = parse_key(identity)
        if kind is KeyKind.IDENTITY:
            return key
    if not IDENTITY_RE.match(identity):
        raise InvalidKey(f"invalid identity key {identity!r}")
    return "id_" + identity


def quote_ident(key: str) -> str:
    """SQL identifier for a validated key (the grammar admits no quote characters)."""
    assert '"' not in key
    return f'"{key}"'


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One exportable key of a project."""

    key: str
    kind: KeyKind
    name: str
    type: ValueType = ValueType.STRING
    multi: bool = False
    description: str = ""

    @property
    def identity(self) -> str:
        """The identity key without its column prefix (``$basic_userId``); identities only."""
        return self.key[3:]

    @property
    def type_name(self) -> str:
        """The catalogue's spelling of the type: ``int``, ``string[]``."""
        return self.type.value + ("[]" if self.multi else "")

    @property
    def sql_type(self) -> str:
        return self.type.sql + ("[]" if self.multi else "")


def parse_type(raw: str) -> tuple[ValueType, bool]:
    """``string`` / ``int`` / ``double`` / ``date``, with ``[]`` appended for a multi-valued key."""
    text = raw.strip().lower()
    multi = text.endswith("[]")
    if multi:
        text = text[:-2]
    aliases = {"str": "string", "varchar": "string", "integer": "int", "long": "int", "float": "double"}
    text = aliases.get(text, text)
    try:
        return ValueType(text), multi
    except ValueError:
        raise InvalidKey(
            f"unknown type {raw!r}: expected string, int, double or date (add [] for multi-valued)"
        ) from None


class Catalog:
    """A project's keys, by canonical key. ``computed`` names the tags computed from events (docs/tags.md): their
    values belong to their definitions, so a profile import refuses a column for one."""

    def __init__(self, entries: list[CatalogEntry], computed: Iterable[str] = ()) -> None:
        self.entries = {e.key: e for e in entries}
        self.computed = frozenset(computed)

    def __contains__(self, key: str) -> bool:
        return canonical_key(key) in self.entries

    def get(self, key: str) -> CatalogEntry | None:
        return self.entries.get(canonical_key(key))

    def of_kind(self, kind: KeyKind) -> list[CatalogEntry]:
        return [e for e in self.entries.values() if e.kind is kind]

    def identities(self) -> list[CatalogEntry]:
        return self.of_kind(KeyKind.IDENTITY)
