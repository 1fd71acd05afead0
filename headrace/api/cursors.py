"""Opaque page cursors for keyset pagination."""

import base64
import json
from typing import Any

from headrace.api.problems import ProblemError


def encode(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


_INT64_MAX = 2**63 - 1


def decode(cursor: str, kind: type) -> Any:
    """The value inside a cursor this server handed out; 400 for anything else.

    What a cursor decodes to goes into a query as a bigint or text parameter, so a forged one must
    also fit those: an int within int64, a string without NUL (Postgres text cannot hold it).
    """
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        value = None
    fits = (
        (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _INT64_MAX)
        if kind is int
        else isinstance(value, str) and "\x00" not in value
    )
    if not isinstance(value, kind) or not fits:
        raise ProblemError(400, "cursor is not one this server returned")
    return value
