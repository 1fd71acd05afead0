"""The operator touches only what its IngestionJob owns, and says why when it cannot do its work:
a Job or HPA of the same name owned by someone else (NameConflict), a worker Job the server refuses."""

import uuid
from typing import Any

import kmock
import pytest

from headrace.operator.kube import HPAS, JOBS
from headrace.operator.reconcile import Operator
from tests.operator.conftest import ij
from tests.operator.test_reconcile import apply, conditions, exists, observe

JOBS_URL = "post /apis/batch/v1/namespaces/default/jobs"
FOREIGN_UID = str(uuid.uuid4())
MODES = [
    {"autoscaling": {"mode": "hpa"}},
    {"autoscaling": {"mode": "builtin"}},
    {"autoscaling": {"mode": "none"}},
]


def foreign(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An object someone else made, owned by a Deployment (or by nothing)."""
    api = {"Job": "batch/v1", "HorizontalPodAutoscaler": "autoscaling/v2"}[kind]
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": FOREIGN_UID, "controller": True}
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": name, "namespace": "default", "ownerReferences": [owner]},
        "spec": spec,
    }


WEB_HPA = {
    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
    "minReplicas": 2,
    "maxReplicas": 10,
}
WEB_JOB = {"parallelism": 5, "template": {"spec": {"containers": [{"name": "x", "image": "busybox"}]}}}


@pytest.mark.parametrize("workers", MODES, ids=lambda w: w["autoscaling"]["mode"])
async def test_a_foreign_hpa_is_left_alone(
    op: Operator, emulator: kmock.KubernetesEmulator, workers: dict[str, Any]
) -> None:
    await op.kube.ensure(HPAS, foreign("HorizontalPodAutoscaler", "web", WEB_HPA))
    raw, events = await apply(op, ij("web", spec={"source": {"volume": {"claimName": "d"}}, "workers": workers}))
    hpa = emulator.objects[HPAS.group_version + "/" + HPAS.plural, "default", "web"]
    assert not hpa.deleted and hpa["spec"] == WEB_HPA  # neither re-pointed nor deleted
    assert exists(emulator, "batch/v1/jobs", "web-run-1")  # the run goes on
    ready = conditions(raw)["Ready"]
    if workers["autoscaling"]["mode"] == "hpa":
        # The job needs that name for its HPA: it says so, naming the object, and posts a Warning.
        assert (ready["status"], ready["reason"]) == ("False", "NameConflict")
        assert "HorizontalPodAutoscaler web" in ready["message"]
        assert ("Warning", "NameConflict") in [(e.type, e.reason) for e in events]
    else:
        # builtin and none want no HPA: someone else's is not in the way, and not ours to delete.
        assert ready["status"] == "True"
    raw, _ = await observe(op, raw)
    assert not hpa.deleted and hpa["spec"] == WEB_HPA


@pytest.mark.parametrize("workers", MODES, ids=lambda w: w["autoscaling"]["mode"])
async def test_a_foreign_job_is_left_alone(
    op: Operator, emulator: kmock.KubernetesEmulator, workers: dict[str, Any]
) -> None:
    await op.kube.ensure(JOBS, foreign("Job", "web-run-1", WEB_JOB))
    raw, events = await apply(
        op, ij("web", spec={"source": {"volume": {"claimName": "d"}}, "workers": {**workers, "replicas": 2}})
    )
    job = emulator.objects["batch/v1/jobs", "default", "web-run-1"]
    assert job["spec"]["parallelism"] == 5 and job["metadata"]["ownerReferences"][0]["uid"] == FOREIGN_UID
    ready = conditions(raw)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "NameConflict") and "Job web-run-1" in ready["message"]
    assert [(e.type, e.reason) for e in events].count(("Warning", "NameConflict")) == 1
    assert raw["status"]["workers"]["active"] == 0  # the foreign Job's pods are not ours to count
    raw, events = await observe(op, raw)
    assert job["spec"]["parallelism"] == 5 and events == []  # no second Warning while nothing changed


async def test_our_own_hpa_is_still_deleted_when_the_mode_leaves_hpa(
    op: Operator, emulator: kmock.KubernetesEmulator
) -> None:
    raw, _ = await apply(op, ij())
    assert exists(emulator, "autoscaling/v2/horizontalpodautoscalers", "handbook")
    raw["spec"]["workers"] = {"autoscaling": {"mode": "none"}}
    await apply(op, raw)
    assert not exists(emulator, "autoscaling/v2/horizontalpodautoscalers", "handbook")


async def test_a_refused_worker_job_is_a_condition_with_the_servers_message(
    op: Operator, emulator: kmock.KubernetesEmulator
) -> None:
    message = 'Job.batch "handbook-run-1" is invalid: spec.template.spec.tolerations[0].operator: Invalid value'
    emulator[JOBS_URL] << 422 << {"kind": "Status", "status": "Failure", "message": message, "code": 422}
    raw, events = await apply(op, ij())
    ready = conditions(raw)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "WorkerJobRefused")
    assert message in ready["message"]
    assert ("Warning", "WorkerJobRefused") in [(e.type, e.reason) for e in events]
    assert raw["status"]["phase"] == "Running"  # the run is open; the operator keeps trying, visibly
