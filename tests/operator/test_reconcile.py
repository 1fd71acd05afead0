"""The reconcile functions driven with kopf's own Body and Patch, on real Postgres and kmock's emulator."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import kmock
import kopf
import pytest

from headrace.operator import reconcile
from headrace.operator.handlers import glance, observation, write
from headrace.operator.reconcile import Operator, Reconciled, Runtime
from headrace.store import jobs, queue, runs
from tests.operator.conftest import ij, patched

pytestmark = pytest.mark.postgres

JOBS = "batch/v1/jobs"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

Step = Callable[..., Awaitable[Reconciled]]


async def handle(
    step: Step, op: Operator, raw: dict[str, Any], now: datetime = NOW, *, runtime: Runtime | None = None
) -> tuple[kopf.Patch, list[Any]]:
    """What a handler running `step` does with `raw`: the patch it writes and the Events it posts."""
    seen = observation(kopf.Body(raw), op.config)
    done = await step(op, runtime or Runtime(), seen, now=now)
    patch = kopf.Patch()
    write(patch, seen, done)
    return patch, list(done.events)


async def apply(
    op: Operator, raw: dict[str, Any], now: datetime = NOW, *, runtime: Runtime | None = None
) -> tuple[dict[str, Any], list[Any]]:
    """The object after the apply handler's patch, and the Events it posts."""
    patch, events = await handle(reconcile.apply_spec, op, raw, now, runtime=runtime)
    return patched(raw, patch), events


async def observe(
    op: Operator, raw: dict[str, Any], now: datetime = NOW, *, runtime: Runtime | None = None
) -> tuple[dict[str, Any], list[Any]]:
    """The object after the observe timer's patch, and the Events it posts."""
    patch, events = await handle(reconcile.observe, op, raw, now, runtime=runtime)
    return patched(raw, patch), events


def exists(emulator: kmock.KubernetesEmulator, resource: str, name: str, namespace: str = "default") -> bool:
    key = (kmock.resource(resource), namespace, name)
    return key in emulator.objects and not emulator.objects[key].deleted


def conditions(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in raw["status"]["conditions"]}


async def drain(op: Operator, uid: str, *, total: int = 0) -> None:
    """Do what the workers do when a run has nothing to ingest: discover, find nothing, close the run."""
    job = await jobs.get_job(op.pool, uuid.UUID(uid))
    assert job is not None
    (task,) = await queue.lease(op.pool, job.uid, worker="test", lease_seconds=30)
    async with op.pool.acquire() as conn:
        await runs.set_discovered(conn, job.uid, job.current_run, total=total, done=True)
    assert await queue.ack(op.pool, task)
    assert await runs.finish_run(op.pool, job, job.current_run) is not None


async def test_create_makes_job_hpa_run_and_status(op: Operator, emulator: kmock.KubernetesEmulator) -> None:
    raw, events = await apply(op, ij())
    uid = raw["metadata"]["uid"]

    worker_job = emulator.objects[JOBS, "default", "handbook-run-1"]
    assert worker_job["spec"]["parallelism"] == 1
    assert worker_job["metadata"]["ownerReferences"][0]["uid"] == uid
    hpa = emulator.objects[HPAS, "default", "handbook"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "headrace.io/v1alpha1",
        "kind": "IngestionJob",
        "name": "handbook",
    }

    status = raw["status"]
    assert status["phase"] == "Running" and status["run"] == 1 and status["jobName"] == "handbook-run-1"
    assert status["observedGeneration"] == 1
    assert status["workers"]["selector"].endswith(f"headrace.io/ingestionjob-uid={uid}")
    cond = conditions(raw)
    assert set(cond) == {"Ready", "Progressing", "Succeeded", "Failed", "EmbeddingsReady"}
    assert (cond["Ready"]["status"], cond["Progressing"]["status"]) == ("True", "True")
    assert all(c["lastTransitionTime"] and c["observedGeneration"] == 1 for c in cond.values())
    assert [e.reason for e in events] == ["RunStarted", "CreatedHorizontalPodAutoscaler", "CreatedJob"]

    counts = await queue.counts(op.pool, uuid.UUID(uid))
    assert counts["pending"] == 1  # the discover task
    logged = [(e["reason"], e["run"]) for e in await jobs.events(op.pool, uuid.UUID(uid))]
    # One vocabulary: the log the API streams holds the same reasons as the Kubernetes Events.
    assert logged == [("RunStarted", 1), ("CreatedHorizontalPodAutoscaler", 1), ("CreatedJob", 1)]


async def test_apply_is_idempotent(op: Operator, emulator: kmock.KubernetesEmulator) -> None:
    raw, _ = await apply(op, ij())
    later = NOW + timedelta(minutes=5)
    again, events = await apply(op, raw, now=later)
    assert again["status"]["run"] == 1 and events == []
    # Nothing changed status, so no transition time moved.
    assert conditions(again) == conditions(raw)
    assert [key[2] for key in emulator.objects if key[0].plural == "jobs"] == ["handbook-run-1"]
    # A quiet job costs the timer no writes, from its first look on: never its own spec, which kopf would
    # take for a user's change and apply again (the API server fills in the replicas /scale reads).
    patch, events = await handle(reconcile.observe, op, again, later)
    assert dict(patch) == {} and events == []
    assert (await queue.counts(op.pool, uuid.UUID(raw["metadata"]["uid"])))["pending"] == 1


async def test_source_change_starts_a_new_run(op: Operator, emulator: kmock.KubernetesEmulator) -> None:
    raw, _ = await apply(op, ij())
    raw["spec"] = {"source": {"volume": {"claimName": "docs", "path": "handbook"}}}
    raw["metadata"]["generation"] = 2
    raw, events = await apply(op, raw)
    assert raw["status"]["run"] == 2 and raw["status"]["jobName"] == "handbook-run-2"
    assert exists(emulator, JOBS, "handbook-run-2")
    assert [e.reason for e in events] == ["RunStarted", "CreatedJob"]
    # The superseded run's workers stop (exit 143, ignored by its podFailurePolicy).
    assert emulator.objects[JOBS, "default", "handbook-run-1"]["spec"]["parallelism"] == 0
    # Scaling is no new run: the same Job gets the new parallelism.
    raw["spec"]["workers"] = {"replicas": 3}
    raw, _ = await apply(op, raw)
    assert raw["status"]["run"] == 2
    assert emulator.objects[JOBS, "default", "handbook-run-2"]["spec"]["parallelism"] == 3


async def test_suspend_and_resume(op: Operator, emulator: kmock.KubernetesEmulator) -> None:
    raw, _ = await apply(op, ij())
    raw["spec"]["suspend"] = True
    raw, events = await apply(op, raw)
    assert emulator.objects[JOBS, "default", "handbook-run-1"]["spec"]["parallelism"] == 0
    assert raw["status"]["phase"] == "Suspended" and raw["status"]["workers"]["replicas"] == 0
    assert conditions(raw)["Progressing"]["reason"] == "Suspended"
    assert [e.reason for e in events] == ["RunSuspended"]
    raw["spec"]["suspend"] = False
    raw, _ = await apply(op, raw)
    assert emulator.objects[JOBS, "default", "handbook-run-1"]["spec"]["parallelism"] == 1
    assert raw["status"]["phase"] == "Running"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"source": {"volume": {"path": "docs"}}}, "spec.source.volume.claimName"),
        ({"source": {}}, "source"),
        ({"source": {"volume": {"claimName": "d"}}, "chunking": {"targetSize": 200, "overlap": 150}}, "overlap"),
        ({"source": {"volume": {"claimName": "d"}}, "textSearchConfig": "klingon"}, "spec.textSearchConfig"),
        # Passes the CRD's five-field pattern, never fires: the operator refuses it naming the field.
        ({"source": {"volume": {"claimName": "d"}}, "schedule": "0 0 30 2 *"}, "spec.schedule"),
    ],
)
async def test_invalid_spec_is_a_condition(
    op: Operator, emulator: kmock.KubernetesEmulator, spec: dict[str, Any], field: str
) -> None:
    raw, events = await apply(op, ij(spec=spec))
    ready = conditions(raw)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert field in ready["message"]
    assert raw["status"]["phase"] == "Failed" and [e.type for e in events] == ["Warning"]
    assert not [key for key in emulator.objects if key[0].plural != "namespaces"]
    # The API shows it too, with the same phase and the reason, instead of a 404.
    view = await jobs.find_job(op.pool, "default", "handbook")
    assert view is not None and view.phase == "Failed" and view.spec_error is not None and field in view.spec_error
    # The timer leaves it alone, and fixing the spec recovers.
    observed, _ = await observe(op, raw)
    assert observed == raw
    raw["spec"] = {"source": {"volume": {"claimName": "docs"}}}
    raw, _ = await apply(op, raw)
    assert conditions(raw)["Ready"]["status"] == "True" and raw["status"]["phase"] == "Running"


async def test_builtin_mode_scales_from_backlog_without_hpa(op: Operator, emulator: kmock.KubernetesEmulator) -> None:
    raw, _ = await apply(op, ij())
    assert exists(emulator, HPAS, "handbook")
    raw["spec"]["workers"] = {"min": 1, "max": 5, "tasksPerWorker": 2, "autoscaling": {"mode": "builtin"}}
    raw, _ = await apply(op, raw)
    assert not exists(emulator, HPAS, "handbook")
    uid = uuid.UUID(raw["metadata"]["uid"])
    await queue.enqueue(
        op.pool, uid, 1, [queue.NewTask("ingest", f"b{i}", {}) for i in range(7)], max_attempts=3
    )  # 8 pending with discover: ceil(8/2) = 4
    raw, _ = await observe(op, raw)
    assert raw["spec"]["workers"]["replicas"] == 4
    raw["metadata"]["generation"] = 2
    raw, _ = await apply(op, raw)
    assert emulator.objects[JOBS, "default", "handbook-run-1"]["spec"]["parallelism"] == 4
    assert raw["status"]["workers"]["replicas"] == 4


async def test_drained_run_succeeds_and_agrees_with_the_api(op: Operator, emulator: kmock.KubernetesEmulator) -> None:
    raw, _ = await apply(op, ij())
    await drain(op, raw["metadata"]["uid"])
    # The run's row in Postgres says how it ended; status follows it even while the last worker exits.
    raw, events = await observe(op, raw, now=NOW + timedelta(seconds=30))
    assert raw["status"]["phase"] == "Succeeded"
    succeeded = conditions(raw)["Succeeded"]
    assert succeeded["status"] == "True" and succeeded["lastTransitionTime"] == "2026-11-23T12:00:30Z"
    assert raw["status"]["completionTime"] and raw["status"]["progress"]["percent"] == 100
    assert [(e.type, e.reason) for e in events] == [("Normal", "RunSucceeded")]
    view = await jobs.find_job(op.pool, "default", "handbook")
    assert view is not None and view.phase == "Succeeded" and view.state is not None
    assert view.state.end_reason == "RunSucceeded"
    # A finished run is not started again, and its Job is not recreated once its TTL removed it.
    del emulator.objects[JOBS, "default", "handbook-run-1"]
    raw, events = await observe(op, raw)
    assert raw["status"]["phase"] == "Succeeded" and events == []
    assert not exists(emulator, JOBS, "handbook-run-1")


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("DeadlineExceeded", "Job was active longer than specified deadline"),
        ("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
    ],
)
async def test_failed_worker_job_closes_the_run_everywhere(
    op: Operator, emulator: kmock.KubernetesEmulator, reason: str, message: str
) -> None:
    spec = {"source": {"volume": {"claimName": "d"}}, "activeDeadlineSeconds": 60, "schedule": "0 * * * *"}
    raw, _ = await apply(op, ij(spec=spec))
    uid = uuid.UUID(raw["metadata"]["uid"])
    failed = {"type": "Failed", "status": "True", "reason": reason, "message": message}
    emulator.objects[JOBS, "default", "handbook-run-1"].patch({"status": {"conditions": [failed]}})
    raw, events = await observe(op, raw)

    # The CR, the API and the run's row say the same: Failed, with the Job's reason, at one end time.
    assert raw["status"]["phase"] == "Failed" and raw["status"]["completionTime"]
    assert conditions(raw)["Failed"]["reason"] == reason and message in conditions(raw)["Failed"]["message"]
    assert [(e.type, e.reason) for e in events] == [("Warning", "RunFailed")]
    view = await jobs.find_job(op.pool, "default", "handbook")
    assert view is not None and view.phase == "Failed" and view.state is not None
    assert view.state.end_reason == reason and message in (view.state.error or "")
    assert view.state.finished_at is not None
    assert raw["status"]["completionTime"] == view.state.finished_at.isoformat().replace("+00:00", "Z")
    assert await jobs.job_phase(op.pool, uid) == ("Failed", 1)  # what the event stream ends on
    logged = [e["reason"] for e in await jobs.events(op.pool, uid)]
    assert logged.count("RunFailed") == 1
    assert (await queue.counts(op.pool, uid))["pending"] == 0  # nobody would work on them

    # Observing again changes nothing; the schedule keeps firing after the failure.
    again, events = await observe(op, raw)
    assert events == [] and again == raw
    assert view.state.started_at is not None
    next_hour = view.state.started_at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    raw, events = await observe(op, raw, now=next_hour + timedelta(seconds=1))
    assert raw["status"]["run"] == 2 and raw["status"]["phase"] == "Running"
    assert exists(emulator, JOBS, "handbook-run-2")


async def test_schedule_starts_a_new_run_after_the_last_one(op: Operator, emulator: kmock.KubernetesEmulator) -> None:
    raw, _ = await apply(op, ij(spec={"source": {"volume": {"claimName": "d"}}, "schedule": "0 * * * *"}))
    uid = raw["metadata"]["uid"]
    raw, _ = await observe(op, raw)
    assert raw["status"]["run"] == 1  # still running: runs never overlap
    await drain(op, uid)
    state = await jobs.run_state(op.pool, uuid.UUID(uid))
    assert state is not None and state.started_at is not None
    raw, _ = await observe(op, raw, now=state.started_at + timedelta(seconds=1))
    assert raw["status"]["run"] == 1  # not due yet
    next_hour = state.started_at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    raw, events = await observe(op, raw, now=next_hour + timedelta(seconds=1))
    assert raw["status"]["run"] == 2 and "lastScheduleTime" in raw["status"]
    assert exists(emulator, JOBS, "handbook-run-2")
    assert "RunStarted" in [e.reason for e in events]


@pytest.mark.parametrize("retention", ["Delete", "Retain"])
async def test_delete_applies_retention(op: Operator, retention: str) -> None:
    raw, _ = await apply(op, ij(spec={"source": {"volume": {"claimName": "d"}}, "retention": retention}))
    uid = uuid.UUID(raw["metadata"]["uid"])
    outcome = await reconcile.finalize(op, glance(kopf.Body(raw)))
    assert outcome == {"Delete": "Deleted", "Retain": "Retained"}[retention]
    record = await op.pool.fetchrow("SELECT deleted_at FROM headrace.jobs WHERE uid = $1", uid)
    if retention == "Delete":
        assert record is None
    else:
        assert record is not None and record["deleted_at"] is not None
    assert (await queue.counts(op.pool, uid))["pending"] == 0


async def test_hpa_drift_is_corrected_and_defaults_are_not_drift(
    op: Operator, emulator: kmock.KubernetesEmulator
) -> None:
    raw, _ = await apply(op, ij())
    hpa = emulator.objects[HPAS, "default", "handbook"]
    hpa.patch({"spec": {"maxReplicas": 99, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}}})
    await apply(op, raw)
    assert hpa["spec"]["maxReplicas"] == 4
    versions = len(hpa.history)
    await apply(op, raw)  # a server-defaulted field (behavior) alone is no reason to patch
    assert len(hpa.history) == versions


async def test_observe_leaves_creation_to_apply_until_it_finished(
    op: Operator, emulator: kmock.KubernetesEmulator
) -> None:
    # The timer fires while apply_spec still works on a new job (a burst of creates on a busy API server):
    # the job is registered but its status not yet written. Creating the Job and HPA is apply's work.
    raw = ij()
    applied, _ = await apply(op, raw)
    del emulator.objects[JOBS, "default", "handbook-run-1"]
    del emulator.objects[HPAS, "default", "handbook"]
    requests = len(list(emulator))

    patch, events = await handle(reconcile.observe, op, raw)
    assert dict(patch) == {} and events == []
    assert not exists(emulator, JOBS, "handbook-run-1") and not exists(emulator, HPAS, "handbook")
    assert len(list(emulator)) == requests

    # Once apply wrote status for this generation, the timer corrects drift: the deleted objects come back.
    await observe(op, applied)
    assert exists(emulator, JOBS, "handbook-run-1") and exists(emulator, HPAS, "handbook")


async def test_a_run_with_failures_posts_one_summary_event(op: Operator, emulator: kmock.KubernetesEmulator) -> None:
    from headrace.store import documents

    raw, _ = await apply(op, ij())
    uid = uuid.UUID(raw["metadata"]["uid"])
    failures = {"docs/b.pdf": "encrypted PDF", "docs/a.pdf": "not a PDF", "docs/c.txt": "too large"}
    await documents.record_failures(op.pool, uid, 1, failures)
    first = await op.pool.fetchval("SELECT uri FROM headrace.documents WHERE job_uid = $1 ORDER BY id LIMIT 1", uid)
    await drain(op, str(uid), total=3)
    complete = {"type": "Complete", "status": "True", "reason": "CompletionsReached"}
    emulator.objects[JOBS, "default", "handbook-run-1"].patch({"status": {"conditions": [complete]}})
    raw, events = await observe(op, raw)
    summaries = [e for e in events if e.reason == "DocumentsFailed"]
    assert [(e.type, e.message) for e in summaries] == [
        ("Warning", f"3 documents failed; first: {first}: {failures[first]}")
    ]
    # Once per run, also after an operator restart (the log in Postgres remembers).
    raw, events = await observe(op, raw)
    assert [e for e in events if e.reason == "DocumentsFailed"] == []
    logged = await jobs.events(op.pool, uid)
    assert [e["reason"] for e in logged].count("DocumentsFailed") == 1


async def test_a_run_without_failures_posts_no_summary(op: Operator, emulator: kmock.KubernetesEmulator) -> None:
    raw, _ = await apply(op, ij())
    await drain(op, raw["metadata"]["uid"])
    complete = {"type": "Complete", "status": "True", "reason": "CompletionsReached"}
    emulator.objects[JOBS, "default", "handbook-run-1"].patch({"status": {"conditions": [complete]}})
    raw, events = await observe(op, raw)
    assert "DocumentsFailed" not in [e.reason for e in events]


@pytest.mark.parametrize("retention", ["Delete", "Retain"])
async def test_a_job_deleted_while_the_timer_looks_is_gone_to_it(op: Operator, retention: str) -> None:
    """The finalizer deletes (or retains) the job between the timer's read and its write: the tick writes
    nothing and raises nothing (it used to fail on the event log's foreign key, retried by kopf after 60 s)."""
    from headrace.store import documents

    raw, _ = await apply(op, ij(spec={"source": {"volume": {"claimName": "d"}}, "retention": retention}))
    uid = uuid.UUID(raw["metadata"]["uid"])
    await documents.record_failures(op.pool, uid, 1, {"a.pdf": "not a PDF"})
    await drain(op, str(uid), total=1)  # the tick has an Event of its own to log: DocumentsFailed
    async with op.pool.acquire() as finalizer, finalizer.transaction():
        # The finalizer's last statement, not committed yet: the tick reads the job as it was.
        if retention == "Delete":
            await finalizer.execute("DELETE FROM headrace.jobs WHERE uid = $1", uid)
        else:
            await finalizer.execute("UPDATE headrace.jobs SET deleted_at = now() WHERE uid = $1", uid)
        tick = asyncio.create_task(observe(op, raw))
        while not tick.done():  # (before the fix it did not wait: it wrote, or failed on the foreign key)
            if await _waits_for_a_lock(op, finalizer):
                break
            await asyncio.sleep(0.01)
    _, events = await tick
    assert events == []
    logged = [e["reason"] for e in await jobs.events(op.pool, uid)]
    assert "DocumentsFailed" not in logged
    # A tick that starts after the deletion began looks no further.
    deleting = {**raw, "metadata": {**raw["metadata"], "deletionTimestamp": "2026-11-23T12:00:00Z"}}
    patch, events = await handle(reconcile.observe, op, deleting)
    assert dict(patch) == {} and events == []


async def _waits_for_a_lock(op: Operator, holder: Any) -> bool:
    """Whether another session waits for a lock `holder`'s session holds."""
    pid = holder.get_server_pid()
    return bool(
        await op.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE NOT l.granted AND $1 = ANY (pg_blocking_pids(l.pid)))", pid
        )
    )
