"""Opaque page cursors for keyset pagination: the one codec of every paged answer.

A cursor is the JSON of the last item's key, base64url without padding. Lists page by one key (a
name, an id); search by the last hit's (score, chunk id), with the collection statistics its first
page ranked by riding along, so that later pages score every chunk as the first did.

What a cursor decodes to goes into a query as a parameter, so a forged one must also fit its type;
anything else is an InvalidCursor, which the API answers with a 400.
"""

import base64
import json
from typing import Any, TypeVar

Key = TypeVar("Key", int, str)

_INT64_MAX = 2**63 - 1


class InvalidCursor(ValueError):
    """A page cursor that this server did not hand out."""

    def __init__(self) -> None:
        super().__init__("cursor is not one this server returned")


def encode(value: Any) -> str:
    """The cursor of `value` (any JSON)."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _decode(cursor: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


def decode(cursor: str, kind: type[Key]) -> Key:
    """The key inside a list's cursor: an int within int64 (a bigint parameter), or a string without
    NUL (Postgres text cannot hold it)."""
    try:
        value = _decode(cursor)
    except ValueError:
        value = None
    fits = (
        (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _INT64_MAX)
        if kind is int
        else isinstance(value, str) and "\x00" not in value
    )
    if not isinstance(value, kind) or not fits:
        raise InvalidCursor()
    return value


def encode_search(score: float, chunk_id: int, statistics: dict[str, Any] | None = None) -> str:
    """A search cursor after the hit (score, chunk_id); keyword ranking's collection statistics ride
    along, so that later pages score every chunk as the first page did, while documents come and go."""
    return encode([score, chunk_id] + ([statistics] if statistics is not None else []))


def decode_search(cursor: str) -> tuple[float, int, dict[str, Any] | None]:
    """A search cursor's hit (score, chunk id) and the keyword-ranking statistics it carries (None:
    rank by the current ones)."""
    try:
        score, chunk_id, *rest = _decode(cursor)
        statistics = rest[0] if rest else None
        if len(rest) > 1 or not (statistics is None or isinstance(statistics, dict)):
            raise ValueError("unknown cursor fields")
        return float(score), int(chunk_id), statistics
    except (ValueError, TypeError) as exc:
        raise InvalidCursor() from exc
