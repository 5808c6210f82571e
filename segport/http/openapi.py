"""The OpenAPI document (``/openapi.json``), made to describe the server exactly: clients are generated from it.

FastAPI's document lists what the routes declare. What every request goes through before a route (the edge guard,
the limits, authentication) and what a route checks itself (an id's grammar, the paging numbers) is added here,
once for every operation:

* the bearer token every operation takes;
* the error answers each operation can give, all of them in the one JSON error shape (``ErrorBody``): 400 (a
  control character in the path or the query, a repeated parameter, a bad value), 401, 403 (``/admin/v1``
  with a project token), 404, 408, 413, 414, 431, 503, and those of a few routes (409, 410, 416, 429);
* an export body's ``properties``: at most ``max_properties`` keys (the setting);
* the grammar of every path parameter (a project id is 8 letters or digits, a segment key 1-100 letters,
  digits or ``_``, …), of the paging numbers (``limit`` 1..1000, ``offset`` 0..2^53, whole numbers) and of the
  keys in ``properties[]``; a text parameter without a grammar of its own is declared free of control
  characters (the edge guard refuses them).

Runtime checks are where they were: nothing here changes what a request gets.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

from segport.http.admin_schemas import (
    DISPLAY_NAME_PATTERN,
    EVENT_RULE_SCHEMA,
    RULE_FIELD,
    RULE_SCHEMA,
    SEGMENT_KEY_PATTERN,
)
from segport.http.limits import MAX_PATH, MAX_QUERY, MAX_SEGMENT
from segport.http.paging import MAX_LIMIT, MAX_OFFSET
from segport.http.schemas import KEY_GRAMMAR

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}

# what the edge guard refuses in a path or a query value (segport.http.guard)
NO_CONTROL = r"^[^\u0000-\u001f\u007f]*$"
# the grammars of the identifiers (segport.store.meta, segport.domain.keys, segport.domain.naming)
PROJECT_ID = {"type": "string", "pattern": "^[A-Za-z0-9]{8}$", "examples": ["WlGk4Daj"]}
JOB_ID = {"type": "string", "pattern": "^[A-Za-z0-9]{8}$", "examples": ["kqQeWeGr"]}
SEGMENT_KEY = {"type": "string", "pattern": SEGMENT_KEY_PATTERN, "examples": ["seg_51activity"]}
_SPACE = r"[^\S\u0000-\u001f\u007f]*"  # what the services strip around a key (not a control character)
_BODY = "[A-Za-z_$][A-Za-z0-9_$]"
KEY = {"type": "string", "pattern": f"^{_SPACE}{KEY_GRAMMAR}{_SPACE}$", "examples": ["usr_gender"]}
PAGE_KEY = {"type": "string", "pattern": f"^{_SPACE}({KEY_GRAMMAR}|gio_id){_SPACE}$", "examples": ["usr_gender"]}
TAG_KEY = {"type": "string", "pattern": f"^(tag_)?{_BODY}{{0,95}}$", "examples": ["tag_rfm"]}
IDENTITY_KEY = {
    "type": "string",
    "pattern": f"^{_SPACE}(ids?_)?{_BODY}{{0,96}}{_SPACE}$",
    "examples": ["$basic_userId"],
}
TEXT = {"type": "string", "pattern": NO_CONTROL}
# a description in the query string: no control character (the edge guard's rule), no line separator
QUERY_DESCRIPTION = r"^[^\u0000-\u001f\u007f-\u009f\u2028\u2029]*$"

PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "project_ID": PROJECT_ID,
    "project_id": PROJECT_ID,
    "segment_key": SEGMENT_KEY,
    "tag_key": TAG_KEY,
    "id": JOB_ID,
    "identityKey": IDENTITY_KEY,
    "value": {**TEXT, "minLength": 1},
}


def _path_parameter(path: str, name: str) -> dict[str, Any]:
    if name == "key":  # the admin API: a catalogue key, or a segment key
        return KEY if "/catalog/" in path else SEGMENT_KEY
    return PATH_PARAMETERS.get(name, TEXT)


QUERY_PARAMETERS: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": MAX_LIMIT},
    "offset": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
    "properties[]": {"type": "array", "items": PAGE_KEY, "maxItems": 20},
    "properties": {"type": "array", "items": PAGE_KEY, "maxItems": 20},
    # POST …/segments/from_file, POST …/users/import
    "key": SEGMENT_KEY,
    "name": {"type": "string", "pattern": DISPLAY_NAME_PATTERN, "maxLength": 200},
    "description": {"type": "string", "pattern": QUERY_DESCRIPTION, "maxLength": 2000, "default": ""},
    "identity": {**IDENTITY_KEY, "default": "$basic_userId"},
    "match": {**IDENTITY_KEY, "default": "id_$basic_userId"},
}

# every operation; the text is the description of the answer
SHARED: dict[int, str] = {
    400: "Bad request: a parameter or the body is not valid, or the path or query holds a control character",
    401: "Missing or invalid token",
    404: "Not found (or not visible to this token)",
    408: "The request's headers or body did not arrive in time",
    413: "The request body is too large",
    414: f"URI too long: a path over {MAX_PATH} bytes, a path segment over {MAX_SEGMENT}, a query over {MAX_QUERY}",
    431: "The request's headers are too large",
    503: "The server is busy or one of its stores is unreachable: try again (Retry-After)",
}
ADMIN: dict[int, str] = {
    403: "The admin API needs an admin token",
    409: "The request conflicts with the project's state (a key in use, a name taken, a detector busy)",
}
# by (method, path suffix): the answers of a few routes
EXTRA: list[tuple[str, str, dict[int, str]]] = [
    ("get", "/download", {410: "Results expired", 416: "The requested range is outside the file"}),
    ("get", "/job/result/{id}", {410: "Results expired"}),
    ("post", "/job/{id}/cancel", {409: "The job already finished or failed", 410: "Results expired"}),
    ("post", "/export_jobs", {429: "Too many jobs"}),
]
# what the shared router settings declare where it cannot happen
NOT_HERE: dict[int, str] = {410: "Results expired", 429: "Too many jobs"}


def install(api: FastAPI) -> None:
    """Serve the document described here at ``api.openapi_url``."""
    build = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = describe(build(), max_properties=api.state.segport.settings.max_properties)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def describe(document: dict[str, Any], *, max_properties: int) -> dict[str, Any]:
    """``document`` completed; ``max_properties``: the keys an export may list (``SEGPORT_MAX_PROPERTIES``).
    A copy: FastAPI's document shares the routes' ``openapi_extra`` dicts, module-level ones among them."""
    document = copy.deepcopy(document)
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A token of `segport token create` (`--admin` for `/admin/v1`); the bare token works too.",
    }
    document["security"] = [{"bearer": []}]
    components.setdefault("schemas", {})["Rule"] = RULE_SCHEMA
    components["schemas"]["EventRule"] = EVENT_RULE_SCHEMA
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                _describe_parameter(path, parameter)
            _describe_responses(method, path, operation)
            _describe_rule(operation)
            _describe_export_body(operation, max_properties)
    return document


def _describe_parameter(path: str, parameter: dict[str, Any]) -> None:
    where, name = parameter.get("in"), parameter["name"]
    schema = parameter.get("schema", {})
    if where == "path":
        parameter["schema"] = {**_path_parameter(path, name), **_keep(schema)}
    elif where == "query":
        declared = QUERY_PARAMETERS.get(name)
        if declared is not None:
            parameter["schema"] = {**declared, **_keep(schema)}
        else:
            parameter["schema"] = _text(schema)


def _keep(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k in ("title", "description")}


def _text(schema: dict[str, Any]) -> dict[str, Any]:
    """A query value: free of control characters, whatever else it declares (also inside ``anyOf``)."""
    if "anyOf" in schema:
        return {**schema, "anyOf": [_text(s) for s in schema["anyOf"]]}
    if schema.get("type") == "string" and "pattern" not in schema and "enum" not in schema:
        return {**schema, "pattern": NO_CONTROL}
    return schema


def _describe_rule(operation: dict[str, Any]) -> None:
    """A segment body's ``rule``: the ``Rule`` component (a ``$ref`` pydantic cannot write into a model's own
    schema), or that JSON as a string."""
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    rule = body.get("properties", {}).get("rule")
    if rule is not None:
        body["properties"]["rule"] = {**rule, **RULE_FIELD}


def _describe_export_body(operation: dict[str, Any], max_properties: int) -> None:
    """An export body's ``properties``: at most the server's ``max_properties`` keys (a setting)."""
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if body.get("title") != "ExportJobBody":
        return
    for alternative in body.get("properties", {}).get("properties", {}).get("anyOf", []):
        if alternative.get("type") == "array":
            alternative["maxItems"] = max_properties


def _describe_responses(method: str, path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    wanted = dict(SHARED)
    if path.startswith("/admin/"):
        wanted |= ADMIN
    extra: dict[int, str] = {}
    for m, suffix, answers in EXTRA:
        if m == method and path.endswith(suffix):
            extra |= answers
    for status in NOT_HERE:
        if status not in extra:
            responses.pop(str(status), None)
    for status, text in (wanted | extra).items():
        responses.setdefault(str(status), {"description": text, "content": {"application/json": {"schema": ERROR_REF}}})
    responses.pop("422", None)  # FastAPI's own validation answer: segport answers 400 instead
    operation["responses"] = dict(sorted(responses.items()))
