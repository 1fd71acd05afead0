"""The real operator (kopf's KopfRunner) on real Postgres, against kmock's Kubernetes emulator and, when
KUBEBUILDER_ASSETS is set, against a real kube-apiserver + etcd too.

Neither API server runs controllers (DESIGN.md, "Field notes"; tests/operator/cluster.py): these tests
check what the operator does, not what the Job controller or the garbage collector would do after it.
"""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
from kopf.testing import KopfRunner

from headrace.model import IngestionJob
from headrace.operator.config import OperatorConfig
from headrace.operator.kube import HPAS, JOBS
from headrace.operator.main import build_registry
from headrace.operator.resources.job import build_worker_job
from headrace.store import jobs, queue
from headrace.store.db import Pool
from tests.operator.cluster import (
    IJS,
    ApiServer,
    Cluster,
    assets,
    client_for,
    install_crd,
    new_namespace,
    real_apiserver,
    wait_ready,
    write_kubeconfig,
)
from tests.operator.conftest import IMAGE, ij

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    found = assets()
    if found is None:
        pytest.skip("KUBEBUILDER_ASSETS is not set, so there is no real kube-apiserver to test against")
    with real_apiserver(found, tmp_path_factory.mktemp("envtest")) as server:
        yield server


@pytest.fixture(params=["emulator", "apiserver"])
def target(request: pytest.FixtureRequest) -> tuple[str, bool]:
    """(server URL, emulated?) of the API server this test runs against."""
    if request.param == "apiserver":
        server: ApiServer = request.getfixturevalue("apiserver")
        return server.url, False
    emulator: kmock.KubernetesEmulator = request.getfixturevalue("emulator")
    # The /status and /scale subresources, as the CRD declares them.
    emulator.resources["headrace.io/v1alpha1/ingestionjobs"] = kmock.ResourceInfo(
        kind="IngestionJob",
        namespaced=True,
        verbs=["get", "list", "watch", "create", "update", "patch", "delete"],
        subresources=["status", "scale"],
    )
    return str(emulator.url).rstrip("/"), True


@pytest.fixture
async def cluster(target: tuple[str, bool], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    url, emulated = target
    kube = client_for(url, insecure=not emulated)
    if emulated:
        namespace = "default"
    else:
        await wait_ready(kube)
        await install_crd(kube)
        namespace = await new_namespace(kube)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url, insecure=not emulated)
    # kopf logs in the way it would anywhere: from $KUBECONFIG, with no in-cluster service account.
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield Cluster(kube=kube, kubeconfig=kubeconfig, namespace=namespace, emulated=emulated)
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


async def until(check: Callable[[], Awaitable[Any]]) -> Any:
    """Poll until `check()` is truthy and return it; the test's timeout bounds the wait."""
    while not (result := await check()):  # noqa: ASYNC110 - an API server offers nothing to await here
        await asyncio.sleep(0.05)
    return result


async def phase(cluster: Cluster, name: str = "handbook") -> str | None:
    found = await cluster.get(IJS, name) or {}
    return (found.get("status") or {}).get("phase")  # type: ignore[no-any-return]


async def parallelism(cluster: Cluster, name: str = "handbook-run-1") -> int | None:
    found = await cluster.get(JOBS, name) or {}
    return found.get("spec", {}).get("parallelism")  # type: ignore[no-any-return]


async def test_lifecycle_create_scale_suspend_resume_delete(
    cluster: Cluster, config: OperatorConfig, pool: Pool
) -> None:
    async with running(config):
        created = await cluster.create(
            IJS, ij(spec={"source": {"volume": {"claimName": "docs"}}, "retention": "Delete"})
        )
        uid = uuid.UUID(created["metadata"]["uid"])
        await until(lambda: cluster.get(JOBS, "handbook-run-1"))
        hpa = await until(lambda: cluster.get(HPAS, "handbook"))
        assert hpa["spec"]["scaleTargetRef"]["name"] == "handbook"
        await until(lambda: _is(phase(cluster), "Running"))
        status = (await cluster.get(IJS, "handbook"))["status"]  # type: ignore[index]
        assert {c["type"] for c in status["conditions"]} == {
            "Ready",
            "Progressing",
            "Succeeded",
            "Failed",
            "EmbeddingsReady",
        }
        assert status["workers"]["selector"].endswith(str(uid)) and status["observedGeneration"] == created[
            "metadata"
        ].get("generation")
        assert (await queue.counts(pool, uid))["pending"] == 1

        # What `kubectl scale` or the HPA does, through /scale (the emulator has no subresources:
        # there, write the field /scale maps to).
        if cluster.emulated:
            await cluster.kube.patch(IJS, cluster.namespace, "handbook", {"spec": {"workers": {"replicas": 3}}})
        else:
            scale_path = IJS.path(cluster.namespace, "handbook") + "/scale"
            scale = await cluster.kube.request("GET", scale_path)
            assert scale["status"]["selector"] == status["workers"]["selector"]
            await cluster.kube.request("PATCH", scale_path, {"spec": {"replicas": 3}}, "application/merge-patch+json")
        await until(lambda: _is(parallelism(cluster), 3))

        await cluster.kube.patch(IJS, cluster.namespace, "handbook", {"spec": {"suspend": True}})
        await until(lambda: _is(phase(cluster), "Suspended"))
        assert await parallelism(cluster) == 0
        await cluster.kube.patch(IJS, cluster.namespace, "handbook", {"spec": {"suspend": False}})
        await until(lambda: _is(phase(cluster), "Running"))
        assert await parallelism(cluster) == 3

        current = await cluster.get(IJS, "handbook")
        assert current is not None and current["metadata"]["finalizers"] == ["headrace.io/finalizer"]
        await cluster.kube.delete(IJS, cluster.namespace, "handbook")
        await until(lambda: _is(cluster.get(IJS, "handbook"), None))
    assert await jobs.get_job(pool, uid) is None


async def test_invalid_spec_and_retained_data(cluster: Cluster, config: OperatorConfig, pool: Pool) -> None:
    async with running(config):
        await cluster.create(IJS, ij(name="bad", spec={"source": {"volume": {"path": "docs"}}}))
        good = await cluster.create(
            IJS, ij(name="good", spec={"source": {"volume": {"claimName": "docs"}}, "retention": "Retain"})
        )
        await until(lambda: _is(phase(cluster, "bad"), "Failed"))
        bad = await cluster.get(IJS, "bad")
        assert bad is not None
        ready = next(c for c in bad["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "InvalidSpec" and "spec.source.volume.claimName" in ready["message"]
        await until(lambda: _is(phase(cluster, "good"), "Running"))
        assert await cluster.get(JOBS, "bad-run-1") is None and await cluster.get(HPAS, "bad") is None

        await cluster.kube.delete(IJS, cluster.namespace, "good")
        await until(lambda: _is(cluster.get(IJS, "good"), None))
    record = await pool.fetchrow(
        "SELECT deleted_at FROM headrace.jobs WHERE uid = $1", uuid.UUID(good["metadata"]["uid"])
    )
    assert record is not None and record["deleted_at"] is not None


async def test_restart_after_a_partial_reconcile_converges(
    cluster: Cluster, config: OperatorConfig, pool: Pool
) -> None:
    # What an operator killed after registering the job, starting its run and creating its Job (but
    # before the HPA and the status) leaves behind.
    created = await cluster.create(IJS, ij())
    job = IngestionJob.model_validate({**created, "status": None})
    uid = uuid.UUID(created["metadata"]["uid"])
    name, namespace = "handbook", cluster.namespace
    record = await jobs.register_job(pool, uid=uid, namespace=namespace, name=name, generation=1, spec=job.spec)
    await jobs.ensure_run(pool, record, reason="created")
    manifest = build_worker_job(
        job,
        run=1,
        image=IMAGE,
        pods=config.worker_pods,
        database_secret=config.database_secret,
        database_secret_key=config.database_secret_key,
        backoff_limit=config.backoff_limit,
        ttl_seconds_after_finished=config.ttl_seconds_after_finished,
    )
    await cluster.kube.ensure(JOBS, manifest)

    async with running(config):
        await until(lambda: _is(phase(cluster), "Running"))
        await until(lambda: cluster.get(HPAS, name))
    async with running(config):  # and stopped and started once more
        await until(lambda: _is(phase(cluster), "Running"))
    listed = await cluster.kube.request("GET", JOBS.path(namespace))
    assert [item["metadata"]["name"] for item in listed["items"]] == ["handbook-run-1"]
    assert await pool.fetchval("SELECT count(*) FROM headrace.runs WHERE job_uid = $1", uid) == 1
    assert (await queue.counts(pool, uid))["pending"] == 1  # one discover task, not two


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


def test_kopf_is_configured_under_our_group() -> None:
    from headrace.operator.settings import WATCH_CLIENT_TIMEOUT, WATCH_SERVER_TIMEOUT, configure

    settings = kopf.OperatorSettings()
    configure(settings)
    assert settings.persistence.finalizer == "headrace.io/finalizer"
    assert WATCH_SERVER_TIMEOUT < WATCH_CLIENT_TIMEOUT
    assert settings.watching.server_timeout == WATCH_SERVER_TIMEOUT
    assert settings.watching.client_timeout == WATCH_CLIENT_TIMEOUT
    assert settings.posting.level == logging.WARNING
    progress = settings.persistence.progress_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage) and progress.prefix == "headrace.io"
