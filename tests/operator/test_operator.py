"""The real operator (kopf's KopfRunner) against kmock's Kubernetes emulator and real Postgres.

The emulator has no controllers, no schema validation and no garbage collection (DESIGN.md, "Field
notes"): these tests check what the operator does, and play the Job controller where a scenario needs it.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import yaml
from kopf.testing import KopfRunner

from headrace.model import IngestionJob
from headrace.operator.config import OperatorConfig
from headrace.operator.kube import JOBS, KubeClient, Resource
from headrace.operator.main import build_registry
from headrace.operator.resources.job import build_worker_job
from headrace.store import jobs, queue
from headrace.store.db import Pool
from tests.operator.conftest import IMAGE, ij

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

IJS = Resource("headrace.io/v1alpha1", "ingestionjobs")
HPA_KEY = "autoscaling/v2/horizontalpodautoscalers"
JOB_KEY = "batch/v1/jobs"


@pytest.fixture
def kubeconfig(emulator: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig naming the emulator, found by kopf's login the way it finds any cluster."""
    emulator.resources["headrace.io/v1alpha1/ingestionjobs"] = kmock.ResourceInfo(
        kind="IngestionJob",
        namespaced=True,
        verbs=["get", "list", "watch", "create", "update", "patch", "delete"],
        subresources=["status", "scale"],
    )
    path = tmp_path / "kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": str(emulator.url).rstrip("/")}}],
        "users": [{"name": "test", "user": {"token": "test"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test", "namespace": "default"}}],
        "current-context": "kmock",
    }
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


def applied(body: dict[str, Any]) -> dict[str, Any]:
    """What the API server adds on create and the emulator does not: kopf's patches test resourceVersion."""
    body["metadata"].setdefault("resourceVersion", "1")
    body["metadata"].setdefault("creationTimestamp", "2026-11-23T12:00:00Z")
    return body


@pytest.fixture
async def client(emulator: kmock.KubernetesEmulator) -> AsyncIterator[KubeClient]:
    kube = KubeClient(kopf.ConnectionInfo(server=str(emulator.url)))
    yield kube
    await kube.close()


@pytest.fixture
def config(dsn: str) -> OperatorConfig:
    return OperatorConfig(database_url=dsn, worker_image=IMAGE, observe_interval=0.3)


@asynccontextmanager
async def running(config: OperatorConfig) -> AsyncIterator[KopfRunner]:
    """The operator in a thread, stopped (and checked for errors) at the end of the block."""
    runner = KopfRunner(["run", "-A", "--standalone"], registry=build_registry(config), timeout=30)
    # The emulator serves from this event loop, so enter and leave the runner without blocking it.
    await asyncio.to_thread(runner.__enter__)
    try:
        yield runner
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)
    assert runner.exception is None


async def until(check: Callable[[], Any]) -> Any:
    """Poll until `check()` is truthy and return it; the test's timeout bounds the wait."""
    while not (result := check()):  # noqa: ASYNC110 - the emulator offers nothing to await
        await asyncio.sleep(0.05)
    return result


def obj(emulator: kmock.KubernetesEmulator, resource: str, name: str) -> dict[str, Any] | None:
    key = (kmock.resource(resource), "default", name)
    if key in emulator.objects and not emulator.objects[key].deleted:
        return dict(emulator.objects[key])
    return None


def status(emulator: kmock.KubernetesEmulator, name: str = "handbook") -> dict[str, Any]:
    found = obj(emulator, "headrace.io/v1alpha1/ingestionjobs", name) or {}
    return dict(found.get("status") or {})


def count(emulator: kmock.KubernetesEmulator, plural: str) -> int:
    return sum(1 for key in emulator.objects if key[0].plural == plural and not emulator.objects[key].deleted)


async def test_lifecycle_create_scale_suspend_resume_delete(
    kubeconfig: Path, emulator: kmock.KubernetesEmulator, client: KubeClient, config: OperatorConfig, pool: Pool
) -> None:
    body = ij(spec={"source": {"volume": {"claimName": "docs"}}, "retention": "Delete"})
    uid = uuid.UUID(body["metadata"]["uid"])
    async with running(config):
        await client.ensure(IJS, applied(body))
        await until(lambda: obj(emulator, JOB_KEY, "handbook-run-1") and obj(emulator, HPA_KEY, "handbook"))
        await until(lambda: status(emulator).get("phase") == "Running")
        current = status(emulator)
        assert {c["type"] for c in current["conditions"]} == {"Ready", "Progressing", "Succeeded", "Failed"}
        assert current["workers"]["selector"].endswith(str(uid))
        assert (await queue.counts(pool, uid))["pending"] == 1

        # What `kubectl scale` (or the HPA) does through /scale:
        await client.patch(IJS, "default", "handbook", {"spec": {"workers": {"replicas": 3}}})
        await until(lambda: obj(emulator, JOB_KEY, "handbook-run-1")["spec"]["parallelism"] == 3)  # type: ignore[index]
        await until(lambda: status(emulator)["workers"]["replicas"] == 3)

        await client.patch(IJS, "default", "handbook", {"spec": {"suspend": True}})
        await until(lambda: status(emulator).get("phase") == "Suspended")
        assert obj(emulator, JOB_KEY, "handbook-run-1")["spec"]["parallelism"] == 0  # type: ignore[index]
        await client.patch(IJS, "default", "handbook", {"spec": {"suspend": False}})
        await until(lambda: status(emulator).get("phase") == "Running")
        assert obj(emulator, JOB_KEY, "handbook-run-1")["spec"]["parallelism"] == 3  # type: ignore[index]

        finalizers = obj(emulator, "headrace.io/v1alpha1/ingestionjobs", "handbook")["metadata"]["finalizers"]  # type: ignore[index]
        assert finalizers == ["headrace.io/finalizer"]
        await client.delete(IJS, "default", "handbook")
        await until(lambda: obj(emulator, "headrace.io/v1alpha1/ingestionjobs", "handbook") is None)
    assert await jobs.get_job(pool, uid) is None
    assert count(emulator, "jobs") == 1  # garbage collection, not the operator, removes it


async def test_invalid_spec_and_retained_data(
    kubeconfig: Path, emulator: kmock.KubernetesEmulator, client: KubeClient, config: OperatorConfig, pool: Pool
) -> None:
    bad = ij(name="bad", spec={"source": {"volume": {"path": "docs"}}})
    good = ij(name="good", spec={"source": {"volume": {"claimName": "docs"}}, "retention": "Retain"})
    async with running(config):
        await client.ensure(IJS, applied(bad))
        await client.ensure(IJS, applied(good))
        await until(lambda: status(emulator, "bad").get("phase") == "Failed")
        ready = next(c for c in status(emulator, "bad")["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "InvalidSpec" and "spec.source.volume.claimName" in ready["message"]
        await until(lambda: status(emulator, "good").get("phase") == "Running")
        assert obj(emulator, JOB_KEY, "bad-run-1") is None and obj(emulator, HPA_KEY, "bad") is None

        await client.delete(IJS, "default", "good")
        await until(lambda: obj(emulator, "headrace.io/v1alpha1/ingestionjobs", "good") is None)
    record = await pool.fetchrow(
        "SELECT deleted_at FROM headrace.jobs WHERE uid = $1", uuid.UUID(good["metadata"]["uid"])
    )
    assert record is not None and record["deleted_at"] is not None


async def test_restart_after_a_partial_reconcile_converges(
    kubeconfig: Path, emulator: kmock.KubernetesEmulator, client: KubeClient, config: OperatorConfig, pool: Pool
) -> None:
    # An operator killed after registering the job, starting the run and creating the Job, but before
    # the HPA and the status: exactly what it leaves behind.
    body = ij()
    job = IngestionJob.model_validate(body)
    uid = uuid.UUID(body["metadata"]["uid"])
    record = await jobs.register_job(pool, uid=uid, namespace="default", name="handbook", generation=1, spec=job.spec)
    await jobs.ensure_run(pool, record, reason="created")
    await client.ensure(IJS, applied(body))
    manifest = build_worker_job(
        job,
        run=1,
        image=IMAGE,
        database_secret=config.database_secret,
        database_secret_key=config.database_secret_key,
        backoff_limit=config.backoff_limit,
        ttl_seconds_after_finished=config.ttl_seconds_after_finished,
    )
    await client.ensure(JOBS, manifest)

    async with running(config):
        await until(lambda: status(emulator).get("phase") == "Running" and obj(emulator, HPA_KEY, "handbook"))
    # And once more, stopped and started again right away.
    async with running(config):
        await until(lambda: status(emulator).get("phase") == "Running")
    assert count(emulator, "jobs") == 1 and count(emulator, "horizontalpodautoscalers") == 1
    assert await pool.fetchval("SELECT count(*) FROM headrace.runs WHERE job_uid = $1", uid) == 1
    assert (await queue.counts(pool, uid))["pending"] == 1  # one discover task, not two


def test_kopf_is_configured_under_our_group() -> None:
    from headrace.operator.main import WATCH_CLIENT_TIMEOUT, WATCH_SERVER_TIMEOUT, configure

    settings = kopf.OperatorSettings()
    configure(settings)
    assert settings.persistence.finalizer == "headrace.io/finalizer"
    assert (
        settings.watching.server_timeout
        == WATCH_SERVER_TIMEOUT
        < settings.watching.client_timeout
        == WATCH_CLIENT_TIMEOUT
    )
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.persistence.progress_storage.prefix == "headrace.io"
