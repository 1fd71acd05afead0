"""Opaque page cursors for keyset pagination."""

import base64
import json
from typing import Any

from headrace.api.problems import ProblemError


def encode(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode(cursor: str, kind: type) -> Any:
    """The value inside a cursor this server handed out; 400 for anything else."""
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        value = None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProblemError(400, "cursor is not one this server returned")
    return value
