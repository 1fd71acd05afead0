"""Conditions, phase and the builtin autoscaler: pure functions, no cluster."""

from datetime import UTC, datetime, timedelta

import pytest

from headrace.model import parse_manifest
from headrace.operator.status import Observed, builtin_replicas, embeddings_condition, merge_conditions, phase

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_first_reconcile_writes_every_condition_even_unknown() -> None:
    result = merge_conditions([], [Observed("Ready", "True", "Reconciled")], generation=3, now=T0)
    assert [c["type"] for c in result] == ["Ready", "Progressing", "Succeeded", "Failed", "EmbeddingsReady"]
    assert [c["status"] for c in result] == ["True", "Unknown", "Unknown", "Unknown", "Unknown"]
    assert all(c["observedGeneration"] == 3 and c["lastTransitionTime"] == "2026-01-01T00:00:00Z" for c in result)


def test_transition_time_moves_only_when_status_changes() -> None:
    first = merge_conditions([], [Observed("Ready", "True", "Reconciled")], generation=1, now=T0)
    later = T0 + timedelta(minutes=1)
    same = merge_conditions(first, [Observed("Ready", "True", "Reconciled", "new words")], generation=2, now=later)
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z" and same[0]["message"] == "new words"
    assert same[0]["observedGeneration"] == 2
    flipped = merge_conditions(same, [Observed("Ready", "False", "InvalidSpec")], generation=3, now=later)
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T00:01:00Z"


def test_bad_reason_is_refused() -> None:
    with pytest.raises(ValueError, match="reason"):
        merge_conditions([], [Observed("Ready", "True", "not camel case")], generation=1, now=T0)


@pytest.mark.parametrize(
    ("statuses", "suspended", "expected"),
    [
        ({}, False, "Pending"),
        ({"Progressing": "True"}, False, "Running"),
        ({"Progressing": "False"}, True, "Suspended"),
        ({"Succeeded": "True"}, False, "Succeeded"),
        ({"Succeeded": "True"}, True, "Succeeded"),
        ({"Failed": "True", "Progressing": "True"}, False, "Failed"),
    ],
)
def test_phase_is_derived_from_conditions(statuses: dict[str, str], suspended: bool, expected: str) -> None:
    conditions = [{"type": type_, "status": status, "reason": "X"} for type_, status in statuses.items()]
    assert phase(conditions, suspended=suspended) == expected


def test_invalid_spec_phase() -> None:
    assert phase([{"type": "Ready", "status": "False", "reason": "InvalidSpec"}], suspended=False) == "Failed"


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
