"""bench/cluster.py: the jobs it applies are valid IngestionJobs, the smoke corpus is a handful of real files,
without the control plane's binaries it says it skips instead of failing, and with them its smoke run works."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cluster, common, ingest
from headrace.model import IngestionJob
from tests.bench.test_smoke import run_smoke
from tests.kube.controlplane import assets_folder


def test_the_jobs_it_applies_are_valid_with_a_fixed_worker_count() -> None:
    data = ingest.corpus(smoke=True)
    for workers in (1, 2, 3):
        job = IngestionJob.model_validate(cluster.ingestion_job(f"docs-w{workers}", data, workers, "none"))
        assert (job.spec.workers.min, job.spec.workers.max, job.spec.workers.desired) == (workers,) * 3
        assert job.spec.workers.autoscaling.mode == "none"  # nothing else may change the count mid-run
        assert job.spec.workers.batch_size == ingest.BATCH_SIZE  # as bench/ingest.py, so the floors compare
        assert job.spec.retention == "Delete"  # the next run meets tables of the same size


def test_the_smoke_corpus_is_a_handful_of_the_demo_files(tmp_path: Path) -> None:
    data = ingest.corpus(smoke=True)
    small = cluster.handful(data, tmp_path)
    assert len(small.files) == cluster.SMOKE_DOCUMENTS < len(data.files)
    assert [f.read_bytes() for f in small.files] == [f.read_bytes() for f in data.files[: len(small.files)]]
    assert all(f.is_relative_to(tmp_path) for f in small.files)


def test_without_the_control_plane_it_says_it_skips() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBEBUILDER_ASSETS"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.cluster", "--smoke"],
        cwd=common.ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "bench.cluster: skipped" in done.stdout and "KUBEBUILDER_ASSETS is unset" in done.stdout, done.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_it_runs_at_its_smoke_size_on_the_control_plane() -> None:
    if assets_folder() is None:
        pytest.skip("KUBEBUILDER_ASSETS is not set: no control plane to run it on")
    run_smoke("cluster")
