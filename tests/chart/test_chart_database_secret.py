"""`helm install` without the database Secret fails at once, saying which command creates it, instead
of waiting for the migration hook until helm times out. Needs an API server for `lookup`: the real
kube-apiserver of KUBEBUILDER_ASSETS (tests/operator/cluster.py)."""

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart.conftest import CHART, tool
from tests.operator.cluster import assets, real_apiserver, write_kubeconfig

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    found = assets()
    if found is None:
        pytest.skip("KUBEBUILDER_ASSETS is not set, so there is no real kube-apiserver to test against")
    work = tmp_path_factory.mktemp("apiserver")
    with real_apiserver(found, work) as server:
        config = write_kubeconfig(work / "kubeconfig", server.url, insecure=True)
        while kubectl(config, "get", "namespace", "default").returncode != 0:
            time.sleep(0.2)
        yield config


def kubectl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool("kubectl")), "--kubeconfig", str(config), *args], capture_output=True, text=True)


def test_install_without_the_database_secret_fails_fast_with_the_command(kubeconfig: Path, tmp_path: Path) -> None:
    # The test API server is v1.24, older than the chart's kubeVersion: lift that one constraint.
    chart = tmp_path / "headrace"
    shutil.copytree(CHART, chart)
    lines = (chart / "Chart.yaml").read_text().splitlines()
    (chart / "Chart.yaml").write_text("\n".join(line for line in lines if not line.startswith("kubeVersion")) + "\n")
    assert kubectl(kubeconfig, "create", "namespace", "hr").returncode == 0

    def install() -> subprocess.CompletedProcess[str]:
        command = [str(tool("helm")), "--kubeconfig", str(kubeconfig), "install", "--dry-run=server"]
        return subprocess.run([*command, "headrace", str(chart), "-n", "hr"], capture_output=True, text=True)

    refused = install()
    assert refused.returncode != 0
    assert 'Secret "headrace-database" (key DATABASE_URL) is missing in namespace "hr"' in refused.stderr
    assert "kubectl -n hr create secret generic headrace-database --from-literal=DATABASE_URL=" in refused.stderr
    created = kubectl(
        kubeconfig, "-n", "hr", "create", "secret", "generic", "headrace-database", "--from-literal=DATABASE_URL=x"
    )
    assert created.returncode == 0, created.stderr
    accepted = install()
    assert accepted.returncode == 0, accepted.stderr
