"""The IngestionJob reference (docs/ingestionjob.md), generated from the models so it cannot drift.

Every field of spec and status gets a row: its path as a manifest spells it, type, default, bounds
and the field's docstring. `python scripts/gen-reference.py` writes the file; a test fails when the
committed copy differs from what this module generates.
"""

import json
from dataclasses import dataclass
from typing import Any

from headrace.model.manifest import API_VERSION, KIND, SHORT_NAMES, IngestionJob

_BOUNDS = [
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "length ≥ {}"),
    ("maxLength", "length ≤ {}"),
    ("minItems", "items ≥ {}"),
    ("maxItems", "items ≤ {}"),
    ("pattern", "pattern `{}`"),
]


@dataclass(frozen=True)
class FieldRow:
    """One documented field."""

    path: str
    type: str
    default: str
    bounds: str
    description: str
    required: bool


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _unwrap_optional(node: dict[str, Any], defs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the non-null branch merged with the field's own keys, whether null was allowed)."""
    options = node.get("anyOf")
    if not options:
        return _resolve(node, defs), False
    kept = [option for option in options if option.get("type") != "null"]
    if len(kept) != 1:
        return node, False
    merged = {**_resolve(kept[0], defs), **{k: v for k, v in node.items() if k != "anyOf"}}
    return merged, len(kept) != len(options)


def _type_name(node: dict[str, Any], defs: dict[str, Any]) -> str:
    if "enum" in node:
        return "enum"
    if "const" in node:
        return f"`{node['const']}`"
    kind = node.get("type")
    if kind == "array":
        item, _ = _unwrap_optional(node.get("items", {}), defs)
        return f"[]{_type_name(item, defs)}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        value, _ = _unwrap_optional(node["additionalProperties"], defs)
        keys = node.get("propertyNames", {}).get("enum")
        key = "|".join(keys) if keys else "string"
        return f"map[{key}]{_type_name(value, defs)}"
    if kind == "string" and node.get("format") == "date-time":
        return "timestamp"
    return {"integer": "integer", "number": "number", "boolean": "boolean", "string": "string"}.get(str(kind), "object")


def _bounds(node: dict[str, Any], defs: dict[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{value}`" for value in node["enum"]))
    parts += [template.format(node[key]) for key, template in _BOUNDS if key in node]
    if node.get("type") == "array":
        item, _ = _unwrap_optional(node.get("items", {}), defs)
        inner = [template.format(item[key]) for key, template in _BOUNDS if key in item]
        if inner:
            parts.append("each: " + ", ".join(inner))
    if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        value = node["additionalProperties"]
        inner = [template.format(value[key]) for key, template in _BOUNDS if key in value]
        if inner:
            parts.append("each value: " + ", ".join(inner))
    return "; ".join(parts)


def _default(node: dict[str, Any], required: bool) -> str:
    if required:
        return "required"
    if "default" not in node or node["default"] is None or "properties" in node:
        return ""  # an object's default is the defaults of its fields, listed in their own rows
    return f"`{json.dumps(node['default'], ensure_ascii=False)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def field_rows(node: dict[str, Any], defs: dict[str, Any], prefix: str) -> list[FieldRow]:
    """The rows of every field under an object schema, depth first, in declaration order."""
    rows = []
    required = set(node.get("required", []))
    for name, raw in node.get("properties", {}).items():
        field, _ = _unwrap_optional(raw, defs)
        path = f"{prefix}.{name}"
        rows.append(
            FieldRow(
                path=path,
                type=_type_name(field, defs),
                default=_default(field, name in required),
                bounds=_bounds(field, defs),
                description=_cell(field.get("description", "")),
                required=name in required,
            )
        )
        if field.get("type") == "object" and "properties" in field:
            rows += field_rows(field, defs, path)
        elif field.get("type") == "array":
            item, _ = _unwrap_optional(field.get("items", {}), defs)
            if "properties" in item:
                rows += field_rows(item, defs, f"{path}[]")
    return rows


def _table(rows: list[FieldRow]) -> list[str]:
    lines = ["| field | type | default | bounds | description |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| `{row.path}` | {_cell(row.type)} | {row.default} | {_cell(row.bounds)} | {row.description} |")
    return lines


def reference_markdown() -> str:
    """The whole docs/ingestionjob.md."""
    schema = IngestionJob.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    spec, _ = _unwrap_optional(schema["properties"]["spec"], defs)
    status, _ = _unwrap_optional(schema["properties"]["status"], defs)
    lines = [
        f"# {KIND} reference",
        "",
        "<!-- Generated from headrace/model by `python scripts/gen-reference.py`. Do not edit by hand:",
        "     tests/docs/test_reference.py fails when this file differs from the models. -->",
        "",
        f"`apiVersion: {API_VERSION}`, `kind: {KIND}`, namespaced, short name "
        + ", ".join(f"`{name}`" for name in SHORT_NAMES)
        + ". The same text is what `kubectl explain ingestionjob.spec` prints.",
        "",
        "Bounds are enforced by the API server when you apply the object; rules that span fields (such as",
        "`chunking.overlap` at most half of `chunking.targetSize`) are checked too, and a violation names the",
        "field. Types use Kubernetes notation: `[]string` is a list, `map[string]string` a mapping.",
        "",
        "## spec",
        "",
        _cell(spec.get("description", "")),
        "",
        *_table(field_rows(spec, defs, "spec")),
        "",
        "## status",
        "",
        _cell(status.get("description", "")) + " Read it with `kubectl get ij NAME -o yaml`; never set it.",
        "",
        *_table(field_rows(status, defs, "status")),
        "",
    ]
    return "\n".join(lines)
