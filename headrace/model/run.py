"""A run's state and the one rule that turns it into a job's phase.

The run's row in Postgres is the one owner of how a run ended: `end_reason`, which the run service
(`store/runs.py`) writes whenever it closes a run, with `error` saying it in words. The store reads it
into a `RunState`; the operator's status, the API and its event stream all derive the job's phase from
that state with `phase_of`, and nothing else computes a phase.
"""

from dataclasses import dataclass
from datetime import datetime

from headrace.model.events import Reason
from headrace.model.status import Phase, Progress, RunSummary


@dataclass(frozen=True)
class RunState:
    """Where a run is: its counts and timings, and how it ended."""

    run: int
    progress: Progress
    summary: RunSummary
    discovery_done: bool
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    end_reason: str | None = None
    """How the run ended, set once it finished: a `Reason` (RunSucceeded, DiscoveryFailed, RunSuperseded, ...)
    or the worker Job's Kubernetes reason (BackoffLimitExceeded, ...); None while it runs. `error` says
    more in words."""

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def succeeded(self) -> bool:
        return self.finished and self.end_reason == Reason.RUN_SUCCEEDED

    @property
    def interrupted(self) -> bool:
        return self.finished and self.end_reason == Reason.RUN_INTERRUPTED


def phase_of(state: RunState | None, *, suspended: bool, spec_error: str | None = None) -> Phase:
    """The job's phase, read off its current run: the one rule the operator, the API and the stream share.
    `spec_error` is why the operator refused the spec, if it did: such a job is Failed whatever its run.
    A run that ended with RunInterrupted (a local run stopped by Ctrl-C or SIGTERM) is Interrupted, not
    Failed: nothing in it failed, and the next `headrace run` skips what it already ingested."""
    if spec_error is not None:
        return "Failed"
    if state is not None and state.finished:
        if state.interrupted:
            return "Interrupted"
        return "Succeeded" if state.succeeded else "Failed"
    if suspended:
        return "Suspended"
    return "Pending" if state is None else "Running"
