"""The objects an IngestionJob owns (the run's worker Job, the HPA), kept as the spec says, and only those.

Before updating or deleting a Job or HPA we check that its ownerReferences name this IngestionJob's
uid. An object of the same name that someone else owns is left alone: the IngestionJob reports
`Ready=False` with reason `NameConflict`, naming it. Otherwise anyone allowed to create IngestionJobs
could have the operator re-point or delete an HPA or Job they may not touch themselves.
"""

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from headrace.kubeapi import KubeError
from headrace.model import IngestionJob
from headrace.model.contract import INGEST_URL_ENV
from headrace.model.events import Reason
from headrace.operator import status as st
from headrace.operator.kube import HPAS, JOBS, KubeClient
from headrace.operator.resources.hpa import build_hpa, hpa_name
from headrace.operator.resources.job import build_worker_job, job_name
from headrace.operator.settings import OperatorSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Answers that say "this request will never work as it is" (as opposed to "try again later").
REFUSED = frozenset({400, 403, 422})


@dataclass(frozen=True)
class Wanted:
    """The objects a run of an IngestionJob should have, as the pure builders make them."""

    owner_uid: str | None
    """The IngestionJob's uid: what an ownerReference of ours names."""
    namespace: str
    worker_job_name: str
    worker_job: dict[str, Any] | None
    """The run's worker Job; None once the run finished: its Job is then only read (and may be gone after
    ttlSecondsAfterFinished)."""
    superseded_job: str | None
    """The previous run's Job, whose workers stop: they would otherwise go on leasing this run's tasks."""
    hpa_name: str
    hpa: dict[str, Any] | None
    """The HPA in autoscaling mode hpa. None in builtin or none mode: only one writer may own the replica
    count, so an HPA of ours is deleted."""
    run: int


def wanted(job: IngestionJob, run: int, config: OperatorSettings, *, finished: bool) -> Wanted:
    """What `run` of `job` should have in the cluster. Pure: no API calls."""
    worker_job = None
    if not finished:
        worker_job = build_worker_job(
            job,
            run=run,
            image=config.worker_image,
            pods=config.worker_pods(),
            ingest_url=config.ingest_url,
            ingest_audience=config.ingest_audience,
            backoff_limit=config.backoff_limit,
            ttl_seconds_after_finished=config.ttl_seconds_after_finished,
        )
    return Wanted(
        owner_uid=job.metadata.uid,
        namespace=job.metadata.namespace,
        worker_job_name=job_name(job.metadata.name, run),
        worker_job=worker_job,
        superseded_job=job_name(job.metadata.name, run - 1) if run > 1 else None,
        hpa_name=hpa_name(job.metadata.name),
        hpa=build_hpa(job) if job.spec.workers.autoscaling.mode == "hpa" else None,
        run=run,
    )


@dataclass(frozen=True)
class Children:
    """What ensuring the children found: the run's worker Job, Events to post, and a Ready problem."""

    worker_job: dict[str, Any] | None = None
    events: tuple[st.Event, ...] = ()
    problem: st.Observed | None = None


def owned_by(obj: dict[str, Any], uid: str | None) -> bool:
    """Whether an ownerReference of `obj` names the IngestionJob with this uid."""
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences") or [])


def _conflict(kind: str, name: str) -> st.Observed:
    return st.Observed(
        "Ready",
        "False",
        Reason.NAME_CONFLICT,
        f"{kind} {name} exists and is not owned by this IngestionJob: Headrace leaves it alone. "
        f"Rename the IngestionJob or remove the {kind}.",
    )


async def ensure_children(kube: KubeClient, want: Wanted, *, made: bool = False) -> Children:
    """Create what is missing and correct what drifted, among the objects this IngestionJob owns.

    The HPA and the run's Job are independent, so they are ensured at once. `made`: the status says this
    run's objects were made before, so they are read first (one call each, where a create would be
    refused and then read).
    """
    hpa, worker = await asyncio.gather(
        _caught(_ensure_hpa(kube, want, made=made)),
        _caught(_ensure_worker_job(kube, want, made=made)),
    )
    for outcome in (hpa, worker):
        if isinstance(outcome, Exception):
            raise outcome
    assert not isinstance(hpa, Exception) and not isinstance(worker, Exception)
    hpa_problem, hpa_events = hpa
    worker_job, job_events, job_problem = worker
    return Children(worker_job, (*hpa_events, *job_events), job_problem or hpa_problem)


async def _caught(step: Awaitable[T]) -> T | Exception:
    """The step's result or its error, as a value: a task of `gather` that ends in an error nobody awaits
    any more (its handler was cancelled at shutdown) would otherwise be re-raised by kopf as a crash."""
    try:
        return await step
    except Exception as exc:
        return exc


async def _ensure_worker_job(
    kube: KubeClient, want: Wanted, *, made: bool
) -> tuple[dict[str, Any] | None, list[st.Event], st.Observed | None]:
    """The run's worker Job (None when it is not ours or was refused), its Events and a Ready problem."""
    namespace, name, run = want.namespace, want.worker_job_name, want.run
    if want.superseded_job is not None:
        await _retire(kube, want, want.superseded_job)
    manifest = want.worker_job
    if manifest is None:
        # A finished run's Job is left alone (and may be gone after ttlSecondsAfterFinished).
        found = await kube.get(JOBS, namespace, name)
        mine = found if found is not None and owned_by(found, want.owner_uid) else None
        return mine, [], None
    try:
        worker_job, created = await kube.ensure(JOBS, manifest, read_first=made)
    except KubeError as exc:
        if exc.status not in REFUSED:
            raise
        # A Job the API server refuses (a bad toleration, an admission policy) will be refused again:
        # say why on the IngestionJob instead of retrying in silence.
        message = f"The API server refused worker Job {name}: {exc}"
        log.warning("Refused Job", extra={"namespace": namespace, "job": name, "error": str(exc)})
        return None, [], st.Observed("Ready", "False", Reason.WORKER_JOB_REFUSED, message)
    if not owned_by(worker_job, want.owner_uid):
        log.warning("Found foreign Job", extra={"namespace": namespace, "job": name})
        return None, [], _conflict("Job", name)
    if not created and _ingest_url(worker_job) != _ingest_url(manifest):
        return None, await _replace(kube, worker_job, run), None
    events = []
    parallelism = manifest["spec"]["parallelism"]
    fields = {"namespace": namespace, "job": name, "parallelism": parallelism}
    if created:
        log.info("Created Job", extra=fields)
        events.append(st.Event("Normal", Reason.CREATED_JOB, f"Created worker Job {name} for run {run}"))
    elif worker_job.get("spec", {}).get("parallelism") != parallelism:
        patched = await kube.patch(JOBS, namespace, name, {"spec": {"parallelism": parallelism}})
        worker_job = patched or worker_job
        log.info("Scaled Job", extra=fields)
    return worker_job, events, None


def _ingest_url(worker_job: dict[str, Any]) -> str | None:
    """Where the Job's pods reach the ingest service; None for a Job of a release whose pods held a
    database URL instead."""
    containers = worker_job.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or [{}]
    return next((var.get("value") for var in containers[0].get("env") or [] if var.get("name") == INGEST_URL_ENV), None)


async def _replace(kube: KubeClient, worker_job: dict[str, Any], run: int) -> list[st.Event]:
    """Delete a worker Job whose pods cannot reach the ingest service (made by an earlier release, or
    before the service moved); the next reconcile creates this release's Job of the same name.

    A pod template cannot be changed in place. Its pods get SIGTERM: each hands its task back and exits,
    as when a Job is scaled down, and the run goes on with the new Job's pods (leases make any task a
    stopped pod held safe to lease again)."""
    metadata = worker_job["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    try:
        # A precondition on its uid: the server answers 409 if the name now belongs to another object.
        deleted = await kube.delete(JOBS, namespace, name, uid=metadata.get("uid"))
    except KubeError as exc:
        if exc.status != 409:
            raise
        deleted = False
    if not deleted:
        return []
    log.info("Deleted Job", extra={"namespace": namespace, "job": name, "why": "made for an earlier release"})
    message = f"Replacing worker Job {name} of run {run}: its pods were made by an earlier release"
    return [st.Event("Normal", Reason.REPLACED_JOB, message)]


async def _retire(kube: KubeClient, want: Wanted, name: str) -> None:
    """Stop the workers of a superseded run: they would otherwise go on leasing the new run's tasks."""
    namespace = want.namespace
    previous = await kube.get(JOBS, namespace, name)
    if (
        previous is None
        or not owned_by(previous, want.owner_uid)
        or st.job_outcome(previous) is not None
        or previous.get("spec", {}).get("parallelism") == 0
    ):
        return
    await kube.patch(JOBS, namespace, name, {"spec": {"parallelism": 0}})
    log.info("Scaled Job", extra={"namespace": namespace, "job": name, "parallelism": 0, "reason": "superseded"})


async def _ensure_hpa(kube: KubeClient, want: Wanted, *, made: bool) -> tuple[st.Observed | None, list[st.Event]]:
    namespace, name, manifest = want.namespace, want.hpa_name, want.hpa
    if manifest is None:
        # Only one writer may own the replica count: no HPA of ours in builtin or none mode. Someone
        # else's HPA of that name is not in the way, and not ours to delete.
        existing = await kube.get(HPAS, namespace, name)
        if existing is None or not owned_by(existing, want.owner_uid):
            return None, []
        try:
            # A precondition on its uid: the server answers 409 if the name now belongs to another object.
            if await kube.delete(HPAS, namespace, name, uid=existing["metadata"].get("uid")):
                log.info("Deleted HorizontalPodAutoscaler", extra={"namespace": namespace, "hpa": name})
        except KubeError as exc:
            if exc.status != 409:
                raise
        return None, []
    existing, created = await kube.ensure(HPAS, manifest, read_first=made)
    if created:
        log.info("Created HorizontalPodAutoscaler", extra={"namespace": namespace, "hpa": name})
        return None, [st.Event("Normal", Reason.CREATED_HPA, f"Created HPA {name}")]
    if not owned_by(existing, want.owner_uid):
        log.warning("Found foreign HorizontalPodAutoscaler", extra={"namespace": namespace, "hpa": name})
        return _conflict("HorizontalPodAutoscaler", name), []
    if not _contains(existing.get("spec"), manifest["spec"]):
        await kube.patch(HPAS, namespace, name, {"spec": manifest["spec"]})
        log.info("Updated HorizontalPodAutoscaler", extra={"namespace": namespace, "hpa": name})
    return None, []


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
