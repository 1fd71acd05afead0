"""Status as the Kubernetes API conventions want it: conditions first, phase derived from them.

Pure functions: they take what was observed and return the new status fields, so they are tested
without a cluster or a database.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from headrace.model import Condition, IngestionJob, Phase
from headrace.store.jobs import RunState

ConditionType = Literal["Ready", "Progressing", "Succeeded", "Failed", "EmbeddingsReady"]
ConditionStatus = Literal["True", "False", "Unknown"]
CONDITION_TYPES: tuple[ConditionType, ...] = ("Ready", "Progressing", "Succeeded", "Failed", "EmbeddingsReady")


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the IngestionJob."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """One condition as just observed, before it is merged with what the status said before."""

    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str = ""


def merge_conditions(
    previous: Iterable[dict[str, Any]], observed: Iterable[Observed], *, generation: int | None, now: datetime
) -> list[dict[str, Any]]:
    """The new conditions list. `lastTransitionTime` moves only when a condition's status changes;
    types not observed now keep their previous entry; every type is present, as Unknown at first."""
    before = {entry.get("type"): entry for entry in previous}
    fresh = {item.type: item for item in observed}
    result = []
    for type_ in CONDITION_TYPES:
        old = before.get(type_)
        item = fresh.get(type_)
        if item is None and old is not None:
            result.append(dict(old))
            continue
        item = item or Observed(type_, "Unknown", "Reconciling", "The operator has not looked at this yet.")
        changed = old is None or old.get("status") != item.status
        when = old["lastTransitionTime"] if old and not changed and old.get("lastTransitionTime") else now
        condition = Condition(
            type=item.type,
            status=item.status,
            reason=item.reason,
            message=item.message,
            observed_generation=generation,
            last_transition_time=when,
        )
        result.append(condition.to_wire())
    return result


def phase(conditions: Iterable[dict[str, Any]], *, suspended: bool) -> Phase:
    """The one-word summary for `kubectl get`, read off the conditions."""
    by_type = {entry.get("type"): entry for entry in conditions}

    def holds(type_: str) -> bool:
        return by_type.get(type_, {}).get("status") == "True"

    ready = by_type.get("Ready", {})
    if ready.get("status") == "False" and ready.get("reason") == "InvalidSpec":
        return "Failed"
    if holds("Failed"):
        return "Failed"
    if holds("Succeeded"):
        return "Succeeded"
    if suspended:
        return "Suspended"
    if holds("Progressing"):
        return "Running"
    return "Pending"


def builtin_replicas(pending_tasks: int, *, tasks_per_worker: int, minimum: int, maximum: int) -> int:
    """Workers the builtin autoscaler wants: ceil(pending / tasksPerWorker), clamped to [min, max]."""
    wanted = math.ceil(pending_tasks / tasks_per_worker)
    return max(minimum, min(maximum, wanted))


def job_outcome(job: dict[str, Any] | None) -> tuple[Literal["Complete", "Failed"], str, str] | None:
    """Whether a batch/v1 Job finished, from its conditions: (outcome, reason, message), or None."""
    if job is None:
        return None
    for condition in job.get("status", {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            outcome: Literal["Complete", "Failed"] = condition["type"]
            return outcome, condition.get("reason") or f"Job{outcome}", condition.get("message") or ""
    return None


def embeddings_condition(job: IngestionJob, *, vectors_available: bool) -> Observed:
    """Whether the job's chunks get vectors: off by spec, stored, or impossible without pgvector."""
    if not job.spec.embedding.enabled:
        return Observed("EmbeddingsReady", "False", "Disabled", "spec.embedding.provider is none: keyword search only.")
    if not vectors_available:
        return Observed(
            "EmbeddingsReady",
            "False",
            "VectorExtensionMissing",
            "The database has no pgvector extension: chunks are indexed for keyword search only. "
            "A database admin runs CREATE EXTENSION vector; the next run embeds them.",
        )
    model = f"{job.spec.embedding.model_name} ({job.spec.embedding.dimensions} dimensions)"
    return Observed("EmbeddingsReady", "True", "VectorsStored", f"Chunks are embedded with {model}.")


def observe_conditions(
    job: IngestionJob, *, state: RunState | None, worker_job: dict[str, Any] | None, vectors_available: bool = True
) -> list[Observed]:
    """Ready, Progressing, Succeeded and Failed from the run in Postgres and the worker Job's own status,
    and EmbeddingsReady from the spec and whether the database can store vectors."""
    return [
        *_run_conditions(job, state=state, worker_job=worker_job),
        embeddings_condition(job, vectors_available=vectors_available),
    ]


def _run_conditions(job: IngestionJob, *, state: RunState | None, worker_job: dict[str, Any] | None) -> list[Observed]:
    outcome = job_outcome(worker_job)
    ready = Observed("Ready", "True", "Reconciled", "The spec is valid and the run's objects exist.")
    if state is None:
        return [ready, Observed("Progressing", "Unknown", "RunStarting", "The run is being set up.")]
    run = f"Run {state.run}"
    if state.finished and state.error:
        return [
            ready,
            Observed("Progressing", "False", "RunFinished", f"{run} finished."),
            Observed("Succeeded", "False", "RunFailed", f"{run} failed."),
            Observed("Failed", "True", "RunFailed", state.error),
        ]
    if state.finished and (outcome is None or outcome[0] == "Complete" or worker_job is None):
        if worker_job is not None and outcome is None:
            # The queue is drained; the Job completes once its last worker pod has exited.
            return [
                ready,
                Observed("Progressing", "True", "WorkersStopping", f"{run} is drained; its workers are exiting."),
                Observed("Succeeded", "False", "WorkersStopping", f"{run} is drained; its workers are exiting."),
                Observed("Failed", "False", "NoFailure", ""),
            ]
        summary = state.summary
        message = (
            f"{run} finished: {summary.added} added, {summary.updated} updated, {summary.unchanged} unchanged, "
            f"{summary.deleted} deleted, {summary.failed} failed."
        )
        return [
            ready,
            Observed("Progressing", "False", "RunFinished", f"{run} finished."),
            Observed("Succeeded", "True", "RunSucceeded", message),
            Observed("Failed", "False", "NoFailure", ""),
        ]
    if outcome is not None and outcome[0] == "Failed":
        _, reason, message = outcome
        return [
            ready,
            Observed("Progressing", "False", reason, f"The worker Job failed: {message}"),
            Observed("Succeeded", "False", reason, f"The worker Job failed: {message}"),
            Observed("Failed", "True", reason, f"The worker Job failed: {message}"),
        ]
    pending = f"{state.progress.pending} of {state.progress.total} documents pending"
    if job.spec.suspend:
        progressing = Observed("Progressing", "False", "Suspended", f"{run} is suspended with {pending}.")
    else:
        progressing = Observed("Progressing", "True", "RunActive", f"{run} is running: {pending}.")
    return [
        ready,
        progressing,
        Observed("Succeeded", "False", "RunActive", f"{run} has not finished."),
        Observed("Failed", "False", "NoFailure", ""),
    ]


def phase_cause(conditions: Iterable[dict[str, Any]], phase: Phase) -> str:
    """The message of the condition that decided the phase, for the Event that announces it."""
    by_type = {entry.get("type"): entry for entry in conditions}
    deciding = {
        "Failed": "Failed" if by_type.get("Failed", {}).get("status") == "True" else "Ready",
        "Succeeded": "Succeeded",
        "Suspended": "Progressing",
        "Running": "Progressing",
        "Pending": "Progressing",
    }[phase]
    entry = by_type.get(deciding, {})
    return str(entry.get("message") or entry.get("reason") or "")
