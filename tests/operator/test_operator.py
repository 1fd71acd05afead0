"""The real operator (kopf's KopfRunner) on real Postgres, against kmock's Kubernetes emulator and, when
KUBEBUILDER_ASSETS is set, against the session's real control plane (tests/kube/controlplane.py).

On the real one the operator runs as the chart's operator ServiceAccount with the chart's RBAC, in a
namespace enforcing Pod Security "restricted", and the controllers act on what it creates: the Job
controller makes worker pods (which Pod Security must admit), the garbage collector removes the Jobs
and HPAs of a deleted IngestionJob, the namespace controller deletes a namespace through our finalizer.
"""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
from kopf.testing import KopfRunner
from prometheus_client import REGISTRY

from headrace.kubeapi import KubeError
from headrace.model import IngestionJob
from headrace.operator.kube import HPAS, JOBS, MERGE_PATCH, SECRETS
from headrace.operator.main import build_registry
from headrace.operator.resources.job import build_worker_job
from headrace.operator.settings import OperatorSettings
from headrace.store import documents, jobs, queue, runs
from headrace.store.db import Pool
from headrace.store.search import statistics as search_statistics
from tests.kube.controlplane import RESTRICTED, ControlPlane
from tests.operator.cluster import IJS, Cluster, chart_operator_kubeconfig, client_for, emulator_kubeconfig
from tests.operator.conftest import IMAGE, INGEST_URL, Namespaces, ij
from tests.operator.test_kube import slow_once
from tests.sockets import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

POD_TIMEOUT = 30.0
"""Seconds the Job controller gets to create a worker pod before the test fails with the Job's Events."""


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    control_plane.install_crd()
    return chart_operator_kubeconfig(control_plane, tmp_path_factory.mktemp("operator") / "kubeconfig")


@pytest.fixture(params=["emulator", "apiserver"])
def target(request: pytest.FixtureRequest) -> kmock.KubernetesEmulator | ControlPlane:
    """The API server this test runs against (sync: it asks for async fixtures by name)."""
    if request.param == "apiserver":
        plane: ControlPlane = request.getfixturevalue("control_plane")
        request.getfixturevalue("operator_kubeconfig")
        return plane
    emulator: kmock.KubernetesEmulator = request.getfixturevalue("emulator")
    # The /status and /scale subresources, as the CRD declares them.
    emulator.resources["headrace.io/v1alpha1/ingestionjobs"] = kmock.ResourceInfo(
        kind="IngestionJob",
        namespaced=True,
        verbs=["get", "list", "watch", "create", "update", "patch", "delete"],
        subresources=["status", "scale"],
    )
    return emulator


@pytest.fixture
async def cluster(
    target: kmock.KubernetesEmulator | ControlPlane,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Cluster]:
    if isinstance(target, ControlPlane):
        kubeconfig: Path = request.getfixturevalue("operator_kubeconfig")
        namespace = await target.create_namespace(labels=RESTRICTED, prefix="op")
        found = Cluster(kube=target.client(), kubeconfig=kubeconfig, namespace=namespace, emulated=False, plane=target)
    else:
        Namespaces(target).create("default")
        url = str(target.url).rstrip("/")
        kubeconfig = emulator_kubeconfig(tmp_path / "kubeconfig", url)
        found = Cluster(kube=client_for(url), kubeconfig=kubeconfig, namespace="default", emulated=True)
    # kopf logs in the way it would anywhere: from $KUBECONFIG, with no in-cluster service account.
    monkeypatch.setenv("KUBECONFIG", str(found.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield found
    await found.kube.close()


def real_only(cluster: Cluster) -> ControlPlane:
    if cluster.plane is None:
        pytest.skip("needs the controllers of a real control plane; the emulator has none")
    return cluster.plane


@pytest.fixture
def config(dsn: str) -> OperatorSettings:
    return OperatorSettings(database_url=dsn, worker_image=IMAGE, observe_interval=0.3, ingest_url=INGEST_URL)


class RefusalLog(logging.Handler):
    """Collects what the API server refused the operator as forbidden (RBAC, admission), from the logs.

    Writes into a namespace being deleted are forbidden too, and expected: those are not collected."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.refusals: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = logging.Formatter().format(record)
        lines = [line.strip() for line in text.splitlines()]
        self.refusals += [line for line in lines if "is forbidden:" in line and "being terminated" not in line]


REFUSALS = RefusalLog()
logging.getLogger().addHandler(REFUSALS)


@asynccontextmanager
async def running(config: OperatorSettings, cluster: Cluster) -> AsyncIterator[KopfRunner]:
    """The operator in a thread, stopped (and checked for errors) at the end of the block.

    On the real server it serves the test's namespace only (the chart's `operator.watchNamespaces`), so
    IngestionJobs other tests left in the shared control plane are not its business. A request the
    server refused the chart's RBAC fails the test with the server's message (see `until`)."""
    scope = ["-A"] if cluster.emulated else ["-n", cluster.namespace]
    runner = KopfRunner(["run", "--standalone", *scope], registry=build_registry(config), timeout=30)
    REFUSALS.refusals.clear()
    # The emulator serves from this event loop, so enter and leave the runner without blocking it.
    await asyncio.to_thread(runner.__enter__)
    try:
        yield runner
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)
    assert runner.exception is None
    _no_refusals()


def _no_refusals() -> None:
    if REFUSALS.refusals:
        pytest.fail("the API server refused the operator (the chart's RBAC):\n" + "\n".join(REFUSALS.refusals))


async def until(check: Callable[[], Awaitable[Any]]) -> Any:
    """Poll until `check()` is truthy and return it; the test's timeout bounds the wait, and an RBAC
    refusal the operator met meanwhile ends it at once with the server's message."""
    while not (result := await check()):
        _no_refusals()
        await asyncio.sleep(0.05)
    return result


async def phase(cluster: Cluster, name: str = "handbook") -> str | None:
    found = await cluster.get(IJS, name) or {}
    return (found.get("status") or {}).get("phase")  # type: ignore[no-any-return]


async def parallelism(cluster: Cluster, name: str = "handbook-run-1") -> int | None:
    found = await cluster.get(JOBS, name) or {}
    return found.get("spec", {}).get("parallelism")  # type: ignore[no-any-return]


async def test_lifecycle_create_scale_suspend_resume_delete(
    cluster: Cluster, config: OperatorSettings, pool: Pool
) -> None:
    async with running(config, cluster):
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

        if cluster.plane is not None:
            # The API server filled in the replicas /scale reads (the operator never writes the spec).
            assert created["spec"]["workers"]["replicas"] == 1
            # The Job controller makes the worker pod, which Pod Security "restricted" must admit.
            pod = (await worker_pods(cluster, "handbook-run-1"))[0]
            assert pod["spec"]["automountServiceAccountToken"] is False
            assert not [v for v in pod["spec"].get("volumes", []) if v["name"].startswith("kube-api-access")]
            # What a user or the HPA does: through /scale, which the server maps to spec.workers.replicas.
            scale = await cluster.kube.request("GET", IJS.path(cluster.namespace, "handbook") + "/scale")
            assert scale["status"]["selector"] == status["workers"]["selector"]
            cluster.plane.kubectl("scale", "ij/handbook", "--replicas=3", "-n", cluster.namespace)
        else:
            # The emulator has no /scale: write the field /scale maps to.
            await cluster.kube.patch(IJS, cluster.namespace, "handbook", {"spec": {"workers": {"replicas": 3}}})
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
    if cluster.plane is not None:
        # The garbage collector follows the owner references the operator set (no operator needed).
        await until(lambda: _is(cluster.get(JOBS, "handbook-run-1"), None))
        await until(lambda: _is(cluster.get(HPAS, "handbook"), None))
        await until(lambda: _is(_pod_count(cluster), 0))


def _calls(handler: str) -> float:
    """How many times the operator's `handler` ran in this process (its reconcile histogram's count)."""
    found = REGISTRY.get_sample_value("headrace_operator_reconcile_duration_seconds_count", {"handler": handler})
    return found or 0.0


async def test_a_new_job_is_applied_once(cluster: Cluster, config: OperatorSettings) -> None:
    """The timer never writes the job's spec: kopf would take that for a user's edit and apply the job a
    second time (a second round of API calls and queries per new job). A user's edit still applies."""
    applied, observed = _calls("apply"), _calls("observe")
    async with running(config, cluster):
        created = await cluster.create(IJS, ij())
        await until(lambda: _is(phase(cluster), "Running"))
        # A few ticks of the observe timer after the first, each of which looked at the running job.
        ticks = _calls("observe")
        await until(lambda: _ready(_calls("observe") >= ticks + 3))
        found = await cluster.get(IJS, "handbook")
        assert found is not None and found["spec"] == created["spec"]
        # The spec's generation never moved, and kopf applied the job once.
        assert found["metadata"]["generation"] == created["metadata"]["generation"] == 1
        assert _calls("apply") - applied == 1
        if cluster.plane is not None:
            # /scale answers from the moment of creation: the HPA and `kubectl scale` need no operator first.
            scale = await cluster.kube.request("GET", IJS.path(cluster.namespace, "handbook") + "/scale")
            assert scale["spec"]["replicas"] == 1 and scale["status"]["replicas"] == 1
        # A user's own spec edit is reconciled at once, by apply.
        before = _calls("apply")
        await cluster.kube.patch(IJS, cluster.namespace, "handbook", {"spec": {"workers": {"max": 2, "replicas": 2}}})
        await until(lambda: _is(parallelism(cluster), 2))
        await until(lambda: _ready(_calls("apply") > before))
        await cluster.kube.delete(IJS, cluster.namespace, "handbook")
        await until(lambda: _is(cluster.get(IJS, "handbook"), None))
    assert _calls("observe") > observed


async def _ready(value: bool) -> bool:
    return value


def _refused_creates() -> float:
    """Creates by the operator's own client that the API server refused as existing (409) in this process."""
    found = REGISTRY.get_sample_value("headrace_operator_kubernetes_requests_total", {"verb": "create", "code": "409"})
    return found or 0.0


async def test_jobs_present_at_start_are_applied_once(
    cluster: Cluster, config: OperatorSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Jobs made while the operator was down, and jobs made while it starts, are each applied once: one
    create of their Job and of their HPA, none refused as already there (a second pass over a job would
    meet 409s for its Job, HPA and Events, and cost a second round of requests and queries)."""
    before = [f"before-{i}" for i in range(3)]
    during = [f"during-{i}" for i in range(3)]
    applied, refused = _calls("apply"), _refused_creates()
    for name in before:
        await cluster.create(IJS, ij(name))
    async with running(config, cluster):
        await asyncio.gather(*(cluster.create(IJS, ij(name)) for name in during))

        async def all_running() -> bool:
            return all([await phase(cluster, name) == "Running" for name in before + during])

        await until(all_running)
        # Each job's timer ticked a few times since: a second pass would have come by now.
        ticks = _calls("observe")
        await until(lambda: _ready(_calls("observe") >= ticks + 2 * len(before + during)))
        assert _calls("apply") - applied == len(before + during)
        assert _refused_creates() == refused
        assert not [r.getMessage() for r in caplog.records if r.getMessage().startswith("Failed to post an event")]
        jobs = await cluster.kube.request("GET", JOBS.path(cluster.namespace))
        assert sorted(j["metadata"]["name"] for j in jobs["items"]) == [f"{n}-run-1" for n in sorted(before + during)]


async def test_operator_serves_its_metrics(cluster: Cluster, config: OperatorSettings) -> None:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()  # for the metrics server

    async def scrape() -> dict[str, list[Any]]:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        return {f.name: f.samples for f in text_string_to_metric_families(text)}

    async def running_phase() -> bool:
        phases = (await scrape())["headrace_ingestionjob_phase"]
        wanted = {"namespace": cluster.namespace, "ingestionjob": "handbook", "phase": "Running"}
        return any(s.labels == wanted and s.value == 1 for s in phases)

    async with running(config.model_copy(update={"metrics_port": port}), cluster):
        await cluster.create(IJS, ij(spec={"source": {"volume": {"claimName": "docs"}}, "retention": "Delete"}))
        await until(lambda: cluster.get(JOBS, "handbook-run-1"))
        await until(running_phase)
        found = await scrape()
        durations = {
            s.labels["handler"]: s.value
            for s in found["headrace_operator_reconcile_duration_seconds"]
            if s.name.endswith("_count")
        }
        assert durations["apply"] >= 1
        creates = [s for s in found["headrace_operator_kubernetes_requests"] if s.labels["verb"] == "create"]
        assert sum(s.value for s in creates) >= 2  # the worker Job and the HPA
        assert found["headrace_operator_last_reconcile_timestamp_seconds"][0].value > 0
        await cluster.kube.delete(IJS, cluster.namespace, "handbook")
        await until(lambda: _is(cluster.get(IJS, "handbook"), None))
        assert not any(s.labels["ingestionjob"] == "handbook" for s in (await scrape())["headrace_ingestionjob_phase"])


async def test_invalid_spec_and_retained_data(cluster: Cluster, config: OperatorSettings, pool: Pool) -> None:
    async with running(config, cluster):
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
    cluster: Cluster, config: OperatorSettings, pool: Pool
) -> None:
    # What an operator killed after registering the job, starting its run and creating its Job (but
    # before the HPA and the status) leaves behind.
    created = await cluster.create(IJS, ij())
    job = IngestionJob.model_validate({**created, "status": None})
    uid = uuid.UUID(created["metadata"]["uid"])
    name, namespace = "handbook", cluster.namespace
    record = await jobs.register_job(pool, uid=uid, namespace=namespace, name=name, generation=1, spec=job.spec)
    await runs.ensure_run(pool, record, reason="created")
    manifest = build_worker_job(
        job,
        run=1,
        image=IMAGE,
        pods=config.worker_pods(),
        ingest_url=config.ingest_url,
        ingest_audience=config.ingest_audience,
        backoff_limit=config.backoff_limit,
        ttl_seconds_after_finished=config.ttl_seconds_after_finished,
    )
    await cluster.kube.ensure(JOBS, manifest)

    async with running(config, cluster):
        await until(lambda: _is(phase(cluster), "Running"))
        await until(lambda: cluster.get(HPAS, name))
    async with running(config, cluster):  # and stopped and started once more
        await until(lambda: _is(phase(cluster), "Running"))
    listed = await cluster.kube.request("GET", JOBS.path(namespace))
    assert [item["metadata"]["name"] for item in listed["items"]] == ["handbook-run-1"]
    assert await pool.fetchval("SELECT count(*) FROM headrace.runs WHERE job_uid = $1", uid) == 1
    assert (await queue.counts(pool, uid))["pending"] == 1  # one discover task, not two


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


async def _pods(cluster: Cluster, job: str | None = None) -> list[dict[str, Any]]:
    selector = f"?labelSelector=job-name%3D{job}" if job else ""
    listed = await cluster.kube.request("GET", f"/api/v1/namespaces/{cluster.namespace}/pods{selector}")
    return listed["items"]  # type: ignore[no-any-return]


async def _pod_count(cluster: Cluster) -> int:
    return len(await _pods(cluster))


async def worker_pods(cluster: Cluster, job: str) -> list[dict[str, Any]]:
    """The pods the Job controller made for a worker Job; failing with the Job's Events (e.g. Pod Security
    refusing the pod: `FailedCreate ... violates PodSecurity "restricted:latest": ...`) when it makes none."""
    deadline = asyncio.get_running_loop().time() + POD_TIMEOUT
    while not (pods := await _pods(cluster, job)):
        if asyncio.get_running_loop().time() > deadline:
            selector = f"involvedObject.kind=Job,involvedObject.name={job}"
            events = await cluster.kube.request(
                "GET", f"/api/v1/namespaces/{cluster.namespace}/events?fieldSelector={selector}"
            )
            said = "\n".join(f"{e['reason']}: {e['message']}" for e in events["items"]) or "(no events)"
            pytest.fail(f"the Job controller made no pod for Job {job} in {POD_TIMEOUT:.0f} s:\n{said}")
        await asyncio.sleep(0.2)
    return pods


async def test_namespace_deletion_completes_through_the_finalizer(
    cluster: Cluster, config: OperatorSettings, pool: Pool
) -> None:
    """The namespace controller deletes the IngestionJob; our finalizer applies retention and lets go."""
    real_only(cluster)
    async with running(config, cluster):
        created = await cluster.create(IJS, ij())
        await until(lambda: _is(phase(cluster), "Running"))
        await worker_pods(cluster, "handbook-run-1")
        await cluster.kube.request("DELETE", f"/api/v1/namespaces/{cluster.namespace}")
        await until(lambda: _gone(cluster, f"/api/v1/namespaces/{cluster.namespace}"))
    record = await pool.fetchrow(
        "SELECT deleted_at FROM headrace.jobs WHERE uid = $1", uuid.UUID(created["metadata"]["uid"])
    )
    assert record is not None and record["deleted_at"] is not None  # retention Retain, the default


async def _gone(cluster: Cluster, path: str) -> bool:
    try:
        await cluster.kube.request("GET", path)
    except KubeError as exc:
        if exc.status == 404:
            return True
        raise
    return False


def test_kopf_is_configured_under_our_group() -> None:
    from headrace.operator.kopf_setup import WATCH_CLIENT_TIMEOUT, WATCH_SERVER_TIMEOUT, configure

    settings = kopf.OperatorSettings()
    configure(settings, observe_interval=10)
    assert settings.execution.default_backoff == settings.background.cancellation_polling == 10
    assert settings.persistence.finalizer == "headrace.io/finalizer"
    assert WATCH_SERVER_TIMEOUT < WATCH_CLIENT_TIMEOUT
    assert settings.watching.server_timeout == WATCH_SERVER_TIMEOUT
    assert settings.watching.client_timeout == WATCH_CLIENT_TIMEOUT
    assert settings.posting.level == logging.WARNING
    progress = settings.persistence.progress_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage) and progress.prefix == "headrace.io"


async def test_a_failed_job_closes_the_run_and_a_request_starts_the_next(
    cluster: Cluster, config: OperatorSettings, pool: Pool
) -> None:
    async with running(config, cluster):
        created = await cluster.create(IJS, ij())
        uid = uuid.UUID(created["metadata"]["uid"])
        await until(lambda: _is(phase(cluster), "Running"))
        # Play the Job controller: the worker pods used up backoffLimit.
        failed = {
            "type": "Failed",
            "status": "True",
            "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit",
        }
        path = JOBS.path(cluster.namespace, "handbook-run-1") + ("" if cluster.emulated else "/status")
        await cluster.kube.request("PATCH", path, {"status": {"conditions": [failed]}}, MERGE_PATCH)
        await until(lambda: _is(phase(cluster), "Failed"))

        # The CR and the API agree, from the run's row.
        status = (await cluster.get(IJS, "handbook"))["status"]  # type: ignore[index]
        reasons = {c["type"]: c["reason"] for c in status["conditions"]}
        assert reasons["Failed"] == "BackoffLimitExceeded"
        view = await jobs.find_job(pool, cluster.namespace, "handbook")
        assert view is not None and view.phase == "Failed" and view.state is not None
        assert view.state.end_reason == "BackoffLimitExceeded" and status["completionTime"]

        # A finished run, asked for another: the annotation starts it (the timer is idle by now).
        annotations = {"metadata": {"annotations": {"headrace.io/run-requested-at": "2026-11-30T02:00:00+00:00"}}}
        await cluster.kube.patch(IJS, cluster.namespace, "handbook", annotations)
        await until(lambda: cluster.get(JOBS, "handbook-run-2"))
        await until(lambda: _is(phase(cluster), "Running"))
        status = (await cluster.get(IJS, "handbook"))["status"]  # type: ignore[index]
        assert status["run"] == 2 and status["lastHandledRunRequest"] == "2026-11-30T02:00:00+00:00"
    assert await pool.fetchval("SELECT count(*) FROM headrace.runs WHERE job_uid = $1", uid) == 2


async def test_status_moves_on_at_the_next_observe_after_one_failed(
    target: kmock.KubernetesEmulator | ControlPlane,
    cluster: Cluster,
    config: OperatorSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One look at the worker Job is answered 401 (a token that expired in flight): an error nothing inside
    # the step retries. kopf's default would run the timer again only after a minute, with the job's
    # status frozen meanwhile; the next observe tick must pick the run's end up instead.
    if isinstance(target, ControlPlane):
        pytest.skip("only the emulator can be made to refuse a single request")
    job_path = f"get {JOBS.path(cluster.namespace, 'handbook-run-1')}"
    async with running(config, cluster):
        await cluster.create(IJS, ij())
        await until(lambda: _is(phase(cluster), "Running"))
        looked = len(target[job_path])
        await until(lambda: _ready(len(target[job_path]) >= looked + 2))  # only the timer looks by now
        refused = fail_once(target, job_path, 401)
        await until(lambda: _ready(bool(refused)))
        failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "backoff limit"}
        path = JOBS.path(cluster.namespace, "handbook-run-1")
        await cluster.kube.request("PATCH", path, {"status": {"conditions": [failed]}}, MERGE_PATCH)
        async with asyncio.timeout(30):  # a bound well under kopf's default minute, not a threshold
            await until(lambda: _is(phase(cluster), "Failed"))
    assert any("Timer 'register.<locals>.observe' failed" in r.getMessage() for r in caplog.records)


async def test_a_job_deleted_while_its_timer_runs_is_let_go_at_the_next_observe(
    target: kmock.KubernetesEmulator | ControlPlane, cluster: Cluster, config: OperatorSettings
) -> None:
    # kopf keeps the finalizer until the object's timer has exited, and looks at a timer still running
    # again only after `cancellation_polling` (a minute by default): the deleted job lingered that long.
    if isinstance(target, ControlPlane):
        pytest.skip("only the emulator can be made to hold a single request")
    async with running(config, cluster):
        await cluster.create(IJS, ij())
        await until(lambda: _is(phase(cluster), "Running"))
        held = slow_once(target, f"get {JOBS.path(cluster.namespace, 'handbook-run-1')}", seconds=2)
        await until(lambda: _ready(bool(held)))  # the timer is mid-run
        await cluster.kube.delete(IJS, cluster.namespace, "handbook")
        async with asyncio.timeout(30):  # a bound well under kopf's default minute, not a threshold
            await until(lambda: _is(cluster.get(IJS, "handbook"), None))


def fail_once(emulator: kmock.KubernetesEmulator, pattern: str, status: int) -> list[int]:
    """Answer the first matching request with `status`; later ones reach the emulator as usual."""
    served: list[int] = []

    def failure() -> Any:
        if served:
            return NotImplemented  # kmock: this reaction does not apply, the emulator answers
        served.append(status)
        return {"kind": "Status", "status": "Failure", "message": "failed once", "code": status}

    emulator[pattern] << status << failure
    return served


async def test_a_foreign_hpa_is_left_alone_and_named(cluster: Cluster, config: OperatorSettings) -> None:
    web_hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
        },
    }
    before = await cluster.create(HPAS, web_hpa)
    async with running(config, cluster):
        await cluster.create(IJS, ij("web"))

        async def ready_reason() -> str | None:
            found = await cluster.get(IJS, "web") or {}
            ready = [c for c in (found.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"]
            return ready[0]["reason"] if ready else None

        await until(lambda: _is(ready_reason(), "NameConflict"))
        await until(lambda: cluster.get(JOBS, "web-run-1"))  # the run itself goes on
    after = await cluster.get(HPAS, "web")
    assert after is not None and after["spec"]["scaleTargetRef"] == before["spec"]["scaleTargetRef"]
    assert after["metadata"].get("resourceVersion") == before["metadata"].get("resourceVersion")


async def test_a_worker_job_the_server_refuses_is_a_condition(cluster: Cluster, config: OperatorSettings) -> None:
    if cluster.emulated:
        pytest.skip("the emulator validates nothing: only a real API server refuses the Job")
    # `Exists` with a value: the CRD lets it through, the Job's own validation does not.
    toleration = {"key": "gpu", "operator": "Exists", "value": "yes", "effect": "NoSchedule"}
    spec = {"source": {"volume": {"claimName": "docs"}}, "workers": {"tolerations": [toleration]}}
    async with running(config, cluster):
        await cluster.create(IJS, ij(spec=spec))

        async def ready() -> dict[str, Any] | None:
            found = await cluster.get(IJS, "handbook") or {}
            matches = [c for c in (found.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"]
            return matches[0] if matches and matches[0]["reason"] == "WorkerJobRefused" else None

        condition = await until(ready)
    assert "tolerations" in condition["message"] and "handbook-run-1" in condition["message"]


async def test_worker_pods_call_the_ingest_service_and_hold_no_database_credential(
    cluster: Cluster, config: OperatorSettings
) -> None:
    """Against the API server (which validates the projected volume): each worker Job's pods get the ingest
    service's URL and a token for its audience, and nothing that opens Postgres; no Secret is written."""
    async with running(config, cluster):
        await cluster.create(IJS, ij("first"))
        job = await until(lambda: cluster.get(JOBS, "first-run-1"))
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["HEADRACE_INGEST_URL"] == {"name": "HEADRACE_INGEST_URL", "value": INGEST_URL}
    assert "DATABASE_URL" not in env and not any("valueFrom" in e for e in env.values()), env
    (projected,) = [v["projected"] for v in pod["volumes"] if "projected" in v]
    assert projected["sources"] == [
        {"serviceAccountToken": {"audience": "headrace-ingest", "expirationSeconds": 600, "path": "token"}}
    ]
    assert pod["automountServiceAccountToken"] is False
    assert await cluster.get(SECRETS, "headrace-worker-database") is None


async def test_search_statistics_are_built_after_a_run_finishes(
    cluster: Cluster, config: OperatorSettings, pool: Pool
) -> None:
    async with running(config, cluster):
        created = await cluster.create(IJS, ij(spec={"source": {"volume": {"claimName": "docs"}}}))
        uid = uuid.UUID(created["metadata"]["uid"])
        await until(lambda: _is(phase(cluster), "Running"))
        # What the run's worker does: discover one document, store its chunks, drain the queue, close the run.
        record = await jobs.get_job(pool, uid)
        assert record is not None
        (task,) = await queue.lease(pool, uid, worker="test", lease_seconds=60)
        await documents.store_document(
            pool,
            uid,
            record.current_run,
            documents.DocumentRecord(
                uri="lighthouse.txt",
                title="Lighthouse",
                content_hash="h",
                fingerprint="f",
                format="text",
                bytes=40,
                chunks=[documents.ChunkRecord(0, "the keeper trims the lighthouse lamp at dusk")],
            ),
        )
        async with pool.acquire() as conn:
            await runs.set_discovered(conn, uid, record.current_run, total=1, done=True)
        assert await queue.ack(pool, task)
        assert not await search_statistics.stale(pool, uid), "a run in progress: nothing to build yet"
        assert await runs.finish_run(pool, record, record.current_run) is not None
        # The operator's statistics loop builds them (its pass runs every observe interval).
        built = await until(
            lambda: pool.fetchrow("SELECT chunks, run FROM headrace.search_statistics WHERE job_uid = $1", uid)
        )
        assert (built["chunks"], built["run"]) == (1, record.current_run)
        assert await pool.fetchval("SELECT df FROM headrace.lexemes WHERE job_uid = $1 AND lexeme = 'lighthous'", uid)
        assert not await search_statistics.stale(pool, uid)
        await until(lambda: _is(phase(cluster), "Succeeded"))
