"""`spec.schedule` on a real kube-apiserver: a six-field expression is refused at admission naming the
field; one that has five fields but never fires passes the schema and is the operator's to refuse."""

from collections.abc import AsyncIterator

import pytest

from headrace.kubeapi import KubeError
from headrace.operator.kube import KubeClient
from tests.kube.controlplane import ControlPlane
from tests.operator.cluster import IJS

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[KubeClient]:
    control_plane.install_crd()
    client = control_plane.client()
    yield client
    await client.close()


def _job(schedule: str) -> dict[str, object]:
    spec = {"source": {"volume": {"claimName": "docs"}}, "schedule": schedule}
    return {"apiVersion": "headrace.io/v1alpha1", "kind": "IngestionJob", "metadata": {"name": "s"}, "spec": spec}


@pytest.mark.parametrize("schedule", ["0 0 * * * *", "* * * *", "every day"])
async def test_a_schedule_without_five_fields_is_refused_naming_it(
    control_plane: ControlPlane, kube: KubeClient, schedule: str
) -> None:
    namespace = await control_plane.create_namespace(prefix="cron")
    with pytest.raises(KubeError) as refused:
        await kube.request("POST", IJS.path(namespace) + "?dryRun=All", _job(schedule))
    assert refused.value.status == 422 and "spec.schedule" in str(refused.value)


@pytest.mark.parametrize("schedule", ["30 2 * * *", "@daily", "0 0 30 2 *"])
async def test_five_fields_pass_admission(control_plane: ControlPlane, kube: KubeClient, schedule: str) -> None:
    namespace = await control_plane.create_namespace(prefix="cron")
    await kube.request("POST", IJS.path(namespace) + "?dryRun=All", _job(schedule))
