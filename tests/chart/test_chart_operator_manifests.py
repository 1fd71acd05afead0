"""What the operator creates at run time meets the chart's bar: restricted pods, valid Kubernetes objects,
and an external metric the chart's prometheus-adapter rule actually provides."""

import os
from typing import Any

import kubernetes_validate
import pydantic
import pytest
import yaml

from headrace.model import IngestionJob, load_manifest
from headrace.operator.resources.hpa import EXTERNAL_METRIC, build_hpa
from headrace.operator.resources.job import WorkerPodSettings, build_worker_job
from headrace.operator.resources.podsecurity import restricted_violations
from headrace.operator.settings import OperatorSettings
from tests.chart.conftest import EVERYTHING, ROOT, Render
from tests.chart.test_chart_security import KUBERNETES_VERSIONS

DEFAULT_PODS = WorkerPodSettings()

SPECS: dict[str, dict[str, Any]] = {
    "defaults": {"source": {"volume": {"claimName": "docs"}}},
    "everything": {
        "source": {"volume": {"claimName": "docs", "path": "handbook", "include": ["**/*.md"]}},
        "workers": {
            "min": 0,
            "max": 8,
            "replicas": 3,
            "nodeSelector": {"pool": "batch"},
            "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
            "autoscaling": {"tasksPendingPerWorker": 20},
        },
        "activeDeadlineSeconds": 3600,
        "suspend": False,
    },
}


# Every shipped example too: they cover the HTTP and S3 sources, whose Secrets are mounted as volumes.
for example in sorted((ROOT / "examples").glob("*.yaml")):
    SPECS[example.stem] = load_manifest(example).spec.to_wire()


def ingestion_job(spec: dict[str, Any]) -> IngestionJob:
    return IngestionJob.model_validate(
        {
            "metadata": {"name": "handbook", "namespace": "docs-team", "uid": "6f1c1f5e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"},
            "spec": spec,
        }
    )


def worker_job(spec: dict[str, Any], pods: WorkerPodSettings = DEFAULT_PODS) -> dict[str, Any]:
    return build_worker_job(
        ingestion_job(spec),
        run=1,
        image="ghcr.io/headrace/headrace:0.1.0",
        pods=pods,
        ingest_url="http://hr-headrace-ingest.headrace.svc:8081",
        ingest_audience="headrace-ingest",
        backoff_limit=6,
        ttl_seconds_after_finished=86_400,
    )


@pytest.mark.parametrize("name", SPECS)
def test_worker_pods_are_restricted(name: str) -> None:
    assert restricted_violations(worker_job(SPECS[name])["spec"]["template"]["spec"]) == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", SPECS)
def test_operator_children_match_the_kubernetes_schema(name: str, version: str) -> None:
    for manifest in (worker_job(SPECS[name]), build_hpa(ingestion_job(SPECS[name]))):
        kubernetes_validate.validate(manifest, version, strict=True)


def test_the_adapter_rule_serves_the_metric_the_hpa_asks_for(render: Render) -> None:
    hpa = build_hpa(ingestion_job(SPECS["everything"]))
    (external,) = [m["external"]["metric"] for m in hpa["spec"]["metrics"] if m["type"] == "External"]
    (config_map,) = [o for o in render(EVERYTHING) if o["kind"] == "ConfigMap" and "rules.yaml" in o.get("data", {})]
    (rule,) = yaml.safe_load(config_map["data"]["rules.yaml"])
    assert external["name"] == EXTERNAL_METRIC == rule["name"]["as"]
    for label in external["selector"]["matchLabels"]:
        assert f'{label}!=""' in rule["seriesQuery"], f"the HPA selects on {label}, which the rule does not keep"


def chart_worker_pods(objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> WorkerPodSettings:
    """The worker pod settings `headrace operator` makes of the environment the chart gives it."""
    (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for name in [n for n in os.environ if n.startswith("HEADRACE_")]:
        monkeypatch.delenv(name)
    for env in container["env"]:
        if "value" in env:
            monkeypatch.setenv(env["name"], env["value"])
    # The database URL comes from a Secret reference, which the rendered manifest cannot resolve.
    return OperatorSettings(database_url="postgresql://unused/x").worker_pods()


def test_chart_defaults_are_the_operators_built_in_worker_pods(render: Render, monkeypatch: pytest.MonkeyPatch) -> None:
    assert chart_worker_pods(render(), monkeypatch) == DEFAULT_PODS


def test_chart_worker_values_reach_the_worker_pods(render: Render, monkeypatch: pytest.MonkeyPatch) -> None:
    values = yaml.safe_load(EVERYTHING.read_text())["worker"]
    pods = chart_worker_pods(render(EVERYTHING), monkeypatch)
    manifest = worker_job(SPECS["defaults"], pods=pods)
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["imagePullPolicy"] == values["image"]["pullPolicy"]
    assert pod["imagePullSecrets"] == values["imagePullSecrets"]
    assert pod["serviceAccountName"] == values["serviceAccountName"]
    assert pod["securityContext"] == values["podSecurityContext"]
    assert container["securityContext"] == values["securityContext"]
    assert container["resources"] == values["resources"]
    assert restricted_violations(pod) == []
    kubernetes_validate.validate(manifest, KUBERNETES_VERSIONS[-1], strict=True)


def test_chart_worker_values_that_break_restricted_stop_the_operator(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The values schema lets through what only the operator's check catches, and that check fires."""
    objects = render(sets=("worker.securityContext.capabilities.drop={NET_RAW}",))
    with pytest.raises(pydantic.ValidationError, match="capabilities must drop ALL"):
        chart_worker_pods(objects, monkeypatch)


def test_chart_worker_resources_may_be_plain_numbers(render: Render, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cpu: 2` (a YAML number, as many values files write it) means the quantity "2", as in Kubernetes."""
    objects = render(sets=("worker.resources.requests.cpu=2", "worker.resources.limits.cpu=2.5"))
    pods = chart_worker_pods(objects, monkeypatch)
    assert pods.resources.to_wire() == {
        "requests": {"cpu": "2", "memory": "512Mi"},
        "limits": {"cpu": "2.5", "memory": "1Gi"},
    }
