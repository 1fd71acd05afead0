"""The IngestionJob CRD on a real kube-apiserver with CEL validation on (tests/kube/controlplane.py).

kmock's emulator and jsonschema check our reading of the schema; these check the server's: the CRD is
accepted (its rules compile and hold on their defaults), every sample manifest applies, and one
invalid manifest per validation rule, schema keyword or CEL, is refused naming the field.
"""

import copy
import itertools
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from headrace.kubeapi import KubeError
from headrace.model.crd import PRINTER_COLUMNS, crd
from headrace.operator.kube import KubeClient
from tests.kube.controlplane import ControlPlane
from tests.operator.cluster import IJS
from tests.operator.test_crd import SAMPLES, sample_manifests

pytestmark = pytest.mark.timeout(300)

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
SCHEMA: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
BASE_SPEC = {"source": {"volume": {"claimName": "docs"}}}


@pytest.fixture(scope="module")
async def namespace(control_plane: ControlPlane) -> str:
    control_plane.install_crd()
    return await control_plane.create_namespace(prefix="crd")


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[KubeClient]:
    client = control_plane.client()
    yield client
    await client.close()


async def test_server_keeps_the_crd_as_generated(control_plane: ControlPlane, kube: KubeClient) -> None:
    """Rules, subresources and columns survive: with the CEL gate off, v1.24 drops the rules silently."""
    control_plane.install_crd()
    generated = crd()
    stored = await kube.request("GET", f"{CRDS}/{generated['metadata']['name']}")
    assert stored["spec"]["versions"] == generated["spec"]["versions"]
    version = stored["spec"]["versions"][0]
    assert set(version["subresources"]) == {"status", "scale"}
    assert version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["workers"][
        "x-kubernetes-validations"
    ]


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_samples_apply_server_side(control_plane: ControlPlane, namespace: str, path: Path) -> None:
    for document in sample_manifests(path):
        document["metadata"]["namespace"] = namespace
        applied = control_plane.kubectl("apply", "--server-side", "-f", "-", input=_yaml(document))
        assert "serverside-applied" in applied.stdout
        name = document["metadata"]["name"]
        stored = control_plane.kubectl("get", "ij", name, "-n", namespace, "-o", "jsonpath={.spec.workers.min}")
        assert stored.stdout.strip() == str(document["spec"].get("workers", {}).get("min", 1))  # defaults filled


def test_get_shows_the_printer_columns(control_plane: ControlPlane, namespace: str) -> None:
    document = {"apiVersion": "headrace.io/v1alpha1", "kind": "IngestionJob", "metadata": {"name": "columns"}}
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=_yaml({**document, "spec": BASE_SPEC}))
    header = control_plane.kubectl("get", "ij", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", *(column["name"].upper() for column in PRINTER_COLUMNS)]


def test_explain_shows_the_field_descriptions(control_plane: ControlPlane, namespace: str) -> None:
    explained = control_plane.kubectl("explain", "ingestionjob.spec.workers").stdout
    workers = SCHEMA["properties"]["spec"]["properties"]["workers"]
    assert workers["description"] in explained
    text = " ".join(explained.split())  # kubectl wraps the descriptions at its own width
    for name, field in workers["properties"].items():
        assert re.search(rf"^\s+{name}\s+<", explained, re.MULTILINE), f"{name} missing:\n{explained}"
        assert " ".join(field["description"].split()) in text, name


# --- one invalid manifest per rule -----------------------------------------------------------------

Path_ = tuple[str | int, ...]


def _child(node: dict[str, Any], segment: str | int) -> dict[str, Any]:
    if isinstance(segment, int):
        return node["items"]  # type: ignore[no-any-return]
    if segment in node.get("properties", {}):
        return node["properties"][segment]  # type: ignore[no-any-return]
    return node["additionalProperties"]  # type: ignore[no-any-return]


def _valid(schema: dict[str, Any]) -> Any:
    """A small valid value of the schema: its default, or its required fields with valid values."""
    if "default" in schema:
        return copy.deepcopy(schema["default"])
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema["type"]
    if kind == "object":
        return {name: _valid(schema["properties"][name]) for name in schema.get("required", [])}
    if kind == "array":
        return [_valid(schema["items"]) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        candidates = ["docs", "https://example.com/a", "500m", "english"]
        return next(c for c in candidates if re.search(schema.get("pattern", ""), c))
    return schema.get("minimum", 0) + (1 if schema.get("exclusiveMinimum") else 0)


def _spec_with(path: Path_, value: Any) -> dict[str, Any]:
    """BASE_SPEC (or a spec choosing the source on `path`) with `value` placed at `path`."""
    spec: dict[str, Any] = copy.deepcopy(BASE_SPEC) if path[0] != "source" else {"source": {}}
    container: Any = spec
    node = SCHEMA["properties"]["spec"]
    for segment, following in itertools.pairwise(path):
        node = _child(node, segment)
        if isinstance(container, list):
            container.append(_valid(node))
        elif segment not in container:
            container[segment] = [] if isinstance(following, int) else _valid(node)
        container = container[segment]
    if isinstance(container, list):
        container.append(value)
    else:
        container[path[-1]] = value
    return spec


def _violations(node: dict[str, Any], path: Path_) -> Iterator[tuple[str, Path_, Any]]:
    """(keyword, path, value) breaking each schema keyword of `node` at `path` under spec."""
    if "minimum" in node:
        yield "minimum", path, node["minimum"] - (0 if node.get("exclusiveMinimum") else 1)
    if "maximum" in node:
        yield "maximum", path, node["maximum"] + (0 if node.get("exclusiveMaximum") else 1)
    if node.get("minLength", 0) > 0:
        yield "minLength", path, ""
    if "maxLength" in node:
        yield "maxLength", path, "a" * (node["maxLength"] + 1)
    if "pattern" in node:
        yield "pattern", path, "Not Valid!"
    if "enum" in node and node["type"] == "string":
        yield "enum", path, "NotAnOption"
    if node.get("minItems", 0) > 0:
        yield "minItems", path, []
    if "maxItems" in node:
        yield "maxItems", path, [_valid(node["items"])] * (node["maxItems"] + 1)
    if node.get("minProperties", 0) > 0:
        yield "minProperties", path, {}
    if "maxProperties" in node:
        keys = list(node.get("properties", {})) or ["cpu", "memory", "ephemeral-storage", "gpu"]
        yield "maxProperties", path, {key: {} if "properties" in node else "1" for key in keys}
    for name in node.get("required", []):
        yield "required", (*path, name), None
    for name, child in node.get("properties", {}).items():
        yield from _violations(child, (*path, name))
    if "items" in node:
        yield from _violations(node["items"], (*path, 0))
    if isinstance(node.get("additionalProperties"), dict):
        yield from _violations(node["additionalProperties"], (*path, "cpu"))


def _field(path: Path_) -> str:
    return "spec" + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in path)


def _schema_cases() -> list[Any]:
    cases = []
    for keyword, path, value in _violations(SCHEMA["properties"]["spec"], ()):
        if keyword == "required":
            spec = _spec_with(path, None)
            parent: Any = spec
            for segment in path[:-1]:
                parent = parent[segment]
            del parent[path[-1]]
        else:
            spec = _spec_with(path, value)
        cases.append(pytest.param(spec, f"{_field(path)}:", id=f"{_field(path)}-{keyword}"))
    return cases


SCHEMA_CASES = _schema_cases()

# Each CEL rule (x-kubernetes-validations), broken alone: (spec, the field the server names, message).
CEL_CASES = [
    ({"source": {}}, "spec.source", "set exactly one source (volume, http, s3)"),
    ({"source": {"volume": {}, "s3": {"bucket": "docs"}}}, "spec.source", "set exactly one source (volume, http, s3)"),
    ({"source": {"http": {}}}, "spec.source.http", "set urls, sitemaps or both"),
    ({**BASE_SPEC, "chunking": {"overlap": 800}}, "spec.chunking", "overlap must be at most half of targetSize"),
    ({**BASE_SPEC, "workers": {"min": 5}}, "spec.workers", "min must not exceed max"),
    ({**BASE_SPEC, "embedding": {"provider": "endpoint"}}, "spec.embedding", "provider endpoint needs endpoint"),
    (
        {**BASE_SPEC, "workers": {"resources": {"requests": {"gpu": "1"}}}},
        "spec.workers.resources.requests",
        "keys must be among cpu, memory, ephemeral-storage",
    ),
    (
        {**BASE_SPEC, "workers": {"resources": {"limits": {"gpu": "1"}}}},
        "spec.workers.resources.limits",
        "keys must be among cpu, memory, ephemeral-storage",
    ),
]


def test_every_rule_has_a_case() -> None:
    """A new CEL rule needs a case above (schema keywords get theirs from _violations)."""
    rules = {
        (path, rule["message"]) for path, node in _nodes(SCHEMA) for rule in node.get("x-kubernetes-validations", [])
    }
    covered = {(field, message) for _, field, message in CEL_CASES}
    assert rules == covered | {("", "metadata.name must be at most 63 characters")}
    assert len(SCHEMA_CASES) > 50


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}".lstrip("."))
    if "items" in node:
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}{{}}")


async def _refusal(kube: KubeClient, namespace: str, spec: dict[str, Any], name: str = "bad") -> str:
    body = {"apiVersion": "headrace.io/v1alpha1", "kind": "IngestionJob", "metadata": {"name": name}, "spec": spec}
    with pytest.raises(KubeError) as refused:
        await kube.request("POST", IJS.path(namespace) + "?dryRun=All", body)
    assert refused.value.status == 422, refused.value
    return str(refused.value)


@pytest.mark.parametrize(("spec", "field"), SCHEMA_CASES)
async def test_schema_rule_refused_naming_the_field(
    kube: KubeClient, namespace: str, spec: dict[str, Any], field: str
) -> None:
    message = await _refusal(kube, namespace, spec)
    # v1.24 names an array item's field without its index (`tolerations.operator`); newer servers with it.
    assert field in message or field.replace("[0]", "") in message


@pytest.mark.parametrize(("spec", "field", "rule"), CEL_CASES)
def test_cel_rule_refused_by_kubectl_apply_naming_the_field(
    control_plane: ControlPlane, namespace: str, spec: dict[str, Any], field: str, rule: str
) -> None:
    body = {"apiVersion": "headrace.io/v1alpha1", "kind": "IngestionJob", "metadata": {"name": "bad"}, "spec": spec}
    refused = control_plane.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", "-", input=_yaml(body), check=False
    )
    assert refused.returncode != 0
    assert f"{field}: Invalid value" in refused.stderr, refused.stderr
    assert rule in refused.stderr


async def test_the_root_rule_refuses_a_long_name(kube: KubeClient, namespace: str) -> None:
    message = await _refusal(kube, namespace, BASE_SPEC, name="x" * 64)
    assert "metadata.name must be at most 63 characters" in message


def _yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document)
