"""The session's control plane does what tests rely on: admin access, kubectl, namespaces, tokens, controllers."""

import asyncio

import pytest

from headrace.kubeapi import KubeError
from headrace.operator.kube import JOBS
from tests.kube.controlplane import RESTRICTED, ControlPlane

pytestmark = pytest.mark.timeout(180)


async def test_kubectl_and_client_reach_the_server(control_plane: ControlPlane) -> None:
    namespace = await control_plane.create_namespace(labels=RESTRICTED)
    shown = control_plane.kubectl("get", "namespace", namespace, "-o", "jsonpath={.metadata.labels}")
    assert '"pod-security.kubernetes.io/enforce":"restricted"' in shown.stdout
    kube = control_plane.client()
    try:
        found = await kube.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
        assert found["metadata"]["name"] == "default"
    finally:
        await kube.close()


async def test_pod_security_restricted_refuses_a_pod_without_a_security_context(control_plane: ControlPlane) -> None:
    namespace = await control_plane.create_namespace(labels=RESTRICTED)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    kube = control_plane.client()
    try:
        with pytest.raises(KubeError) as refused:
            await kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    finally:
        await kube.close()
    assert refused.value.status == 403
    assert 'violates PodSecurity "restricted:latest"' in str(refused.value) and "runAsNonRoot" in str(refused.value)


async def test_service_account_tokens_are_issued_and_accepted(control_plane: ControlPlane) -> None:
    namespace = await control_plane.create_namespace()
    token = await control_plane.service_account_token(namespace, "default")
    review = control_plane.kubectl("auth", "can-i", "list", "pods", "-n", namespace, f"--token={token}", check=False)
    assert review.stdout.strip() == "no"  # authenticated as the ServiceAccount, which RBAC grants nothing
    whoami = control_plane.kubectl("get", "pods", "-n", namespace, f"--token={token}", check=False)
    assert f"system:serviceaccount:{namespace}:default" in whoami.stderr


async def test_the_job_controller_creates_pods_with_a_token_volume(control_plane: ControlPlane) -> None:
    control_plane.require_controllers()
    namespace = await control_plane.create_namespace()
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "one", "namespace": namespace},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}},
    }
    kube = control_plane.client()
    try:
        await kube.ensure(JOBS, job)
        while not (pods := (await kube.request("GET", f"/api/v1/namespaces/{namespace}/pods"))["items"]):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    finally:
        await kube.close()
    volumes = pods[0]["spec"]["volumes"]
    assert any(v["name"].startswith("kube-api-access-") for v in volumes)  # the ServiceAccount admission plugin
