"""Worker pods as the operator makes them, and tokens as the kubelet projects them, on the real control plane.

No operator and no kubelet: a test creates the IngestionJob, a batch Job controlled by it (as the operator
would), and lets the real Job controller create the pod. Pods stay Pending, which is all a bound token needs.
The worker API asks the API server as its own ServiceAccount, with exactly the rules the chart grants it
(rendered by helm).
"""

import asyncio
import base64
import functools
import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headrace.kubeapi import KubeError, KubeSettings
from headrace.model import API_VERSION, KIND, PLURAL
from tests.chart.conftest import RELEASE, parse, render_text
from tests.kube.controlplane import ControlPlane

AUDIENCE = "headrace-ingest"
TOKEN_SECONDS = 600
"""The shortest expirationSeconds the API server grants (10 minutes)."""


@functools.cache
def ingest_rules() -> list[dict[str, Any]]:
    """The rules of the chart's ClusterRole for the worker API (`<release>-ingest`), rendered by helm:
    tests ask the API server with exactly what the chart grants, so a rule the code needs and the chart
    lacks fails here."""
    roles = [
        doc
        for doc in parse(render_text())
        if doc["kind"] == "ClusterRole" and doc["metadata"]["name"] == f"{RELEASE}-headrace-ingest"
    ]
    assert len(roles) == 1, "the chart renders no ClusterRole for the worker API"
    rules: list[dict[str, Any]] = roles[0]["rules"]
    return rules


@dataclass(frozen=True)
class Worker:
    """A worker pod of one IngestionJob."""

    namespace: str
    ingestion_job: dict[str, Any]
    job: dict[str, Any]
    pod: dict[str, Any]

    @property
    def job_uid(self) -> uuid.UUID:
        return uuid.UUID(self.ingestion_job["metadata"]["uid"])

    @property
    def pod_name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def pod_uid(self) -> str:
        return str(self.pod["metadata"]["uid"])


async def request(
    control_plane: ControlPlane, method: str, path: str, body: object = None, *, content_type: str = "application/json"
) -> Any:
    kube = control_plane.client()
    try:
        return await kube.request(method, path, body, content_type=content_type)
    finally:
        await kube.close()


async def ingest_account(control_plane: ControlPlane, folder: Path) -> Path:
    """A ServiceAccount with the worker API's rules (as the chart binds them); its token, in a file."""
    namespace = await control_plane.create_namespace(prefix="release")
    name = f"ingest-{namespace}"
    control_plane.kubectl("create", "serviceaccount", "headrace-ingest", "--namespace", namespace)
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name}}
    await request(
        control_plane, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", role | {"rules": ingest_rules()}
    )
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "headrace-ingest", "namespace": namespace}],
    }
    await request(control_plane, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
    token = folder / "ingest-token"
    token.write_text(await control_plane.service_account_token(namespace, "headrace-ingest"))
    return token


async def ingest_kube_settings(control_plane: ControlPlane, folder: Path) -> KubeSettings:
    """Where the worker API finds the API server, asking as its own ServiceAccount (`ingest_account`)."""
    control_plane.require_controllers()
    control_plane.install_crd()
    token_file = await ingest_account(control_plane, folder)
    return KubeSettings(kube_api_url=control_plane.url, kube_ca_file=control_plane.ca_file, kube_token_file=token_file)


async def create_ingestion_job(control_plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    body = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {"source": {"volume": {"claimName": "docs", "path": "."}}},
    }
    answer: dict[str, Any] = await request(
        control_plane, "POST", f"/apis/{API_VERSION}/namespaces/{namespace}/{PLURAL}", body
    )
    return answer


def controller_of(owner: dict[str, Any]) -> dict[str, Any]:
    """An ownerReference making `owner` the controller, as the operator writes it on a worker Job."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }


POD_SPEC: dict[str, Any] = {
    "restartPolicy": "Never",
    "containers": [{"name": "worker", "image": "localhost/headrace:never-pulled", "command": ["headrace", "worker"]}],
}


async def create_job(
    control_plane: ControlPlane, namespace: str, name: str, owner: dict[str, Any] | None
) -> dict[str, Any]:
    """A batch Job (controlled by `owner`, when given) whose controller makes one pod."""
    metadata: dict[str, Any] = {"name": name}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {"backoffLimit": 0, "template": {"spec": POD_SPEC}},
    }
    answer: dict[str, Any] = await request(control_plane, "POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", body)
    return answer


async def pod_of(control_plane: ControlPlane, job: dict[str, Any]) -> dict[str, Any]:
    """The pod the Job controller made for the Job (waited for; the test's timeout bounds the wait)."""
    namespace, uid = job["metadata"]["namespace"], job["metadata"]["uid"]
    while True:
        pods = await request(
            control_plane, "GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=controller-uid%3D{uid}"
        )
        if pods["items"]:
            pod: dict[str, Any] = pods["items"][0]
            return pod
        await asyncio.sleep(0.1)


async def create_worker(control_plane: ControlPlane, namespace: str, name: str) -> Worker:
    """An IngestionJob, its worker Job, and the worker pod."""
    ingestion_job = await create_ingestion_job(control_plane, namespace, name)
    job = await create_job(control_plane, namespace, f"{name}-worker", controller_of(ingestion_job))
    return Worker(namespace, ingestion_job, job, await pod_of(control_plane, job))


async def create_pod(control_plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    """A pod of the tenant's own, owned by nothing."""
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": POD_SPEC}
    answer: dict[str, Any] = await request(control_plane, "POST", f"/api/v1/namespaces/{namespace}/pods", body)
    return answer


async def delete_pod(control_plane: ControlPlane, pod: dict[str, Any]) -> None:
    """Deleted now (a pod no node runs goes at once), and waited for until it is gone."""
    path = f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}"
    await request(control_plane, "DELETE", path, {"gracePeriodSeconds": 0})
    while True:
        try:
            found = await request(control_plane, "GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return
            raise
        if found["metadata"]["uid"] != pod["metadata"]["uid"]:
            return
        await asyncio.sleep(0.1)


async def token(
    control_plane: ControlPlane,
    namespace: str,
    *,
    pod: dict[str, Any] | None = None,
    audiences: list[str] | None = None,
    account: str = "default",
) -> str:
    """A ServiceAccount token as `kubectl create token [--audience] [--bound-object-kind Pod ...]` makes it;
    with `pod`, what the kubelet projects into that pod."""
    spec: dict[str, Any] = {"expirationSeconds": TOKEN_SECONDS}
    if audiences is not None:
        spec["audiences"] = audiences
    if pod is not None:
        spec["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod["metadata"]["name"],
            "uid": pod["metadata"]["uid"],
        }
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    answer = await request(
        control_plane, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", body
    )
    return str(answer["status"]["token"])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _part(token_: str, index: int) -> dict[str, Any]:
    part = token_.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def claims(token_: str) -> dict[str, Any]:
    return _part(token_, 1)


def resign(control_plane: ControlPlane, token_: str, **changes: Any) -> str:
    """The same token with some claims changed, signed with the cluster's own ServiceAccount key.

    What the API server would have issued with other times: e.g. the token as it is after it expired.
    """
    signing_input = (
        f"{_b64(json.dumps(_part(token_, 0)).encode())}.{_b64(json.dumps(claims(token_) | changes).encode())}"
    )
    key = control_plane.workdir / "certs" / "sa.key"
    signed = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(key)], input=signing_input.encode(), capture_output=True, check=True
    )
    return f"{signing_input}.{_b64(signed.stdout)}"
