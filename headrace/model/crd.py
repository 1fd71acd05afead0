"""The IngestionJob CustomResourceDefinition, generated from the pydantic models.

`headrace crd` writes it to `crds/` and to the chart; a test fails when either copy is stale.
Pydantic's JSON schema is turned into a *structural* OpenAPI v3 schema, as the API server wants it:
references are inlined, `Optional[X]` becomes X (an absent field is None), descriptions come from the
field docstrings, and what OpenAPI cannot say (`const`, `propertyNames`, `additionalProperties: false`)
is said in a form the server accepts. Unknown fields are pruned by the server (and rejected by
`kubectl apply`'s default strict field validation); cross-field rules are CEL `x-kubernetes-validations`
declared on the models beside their pydantic validators.

The API server evaluates every rule against the schema's `default` values as written (an object field
defaults to `{}`; its nested defaults are not filled in first) and refuses the whole CRD when one fails.
So a rule may read an optional field only behind `has(self.field)`: `crd()` refuses a rule that does not.
"""

import copy
import re
from typing import Any

import yaml
from pydantic import BaseModel

from headrace.model.manifest import CATEGORIES, GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION, IngestionJob

CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_FILENAME = f"{CRD_NAME}.yaml"
CHART_TEMPLATE = "templates/crds/ingestionjobs.yaml"

# Keywords of a JSON schema that a structural CRD schema keeps as they are.
_KEPT = {
    "description",
    "type",
    "format",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Summary of the conditions."},
    {
        "name": "Progress",
        "type": "integer",
        "jsonPath": ".status.progress.percent",
        "description": "Processed documents of the current run, in percent.",
    },
    {
        "name": "Documents",
        "type": "integer",
        "jsonPath": ".status.progress.total",
        "description": "Documents discovered in the current run.",
    },
    {
        "name": "Failed",
        "type": "integer",
        "jsonPath": ".status.progress.failed",
        "description": "Documents of the current run that failed.",
    },
    {
        "name": "Workers",
        "type": "integer",
        "jsonPath": ".status.workers.active",
        "description": "Worker pods running now.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema as a structural OpenAPI v3 schema with every $ref inlined."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    definitions = schema.pop("$defs", {})
    return _convert(schema, definitions)


def _convert(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    node = copy.deepcopy(node)
    if "$ref" in node:
        target = definitions[node.pop("$ref").rsplit("/", 1)[-1]]
        # The field's own keywords (description, default) win over the referenced model's.
        node = {**copy.deepcopy(target), **node}
    if "anyOf" in node:
        options = [option for option in node.pop("anyOf") if option.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf with {len(options)} non-null options in a structural schema")
        node = {**options[0], **node}
        if node.get("default", ...) is None:
            del node["default"]
        return _convert(node, definitions)
    if "const" in node:
        node["enum"] = [node.pop("const")]

    result: dict[str, Any] = {key: value for key, value in node.items() if key in _KEPT}
    if "description" in result:
        result["description"] = _unwrap(result["description"])
    if node.get("type") == "object":
        if "properties" in node:
            result["properties"] = {name: _convert(child, definitions) for name, child in node["properties"].items()}
            if "default" in node:
                # Nested defaults fill in an empty object; spelling them out twice would only drift.
                result["default"] = {}
        elif isinstance(node.get("additionalProperties"), dict):
            result["additionalProperties"] = _convert(node["additionalProperties"], definitions)
            if "default" in node:
                result["default"] = node["default"]
            allowed = node.get("propertyNames", {}).get("enum")
            if allowed:
                result["maxProperties"] = len(allowed)
                result.setdefault("x-kubernetes-validations", []).append(
                    {"rule": f"self.all(k, k in {allowed!r})", "message": f"keys must be among {', '.join(allowed)}"}
                )
    elif node.get("type") == "array":
        result["items"] = _convert(node["items"], definitions)
        if "default" in node:
            result["default"] = node["default"]
    elif "default" in node:
        result["default"] = node["default"]
    if "exclusiveMinimum" in node:
        result["minimum"], result["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node:
        result["maximum"], result["exclusiveMaximum"] = node["exclusiveMaximum"], True
    return result


_READ = re.compile(r"\bself\.([A-Za-z_][A-Za-z0-9_]*)")

# Always present on the object the server validates at the root, though the schema does not require them.
_ROOT_FIELDS = {"apiVersion", "kind", "metadata"}


def unguarded_reads(node: dict[str, Any], *, root: bool = False) -> list[tuple[str, str]]:
    """(rule, field) for every rule of this schema node that reads an optional field without `has()`.

    Optional means not in `required`: absent from a user's object, or from a default written as `{}`.
    A guarded read is one whose rule also says `has(self.field)`, as in `!has(self.a) || self.a < 3`.
    """
    present = set(node.get("required", [])) | (_ROOT_FIELDS if root else set())
    fields = set(node.get("properties", {})) - present
    found = []
    for rule in node.get("x-kubernetes-validations", []):
        text = rule["rule"]
        for name in dict.fromkeys(_READ.findall(text)):
            if name in fields and f"has(self.{name})" not in text:
                found.append((text, name))
    return found


def check_rules(schema: dict[str, Any], path: str = "", *, root: bool = True) -> None:
    """Refuse a schema with a rule that would fail on a default or an absent optional field (see module doc)."""
    for rule, name in unguarded_reads(schema, root=root):
        raise ValueError(
            f"{path or '<root>'}: the CEL rule {rule!r} reads self.{name}, which may be absent "
            f"(an optional field, or a default written as {{}}): guard it with has(self.{name})"
        )
    for name, child in schema.get("properties", {}).items():
        check_rules(child, f"{path}.{name}", root=False)
    if "items" in schema:
        check_rules(schema["items"], f"{path}[]", root=False)
    if isinstance(schema.get("additionalProperties"), dict):
        check_rules(schema["additionalProperties"], f"{path}{{}}", root=False)


def _unwrap(text: str) -> str:
    """Docstrings are wrapped for the source file; `kubectl explain` wraps text itself. Keep paragraphs."""
    paragraphs = text.strip().split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in paragraph.splitlines()) for paragraph in paragraphs)


def _status_schema() -> dict[str, Any]:
    status = structural_schema(IngestionJob)["properties"]["status"]
    conditions = status["properties"]["conditions"]
    # Conditions are a map keyed by type (API conventions), so server-side apply merges them by type.
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return dict(status)


def crd() -> dict[str, Any]:
    """The IngestionJob CustomResourceDefinition as a manifest."""
    job = structural_schema(IngestionJob)
    root = {
        "type": "object",
        "description": job["description"],
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "Always headrace.io/v1alpha1."},
            "kind": {"type": "string", "description": "Always IngestionJob."},
            "metadata": {"type": "object"},
            "spec": job["properties"]["spec"],
            "status": _status_schema(),
        },
        "x-kubernetes-validations": [
            {
                # Worker Jobs and pods are named after the IngestionJob and carry its name as a label value.
                "rule": "self.metadata.name.size() <= 63",
                "message": "metadata.name must be at most 63 characters",
            }
        ],
    }
    check_rules(root)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.workers.replicas",
                            "statusReplicasPath": ".status.workers.replicas",
                            "labelSelectorPath": ".status.workers.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


_HEADER = "# Generated from headrace/model by `headrace crd`. Do not edit: change the model and regenerate.\n"


def crd_yaml() -> str:
    """The CRD as the YAML committed in `crds/`."""
    return _HEADER + yaml.safe_dump(crd(), sort_keys=False, width=120, allow_unicode=True)


def chart_template() -> str:
    """The chart's CRD template: the same CRD behind `crds.enabled`, kept on uninstall with `crds.keep`."""
    body = yaml.safe_dump(crd(), sort_keys=False, width=120, allow_unicode=True)
    if "{{" in body:
        raise ValueError("a description contains '{{', which Helm would read as a template action")
    name_line = f"metadata:\n  name: {CRD_NAME}\n"
    keep = (
        "  {{- if .Values.crds.keep }}\n"
        "  annotations:\n"
        "    helm.sh/resource-policy: keep\n"
        "  {{- end }}\n"
        "  labels:\n"
        "    app.kubernetes.io/part-of: headrace\n"
        "    app.kubernetes.io/managed-by: {{ .Release.Service }}\n"
    )
    return _HEADER + "{{- if .Values.crds.enabled }}\n" + body.replace(name_line, name_line + keep, 1) + "{{- end }}\n"
