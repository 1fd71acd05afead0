"""The generated CRD: committed copies are fresh, the schema is structural, and it agrees with the model."""

import copy
import itertools
import re
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from headrace.cli import main
from headrace.model import InvalidManifest, Source, parse_manifest
from headrace.model.crd import CHART_TEMPLATE, CRD_FILENAME, chart_template, check_rules, crd, crd_yaml

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "stale: run `headrace crd --chart charts/headrace` and commit the result"

# What a structural schema may not contain (apiextensions.k8s.io/v1 rejects or ignores these).
FORBIDDEN = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "const", "title", "propertyNames"}


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def validate(document: dict[str, Any]) -> None:
    """Check a manifest against the openAPIV3Schema (OpenAPI v3.0 is JSON Schema draft 4 in this respect)."""
    jsonschema.Draft4Validator(_schema()).validate(document)


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found += _walk(child, f"{path}.{name}")
    if "items" in node:
        found += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_committed_crd_is_fresh() -> None:
    assert (ROOT / "crds" / CRD_FILENAME).read_text() == crd_yaml(), REGENERATE


def test_committed_chart_template_is_fresh() -> None:
    assert (ROOT / "charts" / "headrace" / CHART_TEMPLATE).read_text() == chart_template(), REGENERATE


def test_cli_writes_both_copies(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["crd", "-o", str(tmp_path / "crds"), "--chart", str(tmp_path / "chart")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "crds" / CRD_FILENAME).read_text() == crd_yaml()
    assert (tmp_path / "chart" / CHART_TEMPLATE).read_text() == chart_template()


def test_schema_is_structural() -> None:
    for path, node in _walk(_schema()):
        assert not FORBIDDEN & node.keys(), f"{path}: {FORBIDDEN & node.keys()}"
        assert "type" in node, f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        # OpenAPI v3.0, as Kubernetes reads it: exclusive bounds are flags beside minimum/maximum.
        for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
            assert node.get(flag, True) is True and (flag not in node or bound in node), f"{path}: {flag}"
        if path.startswith(".spec") and path != ".spec":
            assert node.get("description") or path.endswith(("[]", "{}")), f"{path} has no description"


def test_schema_carries_bounds_enums_defaults_and_required() -> None:
    spec = _schema()["properties"]["spec"]
    assert spec["required"] == ["source"]
    chunking = spec["properties"]["chunking"]
    assert chunking["default"] == {}
    assert chunking["properties"]["targetSize"] | {"description": ""} == {
        "type": "integer",
        "minimum": 100,
        "maximum": 20_000,
        "default": 1500,
        "description": "",
    }
    assert chunking["properties"]["boundary"]["enum"] == ["paragraph", "sentence", "none"]
    assert spec["properties"]["retention"]["default"] == "Retain"
    replicas = spec["properties"]["workers"]["properties"]["replicas"]
    # The API server fills it in, so /scale has a value to read without the operator writing the spec.
    assert replicas["default"] == 1 and replicas["type"] == "integer"
    source = spec["properties"]["source"]
    assert source["maxProperties"] == 1
    counted = " + ".join(f"(has(self.{name}) ? 1 : 0)" for name in Source.model_fields)
    assert source["x-kubernetes-validations"][0]["rule"] == f"{counted} == 1"
    conditions = _schema()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["required"] == ["type", "status", "reason"]


def test_names_subresources_and_columns() -> None:
    spec = crd()["spec"]
    assert spec["names"]["shortNames"] == ["ij"] and spec["names"]["categories"] == ["headrace"]
    version = spec["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.workers.replicas",
        "statusReplicasPath": ".status.workers.replicas",
        "labelSelectorPath": ".status.workers.selector",
    }
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Progress", "Documents", "Failed", "Workers", "Age"]


def test_chart_template_is_guarded_and_kept() -> None:
    text = chart_template()
    lines = text.splitlines()
    assert lines[1] == "{{- if .Values.crds.enabled }}" and lines[-1] == "{{- end }}"
    assert "  {{- if .Values.crds.keep }}\n  annotations:\n    helm.sh/resource-policy: keep\n" in text


EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def sample_manifests(path: Path) -> list[dict[str, Any]]:
    """The IngestionJobs in a YAML file, or in the ```yaml blocks of a Markdown page."""
    text = path.read_text()
    if path.suffix == ".md":
        text = "\n---\n".join(block.split("\n```", 1)[0] for block in text.split("```yaml\n")[1:])
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict) and doc.get("kind") == "IngestionJob"]


SAMPLES = [*EXAMPLES, ROOT / "README.md", ROOT / "docs" / "getting-started.md", ROOT / "docs" / "operator.md"]
"""Every file a user copies an IngestionJob from."""


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_samples_match_crd_schema_and_model(path: Path) -> None:
    manifests = sample_manifests(path)
    assert manifests, f"{path} holds no IngestionJob"
    for document in manifests:
        validate(document)
        parse_manifest(document, origin=str(path))


def test_examples_exist() -> None:
    assert EXAMPLES, "examples/ holds no manifests"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"source": {}}, "source"),
        ({"source": {"volume": {}}, "chunking": {"targetSize": 10}}, "targetSize"),
        ({"source": {"volume": {}}, "retention": "Forever"}, "retention"),
        ({"source": {"volume": {}}, "workers": {"max": 0}}, "max"),
        ({"source": {"volume": {}}, "workers": {"resources": {"requests": {"cpu": "lots"}}}}, "cpu"),
        ({"source": {"http": {"urls": ["ftp://example.com/a.txt"]}}}, "urls"),
        ({"source": {"s3": {"bucket": "Not_A_Bucket"}}}, "bucket"),
        ({"source": {"volume": {}}, "limits": {"maxNestingDepth": 11}}, "maxNestingDepth"),
        ({"source": {"volume": {}}, "schedule": "0 0 * * * *"}, "schedule"),  # six fields: refused at admission
        ({"source": {"volume": {}}, "schedule": "every tuesday"}, "schedule"),
    ],
)
def test_bad_specs_fail_schema_and_model(spec: dict[str, Any], field: str) -> None:
    manifest = {"apiVersion": "headrace.io/v1alpha1", "kind": "IngestionJob", "metadata": {"name": "x"}, "spec": spec}
    with pytest.raises(jsonschema.ValidationError) as schema_error:
        validate(manifest)
    assert field in str(schema_error.value.path) + schema_error.value.message
    with pytest.raises(InvalidManifest, match=field):
        parse_manifest(manifest)


def _default(schema: dict[str, Any], value: Any) -> Any:
    """Apply the schema's defaults the way the API server does before it validates."""
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = _default(child, value[name])
    elif isinstance(value, list) and "items" in schema:
        return [_default(schema["items"], item) for item in value]
    return value


def _cel_failures(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Messages of the x-kubernetes-validations rules that `value` breaks, evaluated with a CEL interpreter."""
    failures = []
    for rule in schema.get("x-kubernetes-validations", []):
        program = CEL.program(CEL.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(value)}):
            failures.append(f"{path or '<root>'}: {rule['message']}")
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                failures += _cel_failures(child, value[name], f"{path}.{name}")
    return failures


CEL = celpy.Environment()


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_samples_pass_the_cel_rules(path: Path) -> None:
    for document in sample_manifests(path):
        document = _default(_schema(), copy.deepcopy(document))
        assert _cel_failures(_schema(), document) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"source": {}}, "set exactly one source"),
        ({"source": {"volume": {}}, "chunking": {"targetSize": 200, "overlap": 150}}, "overlap must be at most half"),
        ({"source": {"volume": {}}, "workers": {"min": 5, "max": 2}}, "min must not exceed max"),
        ({"source": {"volume": {}}, "workers": {"resources": {"limits": {"gpu": "1"}}}}, "keys must be among"),
        ({"source": {"http": {}}}, "set urls, sitemaps or both"),
        ({"source": {"volume": {}, "s3": {"bucket": "docs"}}}, "set exactly one source"),
    ],
)
def test_cel_rules_catch_what_the_model_rejects(spec: dict[str, Any], message: str) -> None:
    manifest = {"apiVersion": "headrace.io/v1alpha1", "kind": "IngestionJob", "metadata": {"name": "x"}, "spec": spec}
    failures = _cel_failures(_schema(), _default(_schema(), copy.deepcopy(manifest)))
    assert any(message in failure for failure in failures), failures
    with pytest.raises(InvalidManifest):
        parse_manifest(manifest)


def test_long_names_break_the_root_rule() -> None:
    manifest = {"metadata": {"name": "x" * 64}, "spec": {"source": {"volume": {}}}}
    assert _cel_failures(_schema(), manifest) == ["<root>: metadata.name must be at most 63 characters"]


# --- Every rule is safe where the API server evaluates it before any user object exists ---------------

_ROOT_SAMPLE = {"apiVersion": "headrace.io/v1alpha1", "kind": "IngestionJob", "metadata": {"name": "x"}}


def _sample(schema: dict[str, Any]) -> Any:
    """A small value of the schema's type with only its required fields."""
    if "default" in schema:
        return copy.deepcopy(schema["default"])
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: _sample(properties[name]) for name in schema.get("required", [])}
    if kind == "array":
        return [_sample(schema["items"]) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "a" * max(schema.get("minLength", 1), 1)
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    return False


def _evaluate(rule: str, value: Any) -> Any:
    """The rule's result, or the CELEvalError it raised (what the server reports as e.g. `no such key`)."""
    try:
        return CEL.program(CEL.compile(rule)).evaluate({"self": celpy.json_to_cel(value)})
    except celpy.CELEvalError as exc:
        return exc


def unsafe_rules(schema: dict[str, Any]) -> list[str]:
    """What the API server would refuse the CRD for, or hit on a user object, evaluated with cel-python:

    - a rule that errs or is false on a schema `default` as written (nested defaults not filled in);
    - a rule that errs on an object holding its required fields and any subset of the optional fields the
      rule reads (an absent optional field must be guarded with has()).
    """
    found = []
    for path, node in _walk(schema):
        if "default" in node:
            found += [f"default of {failure}" for failure in _rule_problems(node, node["default"], path or "<root>")]
        optional = (
            set(node.get("properties", {})) - set(node.get("required", [])) - (set() if path else {*_ROOT_SAMPLE})
        )
        for rule in node.get("x-kubernetes-validations", []):
            reads = sorted({name for name in re.findall(r"self\.(\w+)", rule["rule"]) if name in optional})
            for size in range(len(reads) + 1):
                for present in itertools.combinations(reads, size):
                    value = {**(_ROOT_SAMPLE if not path else {}), **_sample(_without_default(node))}
                    value |= {name: _sample(node["properties"][name]) for name in present}
                    result = _evaluate(rule["rule"], value)
                    if isinstance(result, celpy.CELEvalError):
                        where = f"{path or '<root>'}: {rule['rule']!r} with only {sorted(value)} set"
                        found.append(f"{where}: {result.args[0]}")
    return found


def _without_default(schema: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in schema.items() if key != "default"}


def _rule_problems(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    """Rules of the schema (and of its children present in value) that err or are false on value."""
    problems = []
    for rule in schema.get("x-kubernetes-validations", []):
        result = _evaluate(rule["rule"], value)
        if isinstance(result, celpy.CELEvalError):
            problems.append(f"{path}: {rule['rule']!r}: {result.args[0]}")
        elif not result:
            problems.append(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                problems += _rule_problems(child, value[name], f"{path}.{name}")
    return problems


def test_every_rule_is_safe_on_defaults_and_absent_optional_fields() -> None:
    assert unsafe_rules(_schema()) == []


UNGUARDED = {
    "type": "object",
    "default": {},
    "properties": {"min": {"type": "integer", "default": 1}, "max": {"type": "integer", "default": 4}},
    "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}],
}


def test_an_unguarded_rule_is_found_by_evaluation_and_refused_by_the_generator() -> None:
    found = unsafe_rules(UNGUARDED)
    assert found[0] == "default of <root>: 'self.min <= self.max': no such member in mapping: 'min'"
    assert found[1].endswith("set: no such member in mapping: 'min'")
    with pytest.raises(ValueError, match=r"reads self.min, .* guard it with has\(self.min\)"):
        check_rules(UNGUARDED)
    half_guarded = {**UNGUARDED, "x-kubernetes-validations": [{"rule": "!has(self.min) || self.min <= self.max"}]}
    assert [f for f in unsafe_rules(half_guarded) if f.endswith("'min'] set: no such member in mapping: 'max'")]
    with pytest.raises(ValueError, match=r"guard it with has\(self.max\)"):
        check_rules(half_guarded)
