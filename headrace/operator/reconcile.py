"""What the operator does, as typed plain functions the kopf handlers call.

- `apply_spec` reacts to a created, changed or resumed IngestionJob: register it, start a run when the
  source or chunking changed, make sure the worker Job and the HPA exist, write status.
- `observe` runs on a timer while the job exists: it looks at Postgres and at the worker Job, keeps
  parallelism equal to the desired replicas, sizes the job in builtin mode, starts scheduled runs,
  and copies progress into status.
- `finalize` applies spec.retention when the IngestionJob is deleted.

Every step is idempotent, so an operator killed anywhere converges when it comes back.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf
from croniter import croniter

from headrace.model import IngestionJob, InvalidManifest, parse_manifest
from headrace.operator import status as st
from headrace.operator.config import OperatorConfig
from headrace.operator.kube import HPAS, JOBS, KubeClient
from headrace.operator.resources.hpa import build_hpa, hpa_name
from headrace.operator.resources.job import InvalidSpec, build_worker_job, check_cluster_spec, job_name, parallelism
from headrace.operator.resources.labels import selector
from headrace.store import jobs, queue, vectors
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord, RunState, UnknownTextSearchConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Operator:
    """What every handler needs: the database, the Kubernetes client and the settings."""

    pool: Pool
    kube: KubeClient
    config: OperatorConfig


def parse(body: kopf.Body) -> IngestionJob:
    """The body as a model; InvalidSpec naming every bad field when it is not a valid, runnable IngestionJob.

    The schema already rejects most bad specs; this catches what it cannot say (or what an API server
    without CEL support let through), so a bad spec becomes a condition instead of a crash loop.
    """
    document = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            key: body.metadata.get(key) for key in ("name", "namespace", "uid", "generation") if body.metadata.get(key)
        },
        "spec": dict(body.spec),
    }
    try:
        job = parse_manifest(document, origin=f"{body.metadata.namespace}/{body.metadata.name}")
    except InvalidManifest as exc:
        raise InvalidSpec("; ".join(exc.problems)) from None
    check_cluster_spec(job)
    return job


def _uid(job: IngestionJob) -> uuid.UUID:
    assert job.metadata.uid is not None  # parse() got it from the API server
    return uuid.UUID(job.metadata.uid)


async def apply_spec(op: Operator, body: kopf.Body, patch: kopf.Patch, *, now: datetime) -> list[st.Event]:
    """React to a created, updated or resumed IngestionJob; returns the Events to post on it."""
    events: list[st.Event] = []
    try:
        job = parse(body)
        record = await jobs.register_job(
            op.pool,
            uid=_uid(job),
            namespace=job.metadata.namespace,
            name=job.metadata.name,
            generation=job.metadata.generation or 0,
            spec=job.spec,
        )
    except (InvalidSpec, UnknownTextSearchConfig) as exc:
        _write_invalid(body, patch, str(exc), now=now, events=events)
        return events
    reason = "created" if record.current_run == 0 else "source or chunking changed"
    run = await jobs.ensure_run(op.pool, record, reason=reason)
    if run != record.current_run:
        events.append(st.Event("Normal", "StartedRun", f"Started run {run}: {reason}"))
    state = await jobs.run_state(op.pool, record.uid, run)
    worker_job = await _ensure_children(op, job, run, state, events)
    has_vectors = await vectors.available(op.pool)
    _write_status(
        body, patch, job, run=run, state=state, worker_job=worker_job, now=now, events=events, vectors=has_vectors
    )
    await _record(op, record.uid, run, events)
    return events


async def observe(op: Operator, body: kopf.Body, patch: kopf.Patch, *, now: datetime) -> list[st.Event]:
    """Look at the job's actual state and bring status, parallelism and replicas in line with it;
    returns the Events to post."""
    events: list[st.Event] = []
    try:
        job = parse(body)
    except InvalidSpec:
        return events  # apply_spec reported it; nothing runs until the spec is fixed
    if body.get("status", {}).get("observedGeneration") != job.metadata.generation:
        # apply_spec has not finished with this generation (it writes observedGeneration last). Creating its
        # objects is its work: doing it here as well doubled every request of a burst of new jobs.
        return events
    record = await jobs.get_job(op.pool, _uid(job))
    if record is None or record.current_run == 0:
        return events  # apply_spec has not registered it yet
    run = record.current_run
    state = await jobs.run_state(op.pool, record.uid, run)

    if _schedule_due(job, state, now=now):
        run = await jobs.start_run(op.pool, record, reason=f"schedule {job.spec.schedule}")
        state = await jobs.run_state(op.pool, record.uid, run)
        patch.status["lastScheduleTime"] = now.isoformat()
        events.append(st.Event("Normal", "ScheduledRun", f"Started run {run} on schedule {job.spec.schedule}"))

    if job.spec.workers.autoscaling.mode == "builtin" and not job.spec.suspend and state and not state.finished:
        await _scale_from_backlog(op, job, record, patch)

    worker_job = await _ensure_children(op, job, run, state, events)
    has_vectors = await vectors.available(op.pool)
    _write_status(
        body, patch, job, run=run, state=state, worker_job=worker_job, now=now, events=events, vectors=has_vectors
    )
    await _record(op, record.uid, run, events)
    return events


async def finalize(op: Operator, body: kopf.Body) -> str:
    """Apply spec.retention to the job's data; returns what was done."""
    uid = uuid.UUID(body.metadata.uid)
    # Read the raw field: a spec invalid in other ways still says what to do with its data.
    if body.spec.get("retention") == "Delete":
        await jobs.delete_job_data(op.pool, uid)
        return "Deleted"
    await jobs.retain_job_data(op.pool, uid)
    return "Retained"


async def _record(op: Operator, uid: uuid.UUID, run: int, events: list[st.Event]) -> None:
    """Copy the Events into the job's log in Postgres, which the API streams (runs log their own start)."""
    for event in events:
        if event.reason not in ("StartedRun", "ScheduledRun"):
            await jobs.record_event(op.pool, uid, run, event.type, event.reason, event.message)


def _schedule_due(job: IngestionJob, state: RunState | None, *, now: datetime) -> bool:
    """A scheduled run starts when the last one finished and a schedule time passed since it started.

    Runs never overlap: a time that passes during a run starts one run as soon as it ends. Counting
    from the current run's start (kept in Postgres) makes this safe across operator restarts.
    """
    if job.spec.schedule is None or job.spec.suspend or state is None or not state.finished:
        return False
    if state.started_at is None:
        return False
    next_time: datetime = croniter(job.spec.schedule, state.started_at).get_next(datetime)
    return now >= next_time


async def _scale_from_backlog(op: Operator, job: IngestionJob, record: JobRecord, patch: kopf.Patch) -> None:
    workers = job.spec.workers
    counts = await queue.counts(op.pool, record.uid)
    wanted = st.builtin_replicas(
        counts["pending"] + counts["leased"],
        tasks_per_worker=workers.tasks_per_worker,
        minimum=workers.min,
        maximum=workers.max,
    )
    if wanted != workers.replicas:
        # The builtin autoscaler owns spec.workers.replicas, as an HPA would through /scale.
        patch.spec["workers"] = {"replicas": wanted}
        log.info(
            "Scaled IngestionJob",
            extra={"namespace": job.metadata.namespace, "ingestionjob": job.metadata.name, "replicas": wanted},
        )


async def _ensure_children(
    op: Operator, job: IngestionJob, run: int, state: RunState | None, events: list[st.Event]
) -> dict[str, Any] | None:
    """Create what is missing and correct what drifted; returns the run's worker Job, if any."""
    namespace, name = job.metadata.namespace, job_name(job.metadata.name, run)
    await _ensure_hpa(op, job, events)
    if run > 1:
        await _retire(op, namespace, job_name(job.metadata.name, run - 1))
    if state is not None and state.finished:
        # A finished run's Job is left alone (and may be gone after ttlSecondsAfterFinished).
        return await op.kube.get(JOBS, namespace, name)
    manifest = build_worker_job(
        job,
        run=run,
        image=op.config.worker_image,
        pods=op.config.worker_pods,
        database_secret=op.config.database_secret,
        database_secret_key=op.config.database_secret_key,
        backoff_limit=op.config.backoff_limit,
        ttl_seconds_after_finished=op.config.ttl_seconds_after_finished,
    )
    worker_job, created = await op.kube.ensure(JOBS, manifest)
    fields = {"namespace": namespace, "job": name, "parallelism": manifest["spec"]["parallelism"]}
    if created:
        log.info("Created Job", extra=fields)
        events.append(st.Event("Normal", "CreatedJob", f"Created worker Job {name} for run {run}"))
    elif worker_job.get("spec", {}).get("parallelism") != manifest["spec"]["parallelism"]:
        patched = await op.kube.patch(JOBS, namespace, name, {"spec": {"parallelism": parallelism(job)}})
        worker_job = patched or worker_job
        log.info("Scaled Job", extra=fields)
    return worker_job


async def _retire(op: Operator, namespace: str, name: str) -> None:
    """Stop the workers of a superseded run: they would otherwise go on leasing the new run's tasks."""
    previous = await op.kube.get(JOBS, namespace, name)
    if previous is None or st.job_outcome(previous) is not None or previous.get("spec", {}).get("parallelism") == 0:
        return
    await op.kube.patch(JOBS, namespace, name, {"spec": {"parallelism": 0}})
    log.info("Scaled Job", extra={"namespace": namespace, "job": name, "parallelism": 0, "reason": "superseded"})


async def _ensure_hpa(op: Operator, job: IngestionJob, events: list[st.Event]) -> None:
    namespace, name = job.metadata.namespace, hpa_name(job.metadata.name)
    if job.spec.workers.autoscaling.mode != "hpa":
        # Only one writer may own the replica count: no HPA in builtin or none mode.
        if await op.kube.delete(HPAS, namespace, name):
            log.info("Deleted HorizontalPodAutoscaler", extra={"namespace": namespace, "hpa": name})
        return
    manifest = build_hpa(job)
    existing, created = await op.kube.ensure(HPAS, manifest)
    if created:
        log.info("Created HorizontalPodAutoscaler", extra={"namespace": namespace, "hpa": name})
        events.append(st.Event("Normal", "CreatedHorizontalPodAutoscaler", f"Created HPA {name}"))
    elif not _contains(existing.get("spec"), manifest["spec"]):
        await op.kube.patch(HPAS, namespace, name, {"spec": manifest["spec"]})
        log.info("Updated HorizontalPodAutoscaler", extra={"namespace": namespace, "hpa": name})


def _contains(actual: Any, wanted: Any) -> bool:
    """Whether every field we set has our value; fields the API server defaulted are not drift."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(_contains(actual.get(key), value) for key, value in wanted.items())
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(_contains(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return bool(actual == wanted)


def _write_invalid(body: kopf.Body, patch: kopf.Patch, message: str, *, now: datetime, events: list[st.Event]) -> None:
    generation = body.metadata.get("generation")
    previous = body.get("status", {}).get("conditions") or []
    conditions = st.merge_conditions(
        previous, [st.Observed("Ready", "False", "InvalidSpec", message)], generation=generation, now=now
    )
    fresh = _phase_and_conditions(body, conditions, suspended=False, events=events)
    _patch_changed(body, patch, {**fresh, "observedGeneration": generation})
    log.warning(
        "Rejected IngestionJob",
        extra={"namespace": body.metadata.namespace, "ingestionjob": body.metadata.name, "error": message},
    )


def _write_status(
    body: kopf.Body,
    patch: kopf.Patch,
    job: IngestionJob,
    *,
    run: int,
    state: RunState | None,
    worker_job: dict[str, Any] | None,
    now: datetime,
    events: list[st.Event],
    vectors: bool,
) -> None:
    observed = st.observe_conditions(job, state=state, worker_job=worker_job, vectors_available=vectors)
    previous = body.get("status", {}).get("conditions") or []
    conditions = st.merge_conditions(previous, observed, generation=job.metadata.generation, now=now)
    fresh = _phase_and_conditions(body, conditions, suspended=job.spec.suspend, events=events)
    fresh |= {
        "observedGeneration": job.metadata.generation,
        "run": run,
        "jobName": job_name(job.metadata.name, run),
        "workers": {
            "replicas": parallelism(job),
            "active": (worker_job or {}).get("status", {}).get("active") or 0,
            "selector": selector(job),
        },
    }
    if state is not None:
        fresh |= {
            "progress": state.progress.to_wire(),
            "summary": state.summary.to_wire(),
            "startTime": state.started_at.isoformat() if state.started_at else None,
            "completionTime": state.finished_at.isoformat() if state.finished_at else None,
        }
    _patch_changed(body, patch, fresh)


def _patch_changed(body: kopf.Body, patch: kopf.Patch, fresh: dict[str, Any]) -> None:
    """Patch only the status fields whose value changed, so a quiet job costs no API writes."""
    current = body.get("status", {})
    for key, value in fresh.items():
        if current.get(key) != value:
            patch.status[key] = value


def _phase_and_conditions(
    body: kopf.Body, conditions: list[dict[str, Any]], *, suspended: bool, events: list[st.Event]
) -> dict[str, Any]:
    new_phase = st.phase(conditions, suspended=suspended)
    old_phase = body.get("status", {}).get("phase")
    if new_phase != old_phase:
        cause = st.phase_cause(conditions, new_phase)
        event = st.Event("Warning" if new_phase == "Failed" else "Normal", new_phase, f"Phase is {new_phase}: {cause}")
        events.append(event)
        log.info(
            "Changed phase",
            extra={
                "namespace": body.metadata.namespace,
                "ingestionjob": body.metadata.name,
                "from": old_phase,
                "to": new_phase,
            },
        )
    return {"conditions": conditions, "phase": new_phase}
