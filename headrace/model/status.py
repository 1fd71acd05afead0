"""The IngestionJob status: conditions first, with phase derived from them for `kubectl get`."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from headrace.model.base import KubeModel

Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Interrupted", "Suspended"]
"""Interrupted: a local run stopped by Ctrl-C or SIGTERM (`headrace run`); never a cluster's job."""
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Interrupted"})

ConditionReason = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
]


class Condition(KubeModel):
    """One aspect of the job's state, following the Kubernetes API conventions."""

    type: Literal["Ready", "Progressing", "Succeeded", "Failed", "EmbeddingsReady", "TenantIsolated"]
    """Ready: the job's objects exist and its spec is valid. Progressing: a run is under way.
    Succeeded: the last run finished. Failed: the last run failed. EmbeddingsReady: chunks get
    vectors for semantic search (False when the database lacks the pgvector extension).
    TenantIsolated: set only by earlier releases (workers holding a shared database credential), and
    removed by this one."""

    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""

    reason: ConditionReason
    """A CamelCase word for the condition's cause, for machines."""

    message: Annotated[str, StringConstraints(max_length=32_768)] = ""
    """The cause in words, for people."""

    observed_generation: Annotated[int | None, Field(ge=0)] = None
    """The .metadata.generation this condition was computed from."""

    last_transition_time: datetime | None = None
    """When `status` last changed."""


class Progress(KubeModel):
    """How far the current run is, by document."""

    total: Annotated[int, Field(ge=0)] = 0
    """Documents discovered in the source so far."""

    succeeded: Annotated[int, Field(ge=0)] = 0
    """Documents ingested (added, updated or found unchanged)."""

    failed: Annotated[int, Field(ge=0)] = 0
    """Documents that failed, each with a reason in the API."""

    pending: Annotated[int, Field(ge=0)] = 0
    """Documents discovered but not yet processed."""

    percent: Annotated[int, Field(ge=0, le=100)] = 0
    """Processed documents as a whole percentage of the total."""


class RunSummary(KubeModel):
    """What a run did to the index."""

    added: Annotated[int, Field(ge=0)] = 0
    """Documents seen for the first time."""

    updated: Annotated[int, Field(ge=0)] = 0
    """Documents whose content changed and whose chunks were replaced."""

    unchanged: Annotated[int, Field(ge=0)] = 0
    """Documents skipped because their content was unchanged."""

    deleted: Annotated[int, Field(ge=0)] = 0
    """Documents removed from the index because they left the source (`sync: mirror`)."""

    failed: Annotated[int, Field(ge=0)] = 0
    """Documents that could not be ingested."""


class WorkerStatus(KubeModel):
    """The workers of the current run; read by the /scale subresource."""

    replicas: Annotated[int, Field(ge=0)] = 0
    """Workers asked for."""

    active: Annotated[int, Field(ge=0)] = 0
    """Worker pods running now."""

    selector: str = ""
    """Label selector of the worker pods, in string form, for the HPA."""


class IngestionJobStatus(KubeModel):
    """The observed state of an IngestionJob, written by the operator."""

    observed_generation: Annotated[int | None, Field(ge=0)] = None
    """The .metadata.generation the operator last acted on."""

    phase: Phase | None = None
    """A one-word summary for `kubectl get`, derived from the conditions."""

    conditions: list[Condition] = []
    """Current state, one entry per condition type."""

    run: Annotated[int, Field(ge=0)] = 0
    """Number of the current (or last) run; each spec change of source or chunking starts another."""

    progress: Progress = Progress()
    """Document counts of the current run."""

    summary: RunSummary = RunSummary()
    """What the current run did to the index."""

    workers: WorkerStatus = WorkerStatus()
    """Worker counts and selector."""

    job_name: str | None = None
    """Name of the worker Job of the current run."""

    start_time: datetime | None = None
    """When the current run started."""

    completion_time: datetime | None = None
    """When the current run finished."""

    last_schedule_time: datetime | None = None
    """When the schedule last started a run."""

    last_handled_run_request: Annotated[str, StringConstraints(max_length=256)] | None = None
    """The last value of the `headrace.io/run-requested-at` annotation that started a run."""

    last_handled_retry_request: Annotated[str, StringConstraints(max_length=256)] | None = None
    """The last value of the `headrace.io/retry-failed-requested-at` annotation that started a retry run."""
