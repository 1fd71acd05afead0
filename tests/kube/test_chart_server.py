"""Every object of the chart, as rendered by the real helm, is accepted by the real kube-apiserver.

A server-side dry run (`kubectl apply --dry-run=server`) into a namespace enforcing Pod Security
"restricted": the server validates each object against its own schemas and admission, and warns of
every pod template "restricted" would refuse. Both fail the test with the server's own message.
Installing the chart and running it is the end-to-end test's part (tests/e2e).
"""

from pathlib import Path

import pytest
import yaml

from tests.chart.conftest import CHART, EVERYTHING, helm
from tests.kube.controlplane import RESTRICTED, ControlPlane

pytestmark = pytest.mark.timeout(180)

NOT_SERVED = {"monitoring.coreos.com/v1"}
"""API groups the chart may render that a bare control plane does not serve (prometheus-operator's CRDs)."""


@pytest.mark.parametrize("values", [None, EVERYTHING], ids=["default", "everything"])
async def test_every_chart_object_is_accepted(control_plane: ControlPlane, values: Path | None) -> None:
    namespace = await control_plane.create_namespace(labels=RESTRICTED, prefix="chart")
    rendered = helm(
        "template", "hr", str(CHART), "--namespace", namespace, *(["--values", str(values)] if values else [])
    )
    assert rendered.returncode == 0, rendered.stderr
    objects = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    served = [doc for doc in objects if doc["apiVersion"] not in NOT_SERVED]
    assert {doc["kind"] for doc in served} >= {"Deployment", "ClusterRole", "CustomResourceDefinition", "Job"}
    applied = control_plane.kubectl(
        "apply", "--dry-run=server", "--namespace", namespace, "-f", "-", input=yaml.safe_dump_all(served), check=False
    )
    assert applied.returncode == 0, f"the API server refused a chart object:\n{applied.stderr}"
    violations = [line for line in applied.stderr.splitlines() if "would violate PodSecurity" in line]
    assert not violations, "\n".join(violations)
    assert applied.stdout.count("(server dry run)") == len(served)
