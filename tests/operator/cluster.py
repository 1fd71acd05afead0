"""The Kubernetes API the operator tests run against: kmock's emulator, or the session's real control plane.

The real one (tests/kube/controlplane.py) runs the Job, garbage-collector and namespace controllers, so
tests there also check what a cluster does after the operator: pods, owner-reference GC, namespace
deletion. The operator talks to it as the chart's operator ServiceAccount, with the chart's RBAC.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import yaml

from headrace.operator.kube import KubeClient, Resource
from tests.chart.conftest import CHART, helm
from tests.kube.controlplane import ControlPlane, write_kubeconfig

IJS = Resource("headrace.io/v1alpha1", "ingestionjobs")
TOKEN = "headrace-test-token"
"""What the emulator is sent as a bearer token (it checks none)."""

OPERATOR_RELEASE = "optest"
"""Release name the chart's operator RBAC is rendered under; not `hr`, so a chart test can install `hr`."""


@dataclass
class Cluster:
    """One API server for one test: a client, a kubeconfig for kopf, and a namespace of its own."""

    kube: KubeClient
    kubeconfig: Path
    namespace: str
    emulated: bool
    plane: ControlPlane | None = None

    async def create(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        body["metadata"]["namespace"] = self.namespace
        if self.emulated:
            # What a real API server adds on create and the emulator does not (kopf's patches test
            # resourceVersion); a real server assigns its own uid.
            body["metadata"].setdefault("resourceVersion", "1")
            body["metadata"].setdefault("creationTimestamp", "2026-11-23T12:00:00Z")
        else:
            body["metadata"].pop("uid", None)
        created, _ = await self.kube.ensure(resource, body)
        return created

    async def get(self, resource: Resource, name: str) -> dict[str, Any] | None:
        return await self.kube.get(resource, self.namespace, name)


def client_for(server: str) -> KubeClient:
    """A client of the emulator."""
    return KubeClient(kopf.ConnectionInfo(server=server, token=TOKEN))


def emulator_kubeconfig(path: Path, server: str) -> Path:
    return write_kubeconfig(path, server, TOKEN)


def chart_operator_kubeconfig(plane: ControlPlane, path: Path) -> Path:
    """The chart's operator ServiceAccount, ClusterRole and binding on the server (rendered by the real
    helm), and a kubeconfig with a token of that ServiceAccount: the operator gets what the chart grants."""
    namespace = f"{OPERATOR_RELEASE}-system"
    rendered = helm(
        "template", OPERATOR_RELEASE, str(CHART), "--namespace", namespace,
        "--show-only", "templates/operator/serviceaccount.yaml", "--show-only", "templates/operator/rbac.yaml",
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    account = next(
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(rendered.stdout)
        if doc and doc["kind"] == "ServiceAccount"
    )
    if not plane.kubectl("get", "namespace", namespace, "--ignore-not-found", "-o", "name").stdout.strip():
        plane.kubectl("create", "namespace", namespace)
    plane.kubectl("apply", "--namespace", namespace, "-f", "-", input=rendered.stdout)
    token = plane.kubectl("create", "token", account, "--namespace", namespace, "--duration=2h").stdout.strip()
    return write_kubeconfig(path, plane.url, token, ca_file=plane.ca_file)
