"""The benchmarks' own arithmetic and checks: percentiles, median and spread, the exactly-once verdict."""

import pytest

from bench import common
from bench.queue import NotExactlyOnce, check_exactly_once


def test_percentiles_interpolate_between_closest_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert common.percentile(values, 50) == pytest.approx(50.5)
    assert common.percentile(values, 99) == pytest.approx(99.01)
    assert common.percentile([7.0], 99) == 7.0
    assert common.percentile([], 50) != common.percentile([], 50)  # NaN: no samples, no latency


def test_summary_reports_median_and_spread() -> None:
    summary = common.Summary.of([3.0, 1.0, 2.0])
    assert (summary.median, summary.low, summary.high) == (2.0, 1.0, 3.0)
    assert summary.fmt() == "2 (1-3)"
    assert common.Summary.of([5.0]).fmt(1) == "5.0"


def test_exactly_once_accepts_a_clean_run() -> None:
    check_exactly_once("q", [1, 2, 3], 3, 3)


@pytest.mark.parametrize(
    ("seen", "finished"),
    [([1, 2, 2], 3), ([1, 2], 2), ([1, 2, 3], 2), ([1, 2, 3, 4], 4)],
    ids=["duplicate ack", "lost task", "database disagrees", "extra task"],
)
def test_exactly_once_rejects_duplicates_and_losses(seen: list[int], finished: int) -> None:
    with pytest.raises(NotExactlyOnce):
        check_exactly_once("q", seen, 3, finished)
