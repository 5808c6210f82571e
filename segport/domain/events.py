"""Events as GrowingIO's SDKs send them (collection protocol v3), and the normalized form segport keeps.

:func:`decode_body` turns a collect request's body (JSON or protobuf, maybe gzip, snappy and XOR) into a list of
wire events; :func:`normalize_events` checks each one and returns the normalized events the spool stores::

    {"t": ms since the epoch, "type": "CUSTOM" | ..., "event": name or None, "user_id": str or None,
     "user_key": str or None, "device_id": str or None, "attrs": {key: str}, "std": {field: str | int}}

A batch is all or nothing: the first bad event raises :class:`InvalidEvent` naming its index (0-based) and the
reason. The limits and the grammar below are documented in docs/events.md.
"""

from __future__ import annotations

import math
import operator
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import cramjam
import msgspec
from pydantic_core import from_json

from segport.errors import InvalidBody, InvalidEvent, PayloadTooLarge

# --- limits (docs/events.md) ---------------------------------------------------------------------------
MAX_DECODED_BYTES = 16 * 1024 * 1024  # a body after gzip / snappy
MAX_EVENTS = 2000  # per request: BufferedConsumer's own cap
MAX_ATTRIBUTES = 256  # per event
MAX_NAME_CHARS = 100  # event names, attribute keys, item keys
MAX_VALUE_CHARS = 4096  # attribute values, std strings, ids
MIN_TIME_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_FUTURE_SKEW_MS = 24 * 3600 * 1000

# letters, digits and '_', not starting with a digit ('$' is kept for segport's own standard columns)
NAME_RE = re.compile(rf"[A-Za-z_][A-Za-z0-9_]{{0,{MAX_NAME_CHARS - 1}}}")
USER_KEY_RE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]{0,99}")
# what a value may not hold: C0/C1 controls except tab and line breaks, unpaired surrogates, U+2028/9
_BAD_VALUE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_BAD_NAME = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")

EVENT_TYPES = (
    "VISIT",
    "CUSTOM",
    "VISITOR_ATTRIBUTES",
    "LOGIN_USER_ATTRIBUTES",
    "CONVERSION_VARIABLES",
    "APP_CLOSED",
    "PAGE",
    "PAGE_ATTRIBUTES",
    "VIEW_CLICK",
    "VIEW_CHANGE",
    "FORM_SUBMIT",
)  # in the order of the protobuf enum EventType
_TYPES = frozenset(EVENT_TYPES)
ITEM = "ITEM"  # the type of an item (collect/item) in the spool

# standard fields: the JSON wire name (also the name under "std") and whether it is an integer
STD_STRINGS = (
    "sessionId", "platform", "domain", "path", "query", "title", "referralPage", "language", "sdkVersion",
    "appVersion", "protocolType", "textValue", "xpath", "hyperlink", "urlScheme", "appState", "networkState",
    "appChannel", "pageName", "platformVersion", "deviceBrand", "deviceModel", "deviceType", "operatingSystem",
    "appName", "imei", "androidId", "oaid", "googleAdvertisingId", "idfa", "idfv", "orientation",
)  # fmt: skip
STD_INTS = (
    "globalSequenceId", "eventSequenceId", "screenHeight", "screenWidth", "pageShowTimestamp", "index", "sendTime",
)  # fmt: skip
STD_DOUBLES = ("latitude", "longitude")  # kept as their decimal text
_STD_STRINGS, _STD_INTS, _STD_DOUBLES = frozenset(STD_STRINGS), frozenset(STD_INTS), frozenset(STD_DOUBLES)


@dataclass(frozen=True, slots=True)
class Encoding:
    """How a body is encoded: from the request's Content-Type and X-Compress-Codec / X-Crypt-Codec /
    Content-Encoding headers, and its ``stm`` query parameter."""

    protobuf: bool = False
    gzip: bool = False
    snappy: bool = False
    xor: bool = False
    stm: int | None = None


def encoding_of(
    content_type: str | None,
    compress: str | None,
    crypt: str | None,
    content_encoding: str | None,
    stm: str | None,
) -> Encoding:
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media in ("application/json", "text/plain", ""):
        protobuf = False
    elif media in ("application/protobuf", "application/x-protobuf"):
        protobuf = True
    else:
        raise InvalidBody(f"unsupported Content-Type {media[:60]!r}: send application/json or application/protobuf")
    stm_ms = None
    if stm is not None and stm != "":
        if not stm.isascii() or not stm.isdigit() or len(stm) > 15:
            raise InvalidBody(f"stm must be the send time in milliseconds since the epoch; got {stm[:40]!r}")
        stm_ms = int(stm)
    compress = (compress or "0").strip()
    if compress not in ("0", "2"):
        raise InvalidBody(f"unsupported X-Compress-Codec {compress[:20]!r}: 2 (snappy) or none")
    crypt = (crypt or "0").strip()
    if crypt not in ("0", "1"):
        raise InvalidBody(f"unsupported X-Crypt-Codec {crypt[:20]!r}: 1 (XOR with stm & 0xff) or none")
    if crypt == "1" and stm_ms is None:
        raise InvalidBody("X-Crypt-Codec: 1 needs the stm query parameter (the XOR key is stm & 0xff)")
    coding = (content_encoding or "identity").strip().lower()
    if coding not in ("identity", "gzip"):
        raise InvalidBody(f"unsupported Content-Encoding {coding[:20]!r}: gzip or none")
    return Encoding(protobuf, coding == "gzip", compress == "2", crypt == "1", stm_ms)


# --- the body ------------------------------------------------------------------------------------------
def unwrap(body: bytes, enc: Encoding) -> bytes:
    """The body without its transport layers: gzip, then XOR, then snappy (the SDK applies them in reverse)."""
    if enc.gzip:
        body = _gunzip(body)
    if enc.xor:
        assert enc.stm is not None
        key = enc.stm & 0xFF
        body = body.translate(bytes(i ^ key for i in range(256)))
    if enc.snappy:
        body = _unsnappy(body, enc.xor)
    return body


def _gunzip(body: bytes) -> bytes:
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(body, MAX_DECODED_BYTES + 1)
    except zlib.error as exc:
        raise InvalidBody(f"the body is not valid gzip ({exc})") from None
    if len(out) > MAX_DECODED_BYTES:
        raise PayloadTooLarge(f"the body is larger than {MAX_DECODED_BYTES} bytes once decompressed")
    if not d.eof:
        raise InvalidBody("the body is not valid gzip (it ends before the gzip stream does)")
    return out


def _unsnappy(body: bytes, xored: bool) -> bytes:
    hint = " (or its XOR key, stm & 0xff, does not match)" if xored else ""
    size, shift, pos = 0, 0, 0
    while True:  # the raw snappy format starts with the uncompressed length as a varint
        if pos >= len(body) or pos > 4:
            raise InvalidBody(f"the body is not valid snappy{hint}")
        byte = body[pos]
        size |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            break
    if size > MAX_DECODED_BYTES:
        raise PayloadTooLarge(f"the body is larger than {MAX_DECODED_BYTES} bytes once decompressed")
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:  # cramjam raises its own DecompressionError (and ValueError on some input)
        raise InvalidBody(f"the body is not valid snappy{hint}: {str(exc)[:120]}") from None


def decode_json_list(raw: bytes, what: str) -> list[Any]:
    try:
        value = from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        raise InvalidBody(f"the body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(value, list):
        raise InvalidBody(f"the body must be a JSON array of {what}")
    return value


# --- protobuf (proto3 wire format, the field numbers of the SDK's event_v3.proto) -----------------------
class _Malformed(Exception):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed("a varint runs past its end")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a message: an int for varints and fixed, bytes for LEN."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _Malformed("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise _Malformed("a length-delimited field runs past its end")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 1:
            if pos + 8 > end:
                raise _Malformed("a fixed64 field runs past its end")
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 5:
            if pos + 4 > end:
                raise _Malformed("a fixed32 field runs past its end")
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise _Malformed(f"wire type {wire} (groups are not used by event_v3.proto)")
        yield number, wire, value


def _text(value: Any, wire: int) -> str:
    if wire != 2:
        raise _Malformed("a string field with a non-string wire type")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("a string field that is not UTF-8") from None


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _map(value: bytes, wire: int) -> tuple[str, str]:
    if wire != 2:
        raise _Malformed("a map entry with a non-message wire type")
    key = val = ""
    for number, w, v in _fields(value):
        if number == 1:
            key = _text(v, w)
        elif number == 2:
            val = _text(v, w)
    return key, val


_PB_STRINGS = {
    1: "deviceId", 2: "userId", 4: "sessionId", 5: "dataSourceId", 7: "platform", 9: "domain", 10: "path",
    11: "query", 12: "title", 13: "referralPage", 18: "language", 19: "sdkVersion", 20: "appVersion",
    22: "eventName", 26: "protocolType", 27: "textValue", 28: "xpath", 30: "hyperlink", 31: "urlScheme",
    32: "appState", 33: "networkState", 34: "appChannel", 35: "pageName", 36: "platformVersion",
    37: "deviceBrand", 38: "deviceModel", 39: "deviceType", 40: "operatingSystem", 42: "appName", 46: "imei",
    47: "androidId", 48: "oaid", 49: "googleAdvertisingId", 50: "idfa", 51: "idfv", 52: "orientation",
    53: "projectKey", 55: "userKey",
}  # fmt: skip
_PB_INTS = {8: "timestamp", 14: "globalSequenceId", 15: "eventSequenceId", 16: "screenHeight", 17: "screenWidth",
            23: "pageShowTimestamp", 29: "index", 54: "sendTime"}  # fmt: skip
_PB_DOUBLES = {44: "latitude", 45: "longitude"}


def _pb_event(buf: bytes) -> dict[str, Any]:
    """One EventV3Dto as the JSON wire object it stands for (proto3: a field left at its default is absent)."""
    event: dict[str, Any] = {"eventType": "VISIT"}  # proto3: enum value 0 is not sent
    attrs: dict[str, str] = {}
    for number, wire, value in _fields(buf):
        if number in _PB_STRINGS:
            event[_PB_STRINGS[number]] = _text(value, wire)
        elif number in _PB_INTS:
            if wire != 0:
                raise _Malformed(f"field {number} is an integer")
            event[_PB_INTS[number]] = _signed(value)
        elif number in _PB_DOUBLES:
            if wire != 1:
                raise _Malformed(f"field {number} is a double")
            event[_PB_DOUBLES[number]] = struct.unpack("<d", value)[0]
        elif number == 6:
            if wire != 0:
                raise _Malformed("event_type is an enum")
            if value >= len(EVENT_TYPES):
                event["eventType"] = f"#{value}"
            else:
                event["eventType"] = EVENT_TYPES[value]
        elif number == 24:
            k, v = _map(value, wire)
            attrs[k] = v
        elif number == 25:
            if wire != 2:
                raise _Malformed("resource_item is a message")
            for n, w, v in _fields(value):
                if n == 1:
                    event["resourceItemId"] = _text(v, w)
                elif n == 2:
                    event["resourceItemKey"] = _text(v, w)
        # 3 (gio_id: assigned by segport, not the client), 21 (extra_sdk) and unknown fields are skipped
    if attrs:
        event["attributes"] = attrs
    return event


def _pb_item(buf: bytes) -> dict[str, Any]:
    item: dict[str, Any] = {}
    attrs: dict[str, str] = {}
    for number, wire, value in _fields(buf):
        if number == 1:
            item["id"] = _text(value, wire)
        elif number == 2:
            item["key"] = _text(value, wire)
        elif number == 3:
            k, v = _map(value, wire)
            attrs[k] = v
        elif number == 4:
            item["dataSourceId"] = _text(value, wire)
        elif number == 5:
            item["projectKey"] = _text(value, wire)
    if attrs:
        item["attributes"] = attrs
    return item


def _pb_list(raw: bytes, field: int, one: Callable[[bytes], dict[str, Any]], what: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        for number, wire, value in _fields(raw):
            if number == field and wire == 2:
                if len(out) >= MAX_EVENTS:
                    raise PayloadTooLarge(f"a batch holds at most {MAX_EVENTS} {what}")
                out.append(one(value))
            elif number == field:
                raise _Malformed(f"field {field} must hold messages")
    except _Malformed as exc:
        at = f" (in {what[:-1]} {len(out)})" if out else ""
        raise InvalidBody(f"the body is not a valid protobuf {_PB_NAMES[what]}{at}: {exc}") from None
    return out


_PB_NAMES = {"events": "EventV3List", "items": "ItemDtoList"}


def decode_events(body: bytes, enc: Encoding) -> tuple[list[Any], bool]:
    """The wire events of a body, and whether it was a JSON text :func:`json_is_clean` holds for."""
    raw = unwrap(body, enc)
    if enc.protobuf:
        return _pb_list(raw, 1, _pb_event, "events"), False
    return decode_json_list(raw, "events"), json_is_clean(raw)


def decode_items(body: bytes, enc: Encoding) -> list[Any]:
    raw = unwrap(body, enc)
    if enc.protobuf:
        return _pb_list(raw, 2, _pb_item, "items")  # ItemDtoList's values are field 2
    return decode_json_list(raw, "items")


# --- normalizing -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Batch:
    """The normalized events of one request, and the one data source and project key they name."""

    events: list[dict[str, Any]]
    datasource_id: str


def _bad(index: int, reason: str, what: str = "event") -> InvalidEvent:
    return InvalidEvent(f"{what} {index}: {reason}", index=index)


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string")
    if NAME_RE.fullmatch(value) is None:
        if _BAD_NAME.search(value):
            raise ValueError(f"{field} holds a control character")
        raise ValueError(
            f"{field} {value[:40]!r} is outside the grammar: letters, digits and '_', not starting with a digit, "
            f"at most {MAX_NAME_CHARS} characters"
        )
    return value


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string")
    if len(value) > MAX_VALUE_CHARS:
        raise ValueError(f"{field} is longer than {MAX_VALUE_CHARS} characters")
    if _BAD_VALUE.search(value):
        raise ValueError(f"{field} holds a control character")
    return value


def _attr_value(value: Any, key: str) -> str | None:
    if isinstance(value, str):
        return _string(value, f"attribute {key!r}")
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"attribute {key!r} is not a finite number")
        return repr(value)
    if isinstance(value, list):  # the SDKs join lists with "||" themselves; a raw list is joined the same way
        parts = [_attr_value(v, key) for v in value if not isinstance(v, (list, dict))]
        return _string("||".join(p for p in parts if p), f"attribute {key!r}")
    raise ValueError(f"attribute {key!r} must be a string, a number or a list")


def _attributes(value: Any, field: str = "attributes") -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{field} must be an object")
    if len(value) > MAX_ATTRIBUTES:
        raise ValueError(f"{field} holds {len(value)} keys; at most {MAX_ATTRIBUTES}")
    out: dict[str, str] = {}
    for key, item in value.items():
        _name(key, "attribute key")
        text = _attr_value(item, key)
        if text is not None:
            out[key] = text
    return out


def _time(value: Any, now_ms: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("timestamp must be an integer (milliseconds since the epoch)")
    if value < MIN_TIME_MS:
        raise ValueError(f"timestamp {value} is before 2000-01-01 (it must be milliseconds since the epoch)")
    if value > now_ms + MAX_FUTURE_SKEW_MS:
        raise ValueError(f"timestamp {value} is more than {MAX_FUTURE_SKEW_MS // 3_600_000} h in the future")
    return value


def _std(raw: dict[str, Any]) -> dict[str, Any]:
    std: dict[str, Any] = {}
    for field, value in raw.items():
        if value is None:
            continue
        if field in _STD_STRINGS:
            if value != "":
                std[field] = _string(value, field)
        elif field in _STD_INTS:
            if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= 1 << 63:
                raise ValueError(f"{field} must be an integer")
            std[field] = value
        elif field in _STD_DOUBLES:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{field} must be a number")
            std[field] = repr(float(value))
        elif field in ("resourceItemId", "resourceItemKey"):
            std[field] = _string(value, field)
        elif field == "resourceItem":  # JSON: {"id": ..., "key": ...}
            if not isinstance(value, dict):
                raise ValueError("resourceItem must be an object")
            for sub, name in (("id", "resourceItemId"), ("key", "resourceItemKey")):
                if value.get(sub) not in (None, ""):
                    std[name] = _string(value[sub], f"resourceItem.{sub}")
    return std


def _source(raw: dict[str, Any], project_key: str) -> str:
    source = raw.get("dataSourceId")
    if not isinstance(source, str) or not source:
        raise ValueError("dataSourceId is missing (the SDK sends it with every event)")
    key = raw.get("projectKey")
    if key not in (None, "", project_key):
        raise ValueError(f"projectKey {str(key)[:40]!r} is not the one in the path")
    return source


# In a JSON text a control character can only be an escape (RFC 8259), and C1 controls and U+2028/9 are these
# UTF-8 sequences: a body without any of them holds no string that the value rules refuse, and its values need
# no check of their own (a false alarm, such as an escaped backslash before "b", only takes the slow path).
_SUSPECT = re.compile(rb"\\u00[0-1]|\\u007[fF]|\\u00[89]|\\u202[89]|\\[bf]|\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]")
_GOOD_NAMES: set[str] = set()  # names and keys already checked (bounded: cleared when it grows past 50,000)
_STD_KIND = {**dict.fromkeys(STD_STRINGS, 1), **dict.fromkeys(STD_INTS, 2), **dict.fromkeys(STD_DOUBLES, 3)}
_STD_KIND.update(resourceItemId=4, resourceItemKey=4, resourceItem=4)
_STD_FIELDS = frozenset(_STD_KIND)


def json_is_clean(raw: bytes) -> bool:
    """Whether no string of the JSON text ``raw`` can hold a character the value rules refuse."""
    # every suspect sequence starts with a backslash, 0xc2 or 0xe2: three memchr scans rule most bodies out in
    # a fraction of the regular expression's time (which runs only when one of them is there)
    if b"\\" not in raw and b"\xc2" not in raw and b"\xe2" not in raw:
        return True
    return _SUSPECT.search(raw) is None


def _known_name(value: Any, field: str) -> str:
    if type(value) is str and value in _GOOD_NAMES:
        return value
    _name(value, field)
    if len(_GOOD_NAMES) > 50_000:
        _GOOD_NAMES.clear()
    _GOOD_NAMES.add(value)
    return value  # type: ignore[no-any-return]


def _fast_attributes(value: Any, clean: bool) -> dict[str, str]:
    """The attributes as they came when every value is already a string that passes (most batches); else
    the full check, which converts numbers and lists and names what is wrong."""
    if value is None:
        return {}
    if type(value) is not dict or len(value) > MAX_ATTRIBUTES:
        return _attributes(value)
    for key, item in value.items():
        if key not in _GOOD_NAMES:
            _known_name(key, "attribute key")
        if type(item) is not str or len(item) > MAX_VALUE_CHARS or (not clean and _BAD_VALUE.search(item)):
            return _attributes(value)
    return value


def _fast_std(ev: dict[str, Any], clean: bool) -> dict[str, Any]:
    std: dict[str, Any] = {}
    for field in _STD_FIELDS.intersection(ev):  # in C: only the few standard fields an event has
        value, kind = ev[field], _STD_KIND[field]
        if value is None:
            continue
        if (
            kind == 1
            and type(value) is str
            and len(value) <= MAX_VALUE_CHARS
            and (clean or not _BAD_VALUE.search(value))
        ):
            if value:
                std[field] = value
        elif kind == 2 and type(value) is int and -(1 << 63) <= value < 1 << 63:
            std[field] = value
        else:
            return _std(ev)  # the full check: converts or names what is wrong
    return std


def _fast_id(value: Any, field: str, clean: bool) -> str | None:
    if value is None or value == "":
        return None
    if type(value) is str and len(value) <= MAX_VALUE_CHARS and (clean or not _BAD_VALUE.search(value)):
        return value
    return _string(value, field)


def normalize_events(raw: list[Any], project_key: str, now_ms: int | None = None, *, clean: bool = False) -> Batch:
    """Check and normalize a batch of wire events (JSON objects, or protobuf decoded to the same names).

    ``clean``: the batch was parsed from a JSON text for which :func:`json_is_clean` holds."""
    if len(raw) > MAX_EVENTS:
        raise PayloadTooLarge(f"a batch holds at most {MAX_EVENTS} events; this one holds {len(raw)}")
    if not raw:
        raise InvalidBody("the batch holds no events")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    latest = now + MAX_FUTURE_SKEW_MS
    out: list[dict[str, Any]] = []
    append = out.append
    source = ""
    for i, ev in enumerate(raw):
        if type(ev) is not dict:
            raise _bad(i, "must be a JSON object")
        try:
            this = ev.get("dataSourceId")
            if this != source or not source:
                this = _source(ev, project_key)
                if source and this != source:
                    raise ValueError(f"dataSourceId {this[:40]!r} differs from the batch's first one")
                source = this
            else:
                key = ev.get("projectKey")
                if key is not None and key != project_key and key != "":
                    _source(ev, project_key)
            kind = ev.get("eventType")
            if type(kind) is not str or kind not in _TYPES:
                raise ValueError(f"eventType {str(kind)[:40]!r} is not one of {', '.join(EVENT_TYPES)}")
            name = _known_name(ev.get("eventName"), "eventName") if kind == "CUSTOM" else None
            user_id = _fast_id(ev.get("userId"), "userId", clean)
            device_id = _fast_id(ev.get("deviceId"), "deviceId", clean)
            user_key = None
            if user_id is not None:
                raw_key = ev.get("userKey")
                if raw_key is not None and raw_key != "":
                    if type(raw_key) is not str or USER_KEY_RE.fullmatch(raw_key) is None:
                        raise ValueError(
                            f"userKey {str(raw_key)[:40]!r} is outside the grammar: letters, digits, '_' and '$', "
                            "not starting with a digit, at most 100 characters"
                        )
                    user_key = raw_key
            elif device_id is None:
                raise ValueError("it names nobody: userId or deviceId is needed")
            if kind == "LOGIN_USER_ATTRIBUTES" and user_id is None:
                raise ValueError("LOGIN_USER_ATTRIBUTES needs userId")
            if kind == "VISITOR_ATTRIBUTES" and device_id is None:
                raise ValueError("VISITOR_ATTRIBUTES needs deviceId")
            t = ev.get("timestamp")
            if type(t) is not int or t < MIN_TIME_MS or t > latest:
                t = _time(t, now)
            append(
                {
                    "t": t,
                    "type": kind,
                    "event": name,
                    "user_id": user_id,
                    "user_key": user_key,
                    "device_id": device_id,
                    "attrs": _fast_attributes(ev.get("attributes"), clean),
                    "std": _fast_std(ev, clean),
                }
            )
        except ValueError as exc:
            raise _bad(i, str(exc)) from None
    return Batch(out, source)


def normalize_items(raw: list[Any], project_key: str, now_ms: int | None = None) -> Batch:
    """Items (``key``, ``id``, attributes) in the spool's event shape: type ``ITEM``, the time they arrived,
    ``std`` = ``{"itemKey": key, "itemId": id}``, their attributes as ``attrs``."""
    if len(raw) > MAX_EVENTS:
        raise PayloadTooLarge(f"a batch holds at most {MAX_EVENTS} items; this one holds {len(raw)}")
    if not raw:
        raise InvalidBody("the batch holds no items")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    out: list[dict[str, Any]] = []
    source = ""
    for i, it in enumerate(raw):
        if not isinstance(it, dict):
            raise _bad(i, "must be a JSON object", "item")
        try:
            this = _source(it, project_key)
            if source and this != source:
                raise ValueError(f"dataSourceId {this[:40]!r} differs from the batch's first one")
            source = this
            key = _name(it.get("key"), "key")
            item_id = it.get("id")
            if isinstance(item_id, int) and not isinstance(item_id, bool):
                item_id = str(item_id)
            if not item_id:
                raise ValueError("id is missing")
            out.append(
                {
                    "t": now,
                    "type": ITEM,
                    "event": None,
                    "user_id": None,
                    "user_key": None,
                    "device_id": None,
                    "attrs": _attributes(it.get("attributes")),
                    "std": {"itemKey": key, "itemId": _string(item_id, "id")},
                }
            )
        except ValueError as exc:
            raise _bad(i, str(exc), "item") from None
    return Batch(out, source)


def check_events(raw: list[Any], project_key: str, now_ms: int | None = None, *, clean: bool = False) -> str:
    """Check a batch as :func:`normalize_events` does, without building the normalized events: the batch's
    dataSourceId if it is accepted, else :class:`InvalidEvent` (or another 4xx) exactly as there.

    One inlined pass accepts the common shape (strings that pass, names already seen, standard fields of their
    type); anything else (a number or a list to convert, a name not seen yet, an error to name) is left to
    :func:`normalize_events` itself, so this accepts a subset of what it accepts and refuses nothing it would
    not."""
    if not raw or len(raw) > MAX_EVENTS or type(raw[0]) is not dict:
        return normalize_events(raw, project_key, now_ms, clean=clean).datasource_id
    now = int(time.time() * 1000) if now_ms is None else now_ms
    latest = now + MAX_FUTURE_SKEW_MS
    source = raw[0].get("dataSourceId")
    if type(source) is not str or not source:
        return normalize_events(raw, project_key, now_ms, clean=clean).datasource_id
    names, types, std_fields, std_kind, bad = _GOOD_NAMES, _TYPES, _STD_FIELDS, _STD_KIND, _BAD_VALUE
    for ev in raw:
        if type(ev) is not dict or ev.get("dataSourceId") != source:
            break
        key = ev.get("projectKey")
        if key is not None and key != project_key and key != "":
            break
        kind = ev.get("eventType")
        if type(kind) is not str or kind not in types:
            break
        if kind == "CUSTOM":
            name = ev.get("eventName")
            if type(name) is not str or name not in names:
                break
        user_id = ev.get("userId")
        if user_id == "":
            user_id = None
        if user_id is not None:
            if type(user_id) is not str or len(user_id) > MAX_VALUE_CHARS or (not clean and bad.search(user_id)):
                break
            user_key = ev.get("userKey")
            if (
                user_key is not None
                and user_key != ""
                and (type(user_key) is not str or USER_KEY_RE.fullmatch(user_key) is None)
            ):
                break
        device_id = ev.get("deviceId")
        if device_id == "":
            device_id = None
        if device_id is not None:
            if type(device_id) is not str or len(device_id) > MAX_VALUE_CHARS or (not clean and bad.search(device_id)):
                break
        elif user_id is None or kind == "VISITOR_ATTRIBUTES":
            break
        if kind == "LOGIN_USER_ATTRIBUTES" and user_id is None:
            break
        t = ev.get("timestamp")
        if type(t) is not int or t < MIN_TIME_MS or t > latest:
            break
        attrs = ev.get("attributes")
        if attrs is not None:
            if type(attrs) is not dict or len(attrs) > MAX_ATTRIBUTES:
                break
            ok = True
            for k, v in attrs.items():
                if k not in names or type(v) is not str or len(v) > MAX_VALUE_CHARS or (not clean and bad.search(v)):
                    ok = False
                    break
            if not ok:
                break
        for field in std_fields.intersection(ev):
            value = ev[field]
            if value is None:
                continue
            kind_of = std_kind[field]
            if kind_of == 1:
                if type(value) is not str or len(value) > MAX_VALUE_CHARS or (not clean and bad.search(value)):
                    break
            elif kind_of != 2 or type(value) is not int or not -(1 << 63) <= value < 1 << 63:
                break
        else:
            continue
        break
    else:
        return source  # every event passed
    return normalize_events(raw, project_key, now_ms, clean=clean).datasource_id


# --- the collect path's one-pass check of a JSON batch ---------------------------------------------------
def _wire_event_type(only: tuple[str, ...] | None = None) -> Any:
    """The common shape of a wire event as msgspec types: every field :func:`normalize_events` reads, of the
    type it takes without converting (strings that fit, 64-bit integers, ``null``), and no other field. With
    ``only``, just those fields (each of the same type): a struct for a narrower shape."""
    value = Annotated[str, msgspec.Meta(max_length=MAX_VALUE_CHARS)]
    int64 = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
    fields: list[tuple[str, Any, Any]] = [
        ("dataSourceId", str | None, None),
        ("projectKey", str | None, None),
        ("eventType", Literal[EVENT_TYPES] | None, None),  # type: ignore[valid-type]
        ("eventName", str | None, None),
        ("userId", value | None, None),
        ("deviceId", value | None, None),
        ("userKey", str | None, None),
        ("timestamp", int | None, None),
        ("attributes", Annotated[dict[str, value], msgspec.Meta(max_length=MAX_ATTRIBUTES)] | None, None),
    ]
    fields += [(f, value | None, None) for f in STD_STRINGS]
    fields += [(f, int64 | None, None) for f in STD_INTS]
    # a double or a resource item is converted by normalizing: only null here
    fields += [(f, None, None) for f in (*STD_DOUBLES, "resourceItemId", "resourceItemKey", "resourceItem")]
    # In the order GrowingIO's Python SDK writes them (growingio-tracker's JsonParser), the rest after: msgspec
    # looks a key up from the field after the last one found, so a body in this order finds each key at its
    # first try (a decode of a typical batch of 100 events: 164 µs in the order above, 129 µs in this one).
    first = {name: i for i, name in enumerate(SDK_JSON_ORDER)}
    fields.sort(key=lambda f: first.get(f[0], len(first)))
    if only is not None:
        fields = [f for f in fields if f[0] in only]
        assert len(fields) == len(only)
    name = "WireEvent" if only is None else "SdkWireEvent"
    return msgspec.defstruct(name, fields, forbid_unknown_fields=True, gc=False, omit_defaults=True)


# The keys of an event as growingio-tracker's JsonParser writes them, in its order.
SDK_JSON_ORDER = (
    "eventType", "sdkVersion", "platform", "timestamp", "eventName", "deviceId", "userKey", "userId", "attributes",
    "sendTime", "dataSourceId", "projectKey",
)  # fmt: skip


_WIRE_BATCH = msgspec.json.Decoder(list[_wire_event_type()])  # type: ignore[misc]
# The same for a batch whose events hold only the keys growingio-tracker writes (its server-side events): tried
# first. Each event is a struct of 12 slots instead of 53, which msgspec fills in with defaults and frees again
# per event: a batch of 100 decodes and is freed in ~49 µs instead of ~60. Its fields are the wide struct's, of
# the same types, so whatever it accepts the wide one accepts with the same values; any other key (a browser's
# or an app's event carries path, domain, sessionId, ...) fails it at that key, and the wide struct decodes.
_SDK_EVENT = _wire_event_type(SDK_JSON_ORDER)
_SDK_BATCH = msgspec.json.Decoder(list[_SDK_EVENT])  # type: ignore[misc]


def check_json_events(text: bytes, project_key: str, now_ms: int | None = None) -> tuple[str, int] | None:
    """The collect path's check of a JSON batch in the common shape, parsed and type-checked in one pass
    (msgspec) instead of parsed into objects (``from_json``) and then checked field by field: the batch's
    dataSourceId and its number of events if it passes, else None, and then the caller takes the full path
    (:func:`decode_json_list`, :func:`check_events`), which accepts or refuses it with its own words. So this
    accepts a subset of what normalizing accepts and refuses nothing itself.

    Only for a text :func:`json_is_clean` holds for (its strings need no scan for control characters). A field
    that normalizing does not read (which the decoder would skip unchecked: it might hold JSON that
    ``from_json`` refuses), a value it would convert (a number as an attribute, a double), a name not seen yet:
    all take the full path."""
    events = _common_json_events(text, project_key, now_ms)
    return None if events is None else (events[0].dataSourceId, len(events))


def _common_json_events(text: bytes, project_key: str, now_ms: int | None) -> list[Any] | None:
    """The events of a JSON batch in the common shape (msgspec structs), checked as :func:`check_json_events`
    says, or None."""
    try:
        events = _SDK_BATCH.decode(text)
    except Exception:  # noqa: BLE001 - another key than the SDK's (or bad JSON): the wide struct decides
        try:
            events = _WIRE_BATCH.decode(text)
        except Exception:  # noqa: BLE001 - malformed, another shape, nested too deep: the full path words it
            return None
    if not events or len(events) > MAX_EVENTS:
        return None
    source = events[0].dataSourceId
    if not source:
        return None
    latest = (int(time.time() * 1000) if now_ms is None else now_ms) + MAX_FUTURE_SKEW_MS
    names, user_key_re = _GOOD_NAMES, USER_KEY_RE
    for ev in events:
        if ev.dataSourceId != source:
            return None
        key = ev.projectKey
        if key is not None and key != project_key and key != "":
            return None
        kind = ev.eventType
        if kind is None or (kind == "CUSTOM" and ev.eventName not in names):
            return None
        device = ev.deviceId
        if ev.userId:
            user_key = ev.userKey
            if user_key and user_key_re.fullmatch(user_key) is None:
                return None
        elif not device or kind == "LOGIN_USER_ATTRIBUTES":
            return None
        if not device and kind == "VISITOR_ATTRIBUTES":
            return None
        t = ev.timestamp
        if t is None or t < MIN_TIME_MS or t > latest:
            return None
        attrs = ev.attributes
        if attrs and not names.issuperset(attrs):
            return None
    return events


_STD_KEPT = frozenset((*STD_STRINGS, *STD_INTS))
# The standard fields among growingio-tracker's keys (sdkVersion, platform, sendTime), in its order.
_SDK_STD = tuple(f for f in SDK_JSON_ORDER if f in _STD_KEPT)
_sdk_std_values = operator.attrgetter(*_SDK_STD)  # (a tuple: more than one name)
assert len(_SDK_STD) > 1


def _sdk_event_rows(events: list[Any]) -> list[tuple[Any, ...]]:
    """:func:`json_event_rows` of a batch the 12-key struct of growingio-tracker's events decoded: each event's
    values read from its slots, not from a dict of it (``msgspec.to_builtins`` and a comprehension over the
    keys it holds took half the loader's reading of a spool page); the same values, a standard field kept when
    it is neither null nor empty text, as there."""
    std_of, names = _sdk_std_values, _SDK_STD
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    for ev in events:
        kind = ev.eventType
        user_id = ev.userId or None
        std = {}
        for f, v in zip(names, std_of(ev), strict=True):
            if v is not None and v != "":
                std[f] = v
        append(
            (
                ev.timestamp,
                kind,
                ev.eventName if kind == "CUSTOM" else None,
                user_id,
                (ev.userKey or None) if user_id is not None else None,
                ev.deviceId or None,
                ev.attributes or {},
                std,
            )
        )
    return rows


def json_event_rows(text: bytes, project_key: str, now_ms: int | None = None) -> list[tuple[Any, ...]] | None:
    """The events :func:`normalize_events` makes of a JSON batch in the common shape (the shape
    :func:`check_json_events` accepts), as tuples ``(t, type, event, user_id, user_key, device_id, attrs, std)``
    of the same values, from one msgspec decode and without a dict per event: the loader's read of a spool batch
    the collect path accepted. None for any other batch: the caller normalizes it. Only for a text
    :func:`json_is_clean` holds for."""
    events = _common_json_events(text, project_key, now_ms)
    if events is None:
        return None
    return _sdk_event_rows(events) if type(events[0]) is _SDK_EVENT else _wire_event_rows(events)


def _wire_event_rows(events: list[Any]) -> list[tuple[Any, ...]]:
    """:func:`json_event_rows` of a batch the wide struct decoded (any of the standard fields)."""
    kept = _STD_KEPT
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    # as plain dicts without the fields left out (null): the few standard fields an event has, found in C
    for ev in msgspec.to_builtins(events):
        kind = ev["eventType"]
        user_id = ev.get("userId") or None
        std = {f: ev[f] for f in kept.intersection(ev)}
        if "" in std.values():
            std = {f: v for f, v in std.items() if v != ""}
        append(
            (
                ev["timestamp"],
                kind,
                ev.get("eventName") if kind == "CUSTOM" else None,
                user_id,
                (ev.get("userKey") or None) if user_id is not None else None,
                ev.get("deviceId") or None,
                ev.get("attributes") or {},
                std,
            )
        )
    return rows
