"""Status as the Kubernetes API conventions want it: conditions, and a phase beside them for `kubectl get`.

Pure functions: they take what was observed and return the new typed status with the Events it calls
for, so they are tested without a cluster or a database. How a run ended is not decided here: it is
read off the run's row in Postgres (`RunState`), and the phase comes from `model.run.phase_of`, the one
rule the API and its event stream use too. The conditions say the same thing in more words.
"""

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import pydantic

from headrace.model import Condition, IngestionJob, IngestionJobStatus, WorkerStatus
from headrace.model.events import Reason, run_finished
from headrace.model.run import RunState, phase_of
from headrace.redaction import redact

ConditionType = Literal["Ready", "Progressing", "Succeeded", "Failed", "EmbeddingsReady", "TenantIsolated"]
ConditionStatus = Literal["True", "False", "Unknown"]
CONDITION_TYPES: tuple[ConditionType, ...] = ("Ready", "Progressing", "Succeeded", "Failed", "EmbeddingsReady")
# Present only while observed. TenantIsolated=False warned of the shared-credential mode of earlier
# releases; nothing observes it now, so a job's next status drops one such a release left.
OPTIONAL_TYPES: tuple[ConditionType, ...] = ("TenantIsolated",)


READY_PROBLEMS: frozenset[str] = frozenset({Reason.INVALID_SPEC, Reason.NAME_CONFLICT, Reason.WORKER_JOB_REFUSED})
"""Reasons of a Ready=False the operator met, each posted as a Warning Event when it appears."""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the IngestionJob (and, unless the store wrote it, to log in Postgres)."""

    type: Literal["Normal", "Warning"]
    reason: Reason
    message: str


@dataclass(frozen=True)
class Observed:
    """One condition as just observed, before it is merged with what the status said before."""

    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str = ""


def parse_status(raw: Any) -> IngestionJobStatus:
    """The status as the body has it; an empty one when it is missing or not ours to read."""
    try:
        return IngestionJobStatus.model_validate(raw or {})
    except pydantic.ValidationError:
        return IngestionJobStatus()


def merge_conditions(
    previous: Iterable[Condition], observed: Iterable[Observed], *, generation: int | None, now: datetime
) -> list[Condition]:
    """The new conditions list. `lastTransitionTime` moves only when a condition's status changes;
    types not observed now keep their previous entry; every type is present, as Unknown at first, except
    the OPTIONAL_TYPES, which are present only while observed."""
    before = {entry.type: entry for entry in previous}
    fresh = {item.type: item for item in observed}
    result = []
    for type_ in CONDITION_TYPES + OPTIONAL_TYPES:
        old = before.get(type_)
        item = fresh.get(type_)
        if item is None and type_ in OPTIONAL_TYPES:
            continue
        if item is None and old is not None:
            result.append(old)
            continue
        item = item or Observed(type_, "Unknown", Reason.RECONCILING, "The operator has not looked at this yet.")
        changed = old is None or old.status != item.status
        when = old.last_transition_time if old and not changed and old.last_transition_time else now
        result.append(
            Condition(
                type=item.type,
                status=item.status,
                reason=item.reason,
                message=redact(item.message),
                observed_generation=generation,
                last_transition_time=when,
            )
        )
    return result


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


_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


def _reason(word: str | None, fallback: str) -> str:
    return word if word and _REASON.match(word) else fallback


def embeddings_condition(job: IngestionJob, *, vectors_available: bool) -> Observed:
    """Whether the job's chunks get vectors: off by spec, stored, or impossible without pgvector."""
    if not job.spec.embedding.enabled:
        message = "spec.embedding.provider is none: keyword search only."
        return Observed("EmbeddingsReady", "False", Reason.EMBEDDINGS_DISABLED, message)
    if not vectors_available:
        return Observed(
            "EmbeddingsReady",
            "False",
            Reason.VECTOR_EXTENSION_MISSING,
            "The database has no pgvector extension: chunks are indexed for keyword search only. "
            "A database admin runs CREATE EXTENSION vector; the next run embeds them.",
        )
    model = f"{job.spec.embedding.model_name} ({job.spec.embedding.dimensions} dimensions)"
    return Observed("EmbeddingsReady", "True", Reason.VECTORS_STORED, f"Chunks are embedded with {model}.")


def observe_conditions(
    job: IngestionJob, *, state: RunState | None, problem: Observed | None = None, vectors_available: bool = True
) -> list[Observed]:
    """Ready, Progressing, Succeeded and Failed from the run's row in Postgres, and EmbeddingsReady from the
    spec and whether the database can store vectors. `problem` is a Ready=False the operator met on the way
    (NameConflict, WorkerJobRefused)."""
    return [
        *_run_conditions(job, state=state, problem=problem),
        embeddings_condition(job, vectors_available=vectors_available),
    ]


def _run_conditions(job: IngestionJob, *, state: RunState | None, problem: Observed | None) -> list[Observed]:
    ready = problem or Observed("Ready", "True", Reason.RECONCILED, "The spec is valid and the run's objects exist.")
    if state is None:
        return [ready, Observed("Progressing", "Unknown", Reason.RUN_STARTING, "The run is being set up.")]
    run = f"Run {state.run}"
    if state.interrupted:
        # Only local runs are interrupted (phase Interrupted): stopped, not failed.
        return [
            ready,
            Observed("Progressing", "False", Reason.RUN_FINISHED, f"{run} finished."),
            Observed("Succeeded", "False", Reason.RUN_INTERRUPTED, f"{run} was interrupted."),
            Observed("Failed", "False", Reason.RUN_INTERRUPTED, state.error or ""),
        ]
    if state.finished and not state.succeeded:
        reason = _reason(state.end_reason, Reason.RUN_FAILED)
        return [
            ready,
            Observed("Progressing", "False", Reason.RUN_FINISHED, f"{run} finished."),
            Observed("Succeeded", "False", reason, f"{run} failed."),
            Observed("Failed", "True", reason, state.error or ""),
        ]
    if state.finished:
        message = f"{run_finished(state.run, state.summary)}."
        return [
            ready,
            Observed("Progressing", "False", Reason.RUN_FINISHED, f"{run} finished."),
            Observed("Succeeded", "True", Reason.RUN_SUCCEEDED, message),
            Observed("Failed", "False", Reason.NO_FAILURE, ""),
        ]
    pending = f"{state.progress.pending} of {state.progress.total} documents pending"
    if job.spec.suspend:
        progressing = Observed("Progressing", "False", Reason.SUSPENDED, f"{run} is suspended with {pending}.")
    else:
        progressing = Observed("Progressing", "True", Reason.RUN_ACTIVE, f"{run} is running: {pending}.")
    return [
        ready,
        progressing,
        Observed("Succeeded", "False", Reason.RUN_ACTIVE, f"{run} has not finished."),
        Observed("Failed", "False", Reason.NO_FAILURE, ""),
    ]


def next_status(
    job: IngestionJob,
    previous: IngestionJobStatus,
    *,
    run: int,
    job_name: str,
    state: RunState | None,
    workers: WorkerStatus,
    problem: Observed | None = None,
    vectors_available: bool = True,
    now: datetime,
    **fields: Any,
) -> tuple[IngestionJobStatus, list[Event]]:
    """The status after looking at the run and the worker Job, and the Events its changes call for.
    `fields` are further status fields (by attribute name) to set, such as `last_schedule_time`;
    `vectors_available` says whether the database has pgvector (EmbeddingsReady)."""
    observed = observe_conditions(job, state=state, problem=problem, vectors_available=vectors_available)
    conditions = merge_conditions(previous.conditions, observed, generation=job.metadata.generation, now=now)
    new_phase = phase_of(state, suspended=job.spec.suspend)
    update: dict[str, Any] = {
        "observed_generation": job.metadata.generation,
        "conditions": conditions,
        "phase": new_phase,
        "run": run,
        "job_name": job_name,
        "workers": workers,
        **fields,
    }
    if state is not None:
        update |= {
            "progress": state.progress,
            "summary": state.summary,
            "start_time": state.started_at,
            "completion_time": state.finished_at,
        }
    status = previous.model_copy(update=update)
    return status, _events(previous, status)


def invalid_status(
    previous: IngestionJobStatus, message: str, *, generation: int | None, now: datetime
) -> tuple[IngestionJobStatus, list[Event]]:
    """The status of a job whose spec the operator refused, and the Event that says so."""
    conditions = merge_conditions(
        previous.conditions, [Observed("Ready", "False", Reason.INVALID_SPEC, message)], generation=generation, now=now
    )
    status = previous.model_copy(
        update={
            "observed_generation": generation,
            "conditions": conditions,
            "phase": phase_of(None, suspended=False, spec_error=message),
        }
    )
    return status, _events(previous, status)


def _events(before: IngestionJobStatus, after: IngestionJobStatus) -> list[Event]:
    """The Events a status change calls for: a Ready problem that appeared, and the run's phase changes."""
    events: list[Event] = []
    old_ready = next((c for c in before.conditions if c.type == "Ready"), None)
    new_ready = next((c for c in after.conditions if c.type == "Ready"), None)
    if (
        new_ready is not None
        and new_ready.status == "False"
        and new_ready.reason in READY_PROBLEMS
        and (old_ready is None or (old_ready.reason, old_ready.message) != (new_ready.reason, new_ready.message))
    ):
        events.append(Event("Warning", Reason(new_ready.reason), new_ready.message))
    if after.phase == before.phase:
        return events
    by_type = {c.type: c for c in after.conditions}
    if after.phase == "Succeeded":
        events.append(Event("Normal", Reason.RUN_SUCCEEDED, by_type["Succeeded"].message))
    elif after.phase == "Failed" and by_type["Failed"].status == "True":
        events.append(Event("Warning", Reason.RUN_FAILED, by_type["Failed"].message))
    elif after.phase == "Suspended":
        events.append(Event("Normal", Reason.RUN_SUSPENDED, by_type["Progressing"].message))
    elif after.phase == "Running" and before.phase == "Suspended":
        events.append(Event("Normal", Reason.RUN_RESUMED, by_type["Progressing"].message))
    return events


def status_patch(current: dict[str, Any], status: IngestionJobStatus) -> dict[str, Any]:
    """The status fields whose value changed, as a merge patch (None removes a field), so a quiet job
    costs no API writes."""
    wire = status.to_wire()
    patch: dict[str, Any] = {}
    for name, field in IngestionJobStatus.model_fields.items():
        key = field.alias or name
        if current.get(key) != wire.get(key):
            patch[key] = wire.get(key)
    return patch
