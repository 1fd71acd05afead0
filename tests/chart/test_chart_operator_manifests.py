"""What the operator creates at run time meets the chart's bar: restricted pods, valid Kubernetes objects,
and an external metric the chart's prometheus-adapter rule actually provides."""

from typing import Any

import kubernetes_validate
import pytest
import yaml

from headrace.model import IngestionJob, load_manifest
from headrace.operator.resources.hpa import EXTERNAL_METRIC, build_hpa
from headrace.operator.resources.job import build_worker_job
from tests.chart.conftest import EVERYTHING, ROOT, Render
from tests.chart.podsecurity import restricted_violations
from tests.chart.test_chart_security import KUBERNETES_VERSIONS

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


def worker_job(spec: dict[str, Any]) -> dict[str, Any]:
    return build_worker_job(
        ingestion_job(spec),
        run=1,
        image="ghcr.io/headrace/headrace:0.1.0",
        database_secret="headrace-database",
        database_secret_key="DATABASE_URL",
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
    (config_map,) = [o for o in render(EVERYTHING) if o["kind"] == "ConfigMap"]
    (rule,) = yaml.safe_load(config_map["data"]["rules.yaml"])
    assert external["name"] == EXTERNAL_METRIC == rule["name"]["as"]
    for label in external["selector"]["matchLabels"]:
        assert f'{label}!=""' in rule["seriesQuery"], f"the HPA selects on {label}, which the rule does not keep"
