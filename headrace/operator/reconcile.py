"""What the operator does, as typed plain functions the kopf handlers call.

- `apply_spec` reacts to a created, changed or resumed IngestionJob: register it, start a run when the
  source, chunking or embedding changed, make sure the worker Job and the HPA exist, write status.
- `observe` runs on a timer while a job has a run in progress, a schedule or a request waiting
  (`needs_observe`): it looks at Postgres and at the worker Job, closes a run whose Job failed, keeps
  parallelism equal to the desired replicas, sizes the job in builtin mode, starts scheduled and
  requested runs, and copies progress into status.
- `finalize` applies spec.retention when the IngestionJob is deleted.

Every step is idempotent, so an operator killed anywhere converges when it comes back. Each returns
the Events to post; none of them touches what the IngestionJob does not own (`children`).
"""

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf
from croniter import croniter

from headrace.kubeapi import KubeError
from headrace.model import (
    TERMINAL_PHASES,
    IngestionJob,
    IngestionJobStatus,
    InvalidManifest,
    WorkerStatus,
    parse_manifest,
)
from headrace.model.contract import RETRY_FAILED_ANNOTATION, RUN_REQUEST_ANNOTATION
from headrace.model.events import STORE_RECORDED, Reason, run_started
from headrace.model.run import RunState
from headrace.operator import status as st
from headrace.operator.children import Children, ensure_children
from headrace.operator.kube import NAMESPACES, RETRY_DELAY, SECRETS, KubeClient
from headrace.operator.resources.job import InvalidSpec, check_cluster_spec, job_name, parallelism
from headrace.operator.resources.labels import selector
from headrace.operator.settings import OperatorSettings
from headrace.store import documents, jobs, legacy_roles, queue, runs, vectors
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord, UnknownTextSearchConfig
from headrace.store.legacy_roles import LegacySecret
from headrace.store.outage import ride_out
from headrace.store.search import statistics as search_statistics

log = logging.getLogger(__name__)

LEGACY_WORKER_SECRET = "headrace-worker-database"
"""The Secret releases with per-namespace database roles wrote into each IngestionJob's namespace (the
chart's RBAC lets the operator get and delete this name only)."""
LEGACY_ROLE_ANNOTATION = "headrace.io/database-role"
"""Set by those releases on that Secret, naming the database role whose URL it held."""


@dataclass(frozen=True)
class Operator:
    """What every handler needs: the database, the Kubernetes client and the settings."""

    pool: Pool
    kube: KubeClient
    config: OperatorSettings
    legacy_secrets: dict[uuid.UUID, LegacySecret] = field(default_factory=dict)
    """Namespaces (by UID) that may still hold the worker database Secret of an earlier release, removed
    by the first job of each served after the upgrade (`_remove_legacy_secret`)."""
    namespace_lookups: dict[str, asyncio.Future[uuid.UUID | Exception]] = field(default_factory=dict)
    """Namespace UID lookups in flight: jobs of a namespace handled at once share one request."""
    seen: dict[str, bool] = field(default_factory=dict)
    """Facts about the database that, once true, stay true while the operator runs (`_vectors_available`)."""


def parse(body: kopf.Body, config: OperatorSettings) -> IngestionJob:
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
    check_installation(job, config)
    return job


def needs_observe(body: kopf.Body) -> bool:
    """Whether the observe timer has anything to look at: a run in progress or not yet reported, workers
    still exiting, a schedule, or a run request not handled yet. A finished job costs no API calls."""
    status = body.get("status") or {}
    if status.get("observedGeneration") != body.metadata.get("generation"):
        return True
    if status.get("phase") not in TERMINAL_PHASES or (status.get("workers") or {}).get("active"):
        return True
    if body.spec.get("schedule"):
        return True
    return bool(_pending_requests(body, st.parse_status(status)))


def check_installation(job: IngestionJob, config: OperatorSettings) -> None:
    """What this installation permits: `allowPrivateNetworks` only when the operator was told to honour it,
    and Secret references only to Secrets that are not Headrace's own."""
    source = job.spec.source
    for kind, settings in (("http", source.http), ("s3", source.s3)):
        if settings is not None and settings.allow_private_networks and not config.allow_private_networks:
            raise InvalidSpec(
                f"spec.source.{kind}.allowPrivateNetworks: this installation does not permit private networks "
                "(the chart value operator.allowPrivateNetworks is false)"
            )
    check_secret_refs(job, config)


def check_secret_refs(job: IngestionJob, config: OperatorSettings) -> None:
    """Refuse a Secret reference that names one of Headrace's own Secrets in the namespace.

    A referenced Secret is mounted into the workers and its values are sent to an endpoint the spec
    chooses, so naming the image pull Secrets would hand them to whoever runs that endpoint. Any other
    Secret of the namespace may be named: whoever may create an IngestionJob may read the namespace's
    Secrets anyway (docs/security.md, "Secrets")."""
    own = {name: "a Secret the worker image is pulled with" for name in config.worker_image_pull_secrets}
    spec = job.spec
    refs = (
        ("spec.source.http.headersSecretRef.name", spec.source.http.headers_secret_ref if spec.source.http else None),
        ("spec.source.s3.credentialsSecretRef.name", spec.source.s3.credentials_secret_ref if spec.source.s3 else None),
        (
            "spec.embedding.endpoint.apiKeySecretRef.name",
            spec.embedding.endpoint.api_key_secret_ref if spec.embedding.endpoint else None,
        ),
    )
    for field_path, ref in refs:
        if ref is not None and ref.name in own:
            raise InvalidSpec(
                f"{field_path}: {ref.name} is Headrace's own Secret ({own[ref.name]}), whose values would be sent "
                "to the endpoint this spec names; reference a Secret of your own"
            )


def _uid(job: IngestionJob) -> uuid.UUID:
    assert job.metadata.uid is not None  # parse() got it from the API server
    return uuid.UUID(job.metadata.uid)


async def apply_spec(op: Operator, body: kopf.Body, patch: kopf.Patch, *, now: datetime) -> list[st.Event]:
    """React to a created, updated or resumed IngestionJob; returns the Events to post on it."""
    previous = st.parse_status(body.get("status"))
    try:
        job = parse(body, op.config)
        namespace_uid = await _namespace_uid(op, job.metadata.namespace)
        adopted = await jobs.adopt_retained(op.pool, uid=_uid(job), namespace_uid=namespace_uid, name=job.metadata.name)
        record = await jobs.register_job(
            op.pool,
            uid=_uid(job),
            namespace=job.metadata.namespace,
            name=job.metadata.name,
            generation=job.metadata.generation or 0,
            spec=job.spec,
            namespace_uid=namespace_uid,
        )
    except (InvalidSpec, UnknownTextSearchConfig) as exc:
        return await _refuse(op, body, patch, previous, str(exc), now=now)
    started: list[st.Event] = []
    if adopted is not None:
        message = f"Adopted the data retained from the former IngestionJob {job.metadata.name} (uid {adopted})"
        started.append(st.Event("Normal", Reason.ADOPTED_DATA, message))
        log.info(
            "Adopted retained data", extra={"namespace": job.metadata.namespace, "ingestionjob": job.metadata.name}
        )
    await _remove_legacy_secret(op, job.metadata.namespace, namespace_uid)
    if adopted is not None:
        reason = f"adopted the data of uid {adopted}"
    else:
        reason = "created" if record.current_run == 0 else "source, chunking or embedding changed"
    run = await runs.ensure_run(op.pool, record, reason=reason)
    if run != record.current_run:
        started.append(st.Event("Normal", Reason.RUN_STARTED, run_started(run, reason)))
    state = await jobs.run_state(op.pool, record.uid, run)
    return await _converge(op, body, patch, job, record, run, state, previous, started=started, now=now)


async def observe(op: Operator, body: kopf.Body, patch: kopf.Patch, *, now: datetime) -> list[st.Event]:
    """Look at the job's actual state and bring status, parallelism and replicas in line with it;
    returns the Events to post.

    A job being deleted is the finalizer's: the timer looks no further, and a tick that began before the
    deletion writes nothing once it finds the job's row gone (`jobs.JobGone`, `jobs.record_events`)."""
    if body.metadata.deletion_timestamp:
        return []
    try:
        return await _observe(op, body, patch, now=now)
    except jobs.JobGone:
        _log_gone(body)
        return []


async def _observe(op: Operator, body: kopf.Body, patch: kopf.Patch, *, now: datetime) -> list[st.Event]:
    try:
        job = parse(body, op.config)
    except InvalidSpec:
        return []  # apply_spec reported it; nothing runs until the spec is fixed
    previous = st.parse_status(body.get("status"))
    if previous.observed_generation != job.metadata.generation:
        # apply_spec has not finished with this generation (it writes observedGeneration last). Creating its
        # objects is its work: doing it here as well doubled every request of a burst of new jobs.
        return []
    record = await jobs.get_job(op.pool, _uid(job))
    if record is None or record.current_run == 0:
        return []  # apply_spec has not registered it yet
    run = record.current_run
    started: list[st.Event] = []
    fields: dict[str, Any] = {}
    state = await jobs.run_state(op.pool, record.uid, run)
    if _schedule_due(job, state, now=now):
        reason = f"schedule {job.spec.schedule}"
        run = await runs.start_run(op.pool, record, reason=reason)
        fields["last_schedule_time"] = now
        started.append(st.Event("Normal", Reason.RUN_STARTED, run_started(run, reason)))
        state = await jobs.run_state(op.pool, record.uid, run)
    elif job.spec.workers.autoscaling.mode == "builtin" and not job.spec.suspend and state and not state.finished:
        await _scale_from_backlog(op, job, record, patch)
    return await _converge(op, body, patch, job, record, run, state, previous, started=started, now=now, fields=fields)


MAX_EVENT_MESSAGE = 1024  # what `kubectl describe` shows whole; the API has every failure in full


async def _failures_summary(op: Operator, uid: uuid.UUID, run: int) -> list[st.Event]:
    """One Event for people when a finished run had failed documents (the API lists each of them).

    Posted once per run: the job's event log in Postgres, where `_record` writes it, says whether it was.
    """
    if await jobs.has_event(op.pool, uid, run, Reason.DOCUMENTS_FAILED):
        return []
    failure = await documents.first_failure(op.pool, uid, run)
    if failure is None:
        return []
    count, uri, reason = failure
    noun = "document" if count == 1 else "documents"
    message = f"{count} {noun} failed; first: {uri}: {reason}"
    if len(message) > MAX_EVENT_MESSAGE:
        message = message[: MAX_EVENT_MESSAGE - 1] + "…"
    return [st.Event("Warning", Reason.DOCUMENTS_FAILED, message)]


async def finalize(op: Operator, body: kopf.Body) -> str:
    """Apply spec.retention to the job's data; returns what was done."""
    uid = uuid.UUID(body.metadata.uid)
    # Read the raw field: a spec invalid in other ways still says what to do with its data.
    if body.spec.get("retention") == "Delete":
        await jobs.delete_job_data(op.pool, uid)
        outcome = "Deleted"
    else:
        await jobs.retain_job_data(op.pool, uid)
        outcome = "Retained"
    return outcome


async def namespace_changed(op: Operator, *, name: str, uid: str, deleted: bool) -> None:
    """A namespace appeared (or was listed at start) or was deleted: data of a former namespace of its name,
    or of the deleted one, stops being served.

    Finalizers normally do this job by job; this covers IngestionJobs whose finalizer was bypassed, before
    anyone in a re-created namespace of the same name can search.
    """
    namespace_uid = uuid.UUID(uid)
    if deleted:
        retired = await jobs.retire_namespace(op.pool, namespace_uid)
    else:
        retired = await jobs.retire_former_namespaces(op.pool, namespace=name, namespace_uid=namespace_uid)
    if retired:
        log.info("Retained data of a former namespace", extra={"namespace": name, "jobs": retired})


async def _namespace_uid(op: Operator, namespace: str) -> uuid.UUID:
    """The UID of the namespace as it is now: the identity its stored data goes by.

    Jobs of a namespace that ask while a lookup is in flight share its answer: it is no older than their
    own request would be, and a burst of jobs costs one request instead of one each. Nothing is cached.
    """
    lookup = op.namespace_lookups.get(namespace)
    if lookup is None:
        lookup = asyncio.ensure_future(_look_up_namespace(op, namespace))
        op.namespace_lookups[namespace] = lookup
        lookup.add_done_callback(lambda done: _forget_lookup(op, namespace, done))
    # Shielded: one waiter's handler being cancelled must not cancel the others' lookup.
    found = await asyncio.shield(lookup)
    if isinstance(found, Exception):
        raise found
    return found


def _forget_lookup(op: Operator, namespace: str, done: asyncio.Future[uuid.UUID | Exception]) -> None:
    if op.namespace_lookups.get(namespace) is done:
        del op.namespace_lookups[namespace]


async def _look_up_namespace(op: Operator, namespace: str) -> uuid.UUID | Exception:
    """The namespace's UID, or the error as a value: a shared task whose waiters all went away must not
    end in an error nobody awaits (kopf re-raises those at shutdown)."""
    try:
        found = await op.kube.list(NAMESPACES, "", name=namespace)
    except Exception as exc:
        return exc
    uid = (found[0].get("metadata") or {}).get("uid") if found else None
    if not uid:
        return kopf.TemporaryError(f"namespace {namespace} was not found", delay=RETRY_DELAY)
    return uuid.UUID(uid)


async def _remove_legacy_secret(op: Operator, namespace: str, namespace_uid: uuid.UUID) -> None:
    """Delete the namespace's worker database Secret of an earlier release, once: its role is dropped
    already, but a Secret holding a database URL has no business in a tenant's namespace.

    Only a Secret of the legacy name that carries the role annotation that release wrote (naming the
    role it held) is deleted, and only that object (a uid precondition): a Secret of the same name that
    someone else made is left alone."""
    legacy = op.legacy_secrets.get(namespace_uid)
    if legacy is None:
        return
    name = LEGACY_WORKER_SECRET
    found = await op.kube.get(SECRETS, namespace, name)
    annotations = (found or {}).get("metadata", {}).get("annotations") or {}
    if found is not None and annotations.get(LEGACY_ROLE_ANNOTATION) == legacy.role:
        try:
            if await op.kube.delete(SECRETS, namespace, name, uid=found["metadata"].get("uid")):
                log.info("Deleted Secret", extra={"namespace": namespace, "secret": name, "why": "a database URL"})
        except KubeError as exc:
            if exc.status != 409:  # 409: replaced meanwhile by someone else's; not ours
                raise
    await legacy_roles.forget(op.pool, namespace_uid)
    op.legacy_secrets.pop(namespace_uid, None)


async def _refuse(
    op: Operator, body: kopf.Body, patch: kopf.Patch, previous: IngestionJobStatus, message: str, *, now: datetime
) -> list[st.Event]:
    """An invalid spec: a condition on the object and a mark in Postgres, so the API says so too."""
    generation = body.metadata.get("generation")
    await jobs.record_invalid_spec(
        op.pool,
        uid=uuid.UUID(body.metadata.uid),
        namespace=body.metadata.namespace or "",
        name=body.metadata.name or "",
        generation=generation or 0,
        spec=dict(body.spec),
        error=message,
    )
    status, events = st.invalid_status(previous, message, generation=generation, now=now)
    _write(body, patch, status)
    log.warning(
        "Rejected IngestionJob",
        extra={"namespace": body.metadata.namespace, "ingestionjob": body.metadata.name, "error": message},
    )
    return events


async def _converge(
    op: Operator,
    body: kopf.Body,
    patch: kopf.Patch,
    job: IngestionJob,
    record: JobRecord,
    run: int,
    state: RunState | None,
    previous: IngestionJobStatus,
    *,
    started: list[st.Event],
    now: datetime,
    fields: dict[str, Any] | None = None,
) -> list[st.Event]:
    """Start a requested run, make the run's objects exist, close a run whose Job failed, and write status.

    `state` is the run's state as the caller just read it (the timer runs this for every job, every tick:
    each query less counts)."""
    fields = dict(fields or {})
    for kind, value in _pending_requests(body, previous):
        handled = "last_handled_run_request" if kind == "run" else "last_handled_retry_request"
        if await runs.started_for(op.pool, record.uid, kind, value) is not None:
            fields[handled] = value  # started before a restart lost the status write: not again
            continue
        if started or (state is not None and not state.finished):
            break  # one run at a time: a request waits for the current run to end
        record = await jobs.get_job(op.pool, record.uid) or record
        run = await runs.start_requested_run(op.pool, record, kind, value)
        fields[handled] = value
        (latest,) = await jobs.list_runs(op.pool, record.uid, limit=1)
        started.append(st.Event("Normal", Reason.RUN_STARTED, run_started(run, latest.reason)))
        state = await jobs.run_state(op.pool, record.uid, run)
    has_vectors = await _vectors_available(op)
    embedding = job.spec.embedding
    if has_vectors and embedding.enabled and embedding.model_name is not None and embedding.dimensions is not None:
        # Before the workers start, so that no two of them race to create it.
        await vectors.space_for(op.pool, embedding.model_name, embedding.dimensions)
    # This run's objects were made before when the status already reports the run (a later generation or a
    # timer tick): read them first. A job's first reconcile, or a new run, creates them.
    made = previous.observed_generation is not None and previous.run == run
    children = await ensure_children(
        op.kube, op.config, job, run, finished=state is not None and state.finished, made=made
    )
    outcome = st.job_outcome(children.worker_job)
    if state is not None and not state.finished and outcome is not None and outcome[0] == "Failed":
        _, reason, message = outcome
        if await runs.close_run(op.pool, record.uid, run, reason=reason, message=f"the worker Job failed: {message}"):
            log.info(
                "Closed run",
                extra={
                    "namespace": job.metadata.namespace,
                    "ingestionjob": job.metadata.name,
                    "run": run,
                    "reason": reason,
                },
            )
        state = await jobs.run_state(op.pool, record.uid, run)
    status, changes = st.next_status(
        job,
        previous,
        run=run,
        job_name=job_name(job.metadata.name, run),
        state=state,
        workers=_workers(job, children),
        problem=children.problem,
        vectors_available=has_vectors,
        now=now,
        **fields,
    )
    _write(body, patch, status)
    events = [*started, *children.events, *changes]
    if state is not None and state.finished and state.summary.failed:
        events += await _failures_summary(op, record.uid, run)
    if not await _record(op, record.uid, run, events):
        raise jobs.JobGone(str(record.uid))
    return events


async def _vectors_available(op: Operator) -> bool:
    """Whether vectors can be stored. Once they can, they stay so: the operator applied the migrations when
    it started, and pgvector is not uninstalled under a running installation. Until then, asked each time."""
    if not op.seen.get("vectors"):
        op.seen["vectors"] = await vectors.available(op.pool)
    return op.seen["vectors"]


def _workers(job: IngestionJob, children: Children) -> WorkerStatus:
    active = (children.worker_job or {}).get("status", {}).get("active") or 0
    return WorkerStatus(replicas=parallelism(job), active=active, selector=selector(job))


def _pending_requests(body: kopf.Body, status: IngestionJobStatus) -> list[tuple[runs.RequestKind, str]]:
    """Annotation values not acted on yet: run now first, then retry failed."""
    annotations = body.metadata.annotations
    pending: list[tuple[runs.RequestKind, str]] = []
    run_now = annotations.get(RUN_REQUEST_ANNOTATION)
    if run_now and run_now != status.last_handled_run_request:
        pending.append(("run", run_now))
    retry = annotations.get(RETRY_FAILED_ANNOTATION)
    if retry and retry != status.last_handled_retry_request:
        pending.append(("retry", retry))
    return pending


def _write(body: kopf.Body, patch: kopf.Patch, status: IngestionJobStatus) -> None:
    for key, value in st.status_patch(dict(body.get("status") or {}), status).items():
        patch.status[key] = value
    old, new = (body.get("status") or {}).get("phase"), status.phase
    if old != new:
        log.info(
            "Changed phase",
            extra={"namespace": body.metadata.namespace, "ingestionjob": body.metadata.name, "from": old, "to": new},
        )


async def _record(op: Operator, uid: uuid.UUID, run: int, events: list[st.Event]) -> bool:
    """Copy the Events into the job's log in Postgres, which the API streams (the store logs the run's own);
    False when the job was deleted or retained meanwhile."""
    return await jobs.record_events(
        op.pool, uid, run, [(e.type, e.reason, e.message) for e in events if e.reason not in STORE_RECORDED]
    )


def _log_gone(body: kopf.Body) -> None:
    log.info(
        "Skipped a deleted IngestionJob",
        extra={"namespace": body.metadata.namespace, "ingestionjob": body.metadata.name},
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


async def build_statistics_forever(op: Operator) -> None:
    """Keep every job's search statistics current (headrace/store/search/statistics.py): every observe interval,
    build those due (a finished run, no run in progress), one at a time. Level-triggered: a build cut
    short by a restart or an outage is simply due again, and a replica that finds another building a
    job skips it. Runs beside the handlers, so a long build never holds up a job's status."""
    while True:
        try:
            for uid in await ride_out(search_statistics.due, op.pool):
                await ride_out(search_statistics.refresh, op.pool, uid)
        except Exception:  # the loop outlives any one failure; the next pass finds the job due again
            log.exception("Failed to build search statistics")
        await asyncio.sleep(op.config.observe_interval)
