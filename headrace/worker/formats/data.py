"""Structured text: JSON and CSV become readable text, so their values are searchable."""

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from headrace.worker.errors import DocumentError

_MAX_DEPTH = 64


def json_text(text: str) -> str:
    """One `path: value` line per scalar, so keys give the values context in search results."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise DocumentError(f"JSON nested deeper than {_MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise DocumentError(f"invalid JSON: {exc}") from None
    lines = list(_flatten(value, "", 0))
    return "\n".join(lines)


def _flatten(value: Any, path: str, depth: int) -> Iterator[str]:
    if depth > _MAX_DEPTH:
        raise DocumentError(f"JSON nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{path}.{key}" if path else str(key), depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _flatten(item, f"{path}[{index}]", depth + 1)
    elif value is not None and value != "":
        yield f"{path}: {value}" if path else str(value)


def csv_text(text: str) -> str:
    """One paragraph per row, each cell labelled with its column header."""
    sample = text[: 64 * 1024]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = csv.reader(io.StringIO(text), dialect)
    try:
        header = next(rows, [])
        paragraphs = []
        for row in rows:
            cells = [f"{name}: {cell}" if name else cell for name, cell in zip(header, row, strict=False) if cell]
            cells.extend(row[len(header) :])
            if cells:
                paragraphs.append("\n".join(cells))
    except csv.Error as exc:
        raise DocumentError(f"invalid CSV: {exc}") from None
    return "\n\n".join(paragraphs) if paragraphs else " ".join(header)
