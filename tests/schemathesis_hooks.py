"""Schemathesis hooks for tests/test_openapi_conformance.py (loaded through ``SCHEMATHESIS_HOOKS``).

One check stands in for schemathesis's ``positive_data_acceptance``: the same check, except that a 400 with one
of these codes is not a failure, because what it refuses is the project's data, which a static document cannot
hold (it declares the grammar, and these 400s):

* ``UNKNOWN_KEY``: a key of the right grammar that the project's catalogue does not hold;
* ``TOO_MANY_PROPERTIES``: more than 20 keys counting ``properties[]`` and ``properties`` together (one limit
  over two parameters);
* ``INVALID_RULE``: a segment rule whose keys, or whose values for their types, the catalogue does not allow
  (the rule's structure is declared);
* ``IMPORT_REJECTED``: an uploaded file's content (a catalogue CSV, a users file, and the format it is read as);
* ``INVALID_EVENT``: a collected event's content, checked against the clock (a time before 2000 or past the
  allowed skew), the event type's own fields and the attribute catalogue (docs/events.md);
* ``INVALID_PARAMETER`` naming ``endTime`` and ``startTime``: E18's window must not be empty, a relation between
  two parameters that an OpenAPI schema cannot state.

Every other 400 to a request the document allows still fails the run.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import positive_data_acceptance

CATALOGUE_CODES = frozenset({"UNKNOWN_KEY", "TOO_MANY_PROPERTIES", "INVALID_RULE", "IMPORT_REJECTED", "INVALID_EVENT"})


def _error(response: Any) -> tuple[str | None, str]:
    try:
        error = json.loads(response.content)["error"]
        return str(error["code"]), str(error.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, ""


def _excused(response: Any) -> bool:
    code, message = _error(response)
    if code in CATALOGUE_CODES:
        return True
    return code == "INVALID_PARAMETER" and "endTime" in message and "after startTime" in message


@schemathesis.check
def positive_data_acceptance_but_catalogue_keys(ctx: Any, response: Any, case: Any) -> bool | None:
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if response.status_code == 400 and _excused(response):
            return None
        raise
