"""The one vocabulary of a job's events: the reasons shared by Kubernetes Events and the job's log in Postgres.

The store records the run's own milestones (started, discovered, succeeded, failed) as they happen;
the operator records what it does to Kubernetes objects. The API's event stream replays the log, and
the operator posts the same reasons as Kubernetes Events, so `kubectl describe` and the stream read alike.
"""

from enum import StrEnum

from headrace.model.status import RunSummary


class Reason(StrEnum):
    """The CamelCase reason of an event, of a run's end (`runs.end_reason`) or of a status condition.

    A run's end reason is RunSucceeded, or one of the causes of a failure below (DiscoveryFailed,
    FailurePolicyExceeded, RunInterrupted, RunSuperseded), or the reason of the worker Job's Failed
    condition (BackoffLimitExceeded, DeadlineExceeded, ...), which Kubernetes names, not us.
    """

    RUN_STARTED = "RunStarted"
    DISCOVERED = "Discovered"
    RUN_SUCCEEDED = "RunSucceeded"
    RUN_FAILED = "RunFailed"
    RUN_INTERRUPTED = "RunInterrupted"
    """A local run stopped by Ctrl-C or SIGTERM (`headrace run`): its end reason; its event is RunFailed."""
    DISCOVERY_FAILED = "DiscoveryFailed"
    """The run drained without discovery finishing: its end reason."""
    FAILURE_POLICY_EXCEEDED = "FailurePolicyExceeded"
    """More documents failed than spec.failurePolicy allows: the run's end reason."""
    RUN_SUPERSEDED = "RunSuperseded"
    """A newer run of the job started before this one finished: its end reason (no event is posted)."""
    RUN_SUSPENDED = "RunSuspended"
    RUN_RESUMED = "RunResumed"
    CREATED_JOB = "CreatedJob"
    REPLACED_JOB = "ReplacedJob"
    """A worker Job of an earlier release, whose pods cannot reach the ingest service, was deleted to be made anew."""
    CREATED_HPA = "CreatedHorizontalPodAutoscaler"
    INVALID_SPEC = "InvalidSpec"
    NAME_CONFLICT = "NameConflict"
    WORKER_JOB_REFUSED = "WorkerJobRefused"
    ADOPTED_DATA = "AdoptedData"
    DOCUMENTS_FAILED = "DocumentsFailed"

    # Reasons of status conditions only, never of an event.
    RECONCILING = "Reconciling"
    RECONCILED = "Reconciled"
    RUN_STARTING = "RunStarting"
    RUN_ACTIVE = "RunActive"
    RUN_FINISHED = "RunFinished"
    SUSPENDED = "Suspended"
    NO_FAILURE = "NoFailure"
    EMBEDDINGS_DISABLED = "Disabled"
    VECTOR_EXTENSION_MISSING = "VectorExtensionMissing"
    VECTORS_STORED = "VectorsStored"


STORE_RECORDED: frozenset[Reason] = frozenset(
    {Reason.RUN_STARTED, Reason.DISCOVERED, Reason.RUN_SUCCEEDED, Reason.RUN_FAILED, Reason.INVALID_SPEC}
)
"""Reasons the store writes into the job's log itself, in the transaction that makes them true."""


# The messages of the run's milestones, written by the store into the job's log and posted by the
# operator as Kubernetes Events: one wording, so the event stream and `kubectl describe` read alike.


def run_started(run: int, reason: str) -> str:
    """RunStarted: the run and what started it ("created", "schedule 0 * * * *", "requested at ...")."""
    return f"Started run {run}: {reason}"


def run_finished(run: int, summary: RunSummary) -> str:
    """What a finished run did: RunSucceeded's message, and RunFailed's before the cause."""
    s = summary
    return (
        f"Run {run} finished: {s.added} added, {s.updated} updated, {s.unchanged} unchanged, "
        f"{s.deleted} deleted, {s.failed} failed"
    )


def run_failed(run: int, cause: str) -> str:
    """RunFailed of a run closed before it drained (its worker Job failed, it was interrupted)."""
    return f"Run {run} failed: {cause}"


def superseded_by(run: int) -> str:
    """The error of a run closed as RunSuperseded when `run` started, and the last error of its cancelled tasks."""
    return f"superseded by run {run}"
