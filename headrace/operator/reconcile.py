"""What the operator does, as typed plain functions the kopf handlers call.

- `apply_spec` reacts to a created, changed or resumed IngestionJob: register it, start a run when the
  source, chunking or embedding changed, make sure the worker Job and the HPA exist, and say the status.
- `observe` runs on a timer while a job has a run in progress, a schedule or a request waiting
  (`needs_observe`): it looks at Postgres and at the worker Job, closes a run whose Job failed, keeps
  parallelism equal to the desired replicas, sizes the job in builtin mode, starts scheduled and
  requested runs, and says the status.
- `finalize` applies spec.retention when the IngestionJob is deleted.

Each takes the job as the handler read it (`Observation`) and returns what to change (`Reconciled`): the
status and the replicas, which only the handler writes into kopf's patch, and the Events to post. Every
step is idempotent, so an operator killed anywhere converges when it comes back; none of them touches
what the IngestionJob does not own (`children`).
"""

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from croniter import croniter

from headrace.model import TERMINAL_PHASES, IngestionJob, IngestionJobStatus, WorkerStatus
from headrace.model.events import STORE_RECORDED, Reason, run_started
from headrace.model.run import RunState
from headrace.operator import status as st
from headrace.operator.children import Children, ensure_children, wanted
from headrace.operator.kube import KubeClient
from headrace.operator.legacy_secrets import LegacySecrets
from headrace.operator.namespaces import NamespaceLookups
from headrace.operator.observation import Glance, Observation
from headrace.operator.resources.job import parallelism
from headrace.operator.resources.labels import selector
from headrace.operator.settings import OperatorSettings
from headrace.store import documents, jobs, queue, runs, vectors
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord, UnknownTextSearchConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Operator:
    """What the operator is given when it starts and keeps unchanged: the database, the Kubernetes client
    and the settings. What it learns while it runs is kept apart, in `Runtime`."""

    pool: Pool
    kube: KubeClient
    config: OperatorSettings


class Runtime:
    """What the operator learns while it runs, each part with its owner: namespace lookups in flight, the
    Secrets of an earlier release still to delete, whether the database can store vectors, and the
    embedding spaces known to exist."""

    def __init__(self, *, legacy_secrets: LegacySecrets | None = None) -> None:
        self.namespaces = NamespaceLookups()
        self.legacy_secrets = legacy_secrets or LegacySecrets()
        self._vectors = False
        self._spaces: set[tuple[str, int]] = set()

    async def vectors_available(self, pool: Pool) -> bool:
        """Whether vectors can be stored. Once they can, they stay so: the operator applied the migrations
        when it started, and pgvector is not uninstalled under a running installation. Until then, asked
        each time."""
        if not self._vectors:
            self._vectors = await vectors.available(pool)
        return self._vectors

    async def ensure_space(self, pool: Pool, model: str, dimensions: int) -> None:
        """Make the embedding space exist (`vectors.space_for`), asking the database only until it does: spaces
        are never deleted, and every job of a model and dimension shares one (each reconcile and each tick
        of every job asked before)."""
        if (model, dimensions) not in self._spaces:
            await vectors.space_for(pool, model, dimensions)
            self._spaces.add((model, dimensions))


@dataclass(frozen=True)
class Reconciled:
    """What a step decided: the status to write (None: leave it as it is), the Events to post, and the
    replicas the builtin autoscaler sets in spec.workers (None: leave them)."""

    status: IngestionJobStatus | None = None
    events: tuple[st.Event, ...] = ()
    replicas: int | None = None


NOTHING = Reconciled()


@dataclass(frozen=True)
class _Run:
    """The run a step works on, as the step just read it, and what the step did on the way."""

    record: JobRecord
    number: int
    state: RunState | None
    began: tuple[st.Event, ...] = ()
    """Events of what this step began: adopted retained data, started a run."""
    last_schedule_time: datetime | None = None
    handled_run_request: str | None = None
    handled_retry_request: str | None = None

    def handled(self, kind: runs.RequestKind, value: str) -> "_Run":
        if kind == "run":
            return dataclasses.replace(self, handled_run_request=value)
        return dataclasses.replace(self, handled_retry_request=value)

    def status_fields(self) -> dict[str, Any]:
        """The status fields this step sets beside the run's own (`st.next_status`)."""
        fields = {
            "last_schedule_time": self.last_schedule_time,
            "last_handled_run_request": self.handled_run_request,
            "last_handled_retry_request": self.handled_retry_request,
        }
        return {name: value for name, value in fields.items() if value is not None}


def needs_observe(seen: Glance) -> bool:
    """Whether the observe timer has anything to look at: a run in progress or not yet reported, workers
    still exiting, a schedule, or a run request not handled yet. A finished job costs no API calls."""
    if seen.reported.get("observedGeneration") != seen.generation:
        return True
    if seen.reported.get("phase") not in TERMINAL_PHASES or (seen.reported.get("workers") or {}).get("active"):
        return True
    if seen.spec.get("schedule"):
        return True
    return bool(seen.pending_requests)


async def apply_spec(op: Operator, runtime: Runtime, seen: Observation, *, now: datetime) -> Reconciled:
    """React to a created, updated or resumed IngestionJob."""
    if seen.job is None:
        return await _refuse(op, seen, seen.spec_error or "", now=now)
    job = seen.job
    try:
        namespace_uid = await runtime.namespaces.uid(op.kube, seen.namespace)
        adopted = await jobs.adopt_retained(op.pool, uid=seen.uid, namespace_uid=namespace_uid, name=seen.name)
        record = await jobs.register_job(
            op.pool,
            uid=seen.uid,
            namespace=seen.namespace,
            name=seen.name,
            generation=job.metadata.generation or 0,
            spec=job.spec,
            namespace_uid=namespace_uid,
        )
    except UnknownTextSearchConfig as exc:
        return await _refuse(op, seen, str(exc), now=now)
    began: list[st.Event] = []
    if adopted is not None:
        message = f"Adopted the data retained from the former IngestionJob {seen.name} (uid {adopted})"
        began.append(st.Event("Normal", Reason.ADOPTED_DATA, message))
        log.info("Adopted retained data", extra={"namespace": seen.namespace, "ingestionjob": seen.name})
    await runtime.legacy_secrets.remove(op.kube, op.pool, seen.namespace, namespace_uid)
    if adopted is not None:
        reason = f"adopted the data of uid {adopted}"
    else:
        reason = "created" if record.current_run == 0 else "source, chunking or embedding changed"
    run = await runs.ensure_run(op.pool, record, reason=reason)
    if run != record.current_run:
        began.append(st.Event("Normal", Reason.RUN_STARTED, run_started(run, reason)))
    state = await jobs.run_state(op.pool, record.uid, run)
    return await _converge(op, runtime, seen, job, _Run(record, run, state, began=tuple(began)), now=now)


async def observe(op: Operator, runtime: Runtime, seen: Observation, *, now: datetime) -> Reconciled:
    """Look at the job's actual state and bring status, parallelism and replicas in line with it.

    A job being deleted is the finalizer's: the timer looks no further, and a tick that began before the
    deletion changes nothing once it finds the job's row gone (`jobs.JobGone`, `jobs.record_events`)."""
    if seen.deleting:
        return NOTHING
    try:
        return await _observe(op, runtime, seen, now=now)
    except jobs.JobGone:
        log.info("Skipped a deleted IngestionJob", extra={"namespace": seen.namespace, "ingestionjob": seen.name})
        return NOTHING


async def _observe(op: Operator, runtime: Runtime, seen: Observation, *, now: datetime) -> Reconciled:
    job = seen.job
    if job is None:
        return NOTHING  # apply_spec reported it; nothing runs until the spec is fixed
    if seen.status.observed_generation != job.metadata.generation:
        # apply_spec has not finished with this generation (it writes observedGeneration last). Creating its
        # objects is its work: doing it here as well doubled every request of a burst of new jobs.
        return NOTHING
    record = await jobs.get_job(op.pool, seen.uid)
    if record is None or record.current_run == 0:
        return NOTHING  # apply_spec has not registered it yet
    current = _Run(record, record.current_run, await jobs.run_state(op.pool, record.uid, record.current_run))
    replicas = None
    if _schedule_due(job, current.state, now=now):
        reason = f"schedule {job.spec.schedule}"
        run = await runs.start_run(op.pool, record, reason=reason)
        started = st.Event("Normal", Reason.RUN_STARTED, run_started(run, reason))
        state = await jobs.run_state(op.pool, record.uid, run)
        current = _Run(record, run, state, began=(started,), last_schedule_time=now)
    elif (
        job.spec.workers.autoscaling.mode == "builtin"
        and not job.spec.suspend
        and current.state
        and not current.state.finished
    ):
        replicas = await _replicas_from_backlog(op, job, record)
    reconciled = await _converge(op, runtime, seen, job, current, now=now)
    return dataclasses.replace(reconciled, replicas=replicas)


async def finalize(op: Operator, seen: Glance) -> str:
    """Apply spec.retention to the job's data; returns what was done."""
    # The spec as written: one invalid in other ways still says what to do with its data.
    if seen.spec.get("retention") == "Delete":
        await jobs.delete_job_data(op.pool, seen.uid)
        return "Deleted"
    await jobs.retain_job_data(op.pool, seen.uid)
    return "Retained"


async def _refuse(op: Operator, seen: Observation, message: str, *, now: datetime) -> Reconciled:
    """An invalid spec: a condition on the object and a mark in Postgres, so the API says so too."""
    await jobs.record_invalid_spec(
        op.pool,
        uid=seen.uid,
        namespace=seen.namespace,
        name=seen.name,
        generation=seen.generation or 0,
        spec=dict(seen.spec),
        error=message,
    )
    status, events = st.invalid_status(seen.status, message, generation=seen.generation, now=now)
    log.warning(
        "Rejected IngestionJob", extra={"namespace": seen.namespace, "ingestionjob": seen.name, "error": message}
    )
    return Reconciled(status=status, events=tuple(events))


async def _converge(
    op: Operator, runtime: Runtime, seen: Observation, job: IngestionJob, current: _Run, *, now: datetime
) -> Reconciled:
    """Start a requested run, make the run's objects exist, close a run whose Job failed, and say the status.

    `current.state` is the run's state as the caller just read it (the timer runs this for every job, every
    tick: each query less counts)."""
    current = await _start_requested(op, seen.pending_requests, current)
    has_vectors = await runtime.vectors_available(op.pool)
    embedding = job.spec.embedding
    if has_vectors and embedding.enabled and embedding.model_name is not None and embedding.dimensions is not None:
        # Before the workers start, so that no two of them race to create it.
        await runtime.ensure_space(op.pool, embedding.model_name, embedding.dimensions)
    # This run's objects were made before when the status already reports the run (a later generation or a
    # timer tick): read them first. A job's first reconcile, or a new run, creates them.
    run, state = current.number, current.state
    made = seen.status.observed_generation is not None and seen.status.run == run
    want = wanted(job, run, op.config, finished=state is not None and state.finished)
    children = await ensure_children(op.kube, want, made=made)
    state = await _close_if_job_failed(op, job, current.record, run, state, children)
    status, changes = st.next_status(
        job,
        seen.status,
        run=run,
        job_name=want.worker_job_name,
        state=state,
        workers=_workers(job, children),
        problem=children.problem,
        vectors_available=has_vectors,
        now=now,
        **current.status_fields(),
    )
    events = [*current.began, *children.events, *changes]
    if state is not None and state.finished and state.summary.failed:
        events += await _failures_summary(op, current.record, run)
    if not await _record(op, current.record, run, events):
        raise jobs.JobGone(str(current.record.uid))
    return Reconciled(status=status, events=tuple(events))


async def _start_requested(op: Operator, requests: list[tuple[runs.RequestKind, str]], current: _Run) -> _Run:
    """Start the run the annotations ask for, unless a run is going on: one run at a time, so a request
    waits for the current run to end. Each value is acted on once (`runs.started_for`)."""
    for kind, value in requests:
        if await runs.started_for(op.pool, current.record.uid, kind, value) is not None:
            current = current.handled(kind, value)  # started before a restart lost the status write: not again
            continue
        if current.began or (current.state is not None and not current.state.finished):
            break
        record = await jobs.get_job(op.pool, current.record.uid) or current.record
        run = await runs.start_requested_run(op.pool, record, kind, value)
        (latest,) = await jobs.list_runs(op.pool, record.uid, limit=1)
        started = st.Event("Normal", Reason.RUN_STARTED, run_started(run, latest.reason))
        state = await jobs.run_state(op.pool, record.uid, run)
        current = dataclasses.replace(
            current.handled(kind, value), record=record, number=run, state=state, began=(*current.began, started)
        )
    return current


async def _close_if_job_failed(
    op: Operator, job: IngestionJob, record: JobRecord, run: int, state: RunState | None, children: Children
) -> RunState | None:
    """Close a run in progress whose worker Job failed, with the Job's reason; the run's state after."""
    outcome = st.job_outcome(children.worker_job)
    if state is None or state.finished or outcome is None or outcome[0] != "Failed":
        return state
    _, reason, message = outcome
    if await runs.close_run(op.pool, record.uid, run, reason=reason, message=f"the worker Job failed: {message}"):
        where = {"namespace": job.metadata.namespace, "ingestionjob": job.metadata.name}
        log.info("Closed run", extra={**where, "run": run, "reason": reason})
    return await jobs.run_state(op.pool, record.uid, run)


MAX_EVENT_MESSAGE = 1024  # what `kubectl describe` shows whole; the API has every failure in full


async def _failures_summary(op: Operator, record: JobRecord, run: int) -> list[st.Event]:
    """One Event for people when a finished run had failed documents (the API lists each of them).

    Posted once per run: the job's event log in Postgres, where `_record` writes it, says whether it was.
    """
    if await jobs.has_event(op.pool, record.uid, run, Reason.DOCUMENTS_FAILED):
        return []
    failure = await documents.first_failure(op.pool, record.uid, run)
    if failure is None:
        return []
    count, uri, reason = failure
    noun = "document" if count == 1 else "documents"
    message = f"{count} {noun} failed; first: {uri}: {reason}"
    if len(message) > MAX_EVENT_MESSAGE:
        message = message[: MAX_EVENT_MESSAGE - 1] + "…"
    return [st.Event("Warning", Reason.DOCUMENTS_FAILED, message)]


def _workers(job: IngestionJob, children: Children) -> WorkerStatus:
    active = (children.worker_job or {}).get("status", {}).get("active") or 0
    return WorkerStatus(replicas=parallelism(job), active=active, selector=selector(job))


async def _record(op: Operator, record: JobRecord, run: int, events: list[st.Event]) -> bool:
    """Copy the Events into the job's log in Postgres, which the API streams (the store logs the run's own);
    False when the job was deleted or retained meanwhile."""
    return await jobs.record_events(
        op.pool, record.uid, run, [(e.type, e.reason, e.message) for e in events if e.reason not in STORE_RECORDED]
    )


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


async def _replicas_from_backlog(op: Operator, job: IngestionJob, record: JobRecord) -> int | None:
    """The replicas the builtin autoscaler wants, when they differ from the spec's: it owns
    spec.workers.replicas, as an HPA would through /scale."""
    workers = job.spec.workers
    counts = await queue.counts(op.pool, record.uid)
    wanted = st.builtin_replicas(
        counts["pending"] + counts["leased"],
        tasks_per_worker=workers.tasks_per_worker,
        minimum=workers.min,
        maximum=workers.max,
    )
    if wanted == workers.replicas:
        return None
    log.info(
        "Scaled IngestionJob",
        extra={"namespace": job.metadata.namespace, "ingestionjob": job.metadata.name, "replicas": wanted},
    )
    return wanted
