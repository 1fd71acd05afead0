"""Every benchmark runs at its smoke size (`python -m bench.<name> --smoke`: tiny inputs, results in a temporary
folder, nothing appended to the docs, no target asserted), so bench/ cannot rot between `make bench` runs."""

import subprocess
import sys
import tempfile

import pytest

from bench import BENCHMARKS, common

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def run_smoke(name: str) -> None:
    """Run benchmark `name` at its smoke size (with the session's KUBEBUILDER_ASSETS, when set, for those
    that start a control plane): it succeeds and writes its results to a temporary folder."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--smoke"],
        cwd=common.ROOT, capture_output=True, text=True, timeout=540, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"bench.{name} --smoke failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert f"results: {tempfile.gettempdir()}/bench-{name}-" in done.stderr, done.stderr[-4000:]


# bench.cluster's smoke starts a control plane and builds the image, so it is in tests/bench/test_cluster.py, one
# of the modules that run beside the session's cluster (tests/conftest.py's CLUSTER_MODULES).
@pytest.mark.parametrize("name", [name for name in BENCHMARKS if name != "cluster"])
def test_the_benchmark_runs_at_its_smoke_size(name: str) -> None:
    run_smoke(name)
