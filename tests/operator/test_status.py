"""Conditions, phase, the typed status and its Events, and the builtin autoscaler: pure functions, no cluster."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from headrace.model import (
    Condition,
    IngestionJob,
    IngestionJobStatus,
    Progress,
    RunSummary,
    WorkerStatus,
    parse_manifest,
)
from headrace.model.run import RunState, phase_of
from headrace.operator.status import (
    Observed,
    builtin_replicas,
    embeddings_condition,
    invalid_status,
    merge_conditions,
    next_status,
    status_patch,
)
from headrace.store.jobs import JobView

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _wire(conditions: list[Condition]) -> list[dict[str, object]]:
    return [c.to_wire() for c in conditions]


def test_first_reconcile_writes_every_condition_even_unknown() -> None:
    result = _wire(merge_conditions([], [Observed("Ready", "True", "Reconciled")], generation=3, now=T0))
    assert [c["type"] for c in result] == ["Ready", "Progressing", "Succeeded", "Failed", "EmbeddingsReady"]
    assert [c["status"] for c in result] == ["True", "Unknown", "Unknown", "Unknown", "Unknown"]
    assert all(c["observedGeneration"] == 3 and c["lastTransitionTime"] == "2026-01-01T00:00:00Z" for c in result)


def test_transition_time_moves_only_when_status_changes() -> None:
    first = merge_conditions([], [Observed("Ready", "True", "Reconciled")], generation=1, now=T0)
    later = T0 + timedelta(minutes=1)
    same = merge_conditions(first, [Observed("Ready", "True", "Reconciled", "new words")], generation=2, now=later)
    assert _wire(same)[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z" and same[0].message == "new words"
    assert same[0].observed_generation == 2
    flipped = merge_conditions(same, [Observed("Ready", "False", "InvalidSpec")], generation=3, now=later)
    assert _wire(flipped)[0]["lastTransitionTime"] == "2026-01-01T00:01:00Z"


def test_bad_reason_is_refused() -> None:
    with pytest.raises(ValueError, match="reason"):
        merge_conditions([], [Observed("Ready", "True", "not camel case")], generation=1, now=T0)


JOB = IngestionJob.model_validate(
    {
        "apiVersion": "headrace.io/v1alpha1",
        "kind": "IngestionJob",
        "metadata": {
            "name": "a",
            "namespace": "default",
            "uid": "0b6f0c1e-1111-4c1e-8a52-5d0c9d4e0f5b",
            "generation": 1,
        },
        "spec": {"source": {"volume": {"claimName": "docs"}}},
    }
)


def _state(*, finished: bool, error: str | None = None, end_reason: str | None = None) -> RunState:
    return RunState(
        run=1,
        progress=Progress(total=2, succeeded=1, pending=1, percent=50),
        summary=RunSummary(added=1),
        discovery_done=True,
        started_at=T0,
        finished_at=T0 + timedelta(minutes=1) if finished else None,
        error=error,
        end_reason=end_reason,
    )


STATES = [
    None,
    _state(finished=False),
    _state(finished=True, end_reason="RunSucceeded"),
    _state(finished=True, error="3 documents failed, more than allowed", end_reason="FailurePolicyExceeded"),
    _state(finished=True, error="discovery failed: no such bucket", end_reason="DiscoveryFailed"),
    _state(finished=True, error="the worker Job failed: backoff", end_reason="BackoffLimitExceeded"),
    _state(finished=True, error="superseded by run 2", end_reason="RunSuperseded"),
    _state(finished=True, error="interrupted", end_reason="RunInterrupted"),
]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("suspended", [False, True])
def test_status_and_api_show_the_same_phase_for_every_run_state(state: RunState | None, suspended: bool) -> None:
    """The CR's phase (the operator's next_status) and the API's (JobView) agree for every run state, and
    the CR's conditions say the same thing as its phase."""
    job = JOB.model_copy(update={"spec": JOB.spec.model_copy(update={"suspend": suspended})})
    status, _ = next_status(
        job, IngestionJobStatus(), run=1, job_name="a-run-1", state=state, workers=WorkerStatus(), now=T0
    )
    view = JobView(
        uid=uuid.UUID(str(job.metadata.uid)),
        namespace="default",
        name="a",
        current_run=1,
        suspended=suspended,
        spec_error=None,
        created_at=T0,
        updated_at=T0,
        state=state,
    )
    assert status.phase == view.phase == phase_of(state, suspended=suspended)
    holds = {c.type for c in status.conditions if c.status == "True"}
    assert ("Failed" in holds) == (status.phase == "Failed")
    assert ("Succeeded" in holds) == (status.phase == "Succeeded")
    assert ("Progressing" in holds) == (status.phase == "Running")
    interrupted = state is not None and state.end_reason == "RunInterrupted"
    assert (status.phase == "Interrupted") == interrupted
    if interrupted:
        assert {c.type: c.reason for c in status.conditions}["Succeeded"] == "RunInterrupted"


def test_a_refused_spec_is_failed_in_the_status_and_the_api() -> None:
    status, events = invalid_status(IngestionJobStatus(), "spec.source: required", generation=1, now=T0)
    assert status.phase == phase_of(None, suspended=False, spec_error="spec.source: required") == "Failed"
    assert [(e.type, e.reason) for e in events] == [("Warning", "InvalidSpec")]


def test_a_failed_run_reports_its_end_reason_and_posts_one_event() -> None:
    running, events = next_status(
        JOB,
        IngestionJobStatus(),
        run=1,
        job_name="a-run-1",
        state=_state(finished=False),
        workers=WorkerStatus(),
        now=T0,
    )
    assert running.phase == "Running" and events == []
    failed_state = _state(finished=True, error="the worker Job failed: too many pods", end_reason="DeadlineExceeded")
    failed, events = next_status(
        JOB, running, run=1, job_name="a-run-1", state=failed_state, workers=WorkerStatus(), now=T0
    )
    by_type = {c.type: c for c in failed.conditions}
    assert failed.phase == "Failed" and by_type["Failed"].reason == "DeadlineExceeded"
    assert failed.completion_time == failed_state.finished_at
    assert [(e.type, e.reason, e.message) for e in events] == [
        ("Warning", "RunFailed", "the worker Job failed: too many pods")
    ]
    # The next run clears the end time: a merge patch with null removes it.
    patch = status_patch(failed.to_wire(), running.model_copy(update={"run": 2}))
    assert patch["completionTime"] is None and patch["run"] == 2


def test_a_name_conflict_is_a_ready_problem_with_one_warning() -> None:
    problem = Observed("Ready", "False", "NameConflict", "HorizontalPodAutoscaler a exists and is not owned")
    first, events = next_status(
        JOB,
        IngestionJobStatus(),
        run=1,
        job_name="a-run-1",
        state=None,
        workers=WorkerStatus(),
        problem=problem,
        now=T0,
    )
    assert [(e.type, e.reason) for e in events] == [("Warning", "NameConflict")]
    again, events = next_status(
        JOB, first, run=1, job_name="a-run-1", state=None, workers=WorkerStatus(), problem=problem, now=T0
    )
    assert events == [] and status_patch(first.to_wire(), again) == {}


@pytest.mark.parametrize(
    ("pending", "expected"),
    [(0, 1), (1, 1), (10, 1), (11, 2), (95, 8), (10_000, 8)],
)
def test_builtin_replicas(pending: int, expected: int) -> None:
    assert builtin_replicas(pending, tasks_per_worker=10, minimum=1, maximum=8) == expected


def test_builtin_replicas_may_scale_to_zero() -> None:
    assert builtin_replicas(0, tasks_per_worker=10, minimum=0, maximum=8) == 0


@pytest.mark.parametrize(
    ("embedding", "vectors", "expected"),
    [
        ({}, True, ("True", "VectorsStored")),
        ({}, False, ("False", "VectorExtensionMissing")),
        ({"provider": "none"}, False, ("False", "Disabled")),
    ],
)
def test_embeddings_condition_says_why_search_is_keyword_only(
    embedding: dict[str, str], vectors: bool, expected: tuple[str, str]
) -> None:
    job = parse_manifest(
        {
            "apiVersion": "headrace.io/v1alpha1",
            "kind": "IngestionJob",
            "metadata": {"name": "docs", "namespace": "team-a"},
            "spec": {"source": {"volume": {"path": "docs"}}, "embedding": embedding},
        }
    )
    observed = embeddings_condition(job, vectors_available=vectors)
    assert (observed.status, observed.reason) == expected
