"""The one vocabulary of a job's events: the reasons shared by Kubernetes Events and the job's log in Postgres.

The store records the run's own milestones (started, discovered, succeeded, failed) as they happen;
the operator records what it does to Kubernetes objects. The API's event stream replays the log, and
the operator posts the same reasons as Kubernetes Events, so `kubectl describe` and the stream read alike.
"""

from enum import StrEnum


class Reason(StrEnum):
    """The CamelCase reason of an event."""

    RUN_STARTED = "RunStarted"
    DISCOVERED = "Discovered"
    RUN_SUCCEEDED = "RunSucceeded"
    RUN_FAILED = "RunFailed"
    RUN_INTERRUPTED = "RunInterrupted"
    """A local run stopped by Ctrl-C or SIGTERM (`headrace run`): its end reason; its event is RunFailed."""
    RUN_SUSPENDED = "RunSuspended"
    RUN_RESUMED = "RunResumed"
    CREATED_JOB = "CreatedJob"
    CREATED_HPA = "CreatedHorizontalPodAutoscaler"
    INVALID_SPEC = "InvalidSpec"
    NAME_CONFLICT = "NameConflict"
    WORKER_JOB_REFUSED = "WorkerJobRefused"
    ADOPTED_DATA = "AdoptedData"
    DOCUMENTS_FAILED = "DocumentsFailed"


STORE_RECORDED: frozenset[Reason] = frozenset(
    {Reason.RUN_STARTED, Reason.DISCOVERED, Reason.RUN_SUCCEEDED, Reason.RUN_FAILED, Reason.INVALID_SPEC}
)
"""Reasons the store writes into the job's log itself, in the transaction that makes them true."""
