"""`helm install` without the database Secret fails at once, saying which command creates it, instead
of waiting for the migration hook until helm times out. Needs an API server for `lookup`: the real
kube-apiserver of the session's control plane (tests/kube/controlplane.py)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.chart.conftest import CHART, tool
from tests.kube.controlplane import ControlPlane

pytestmark = pytest.mark.timeout(180)


async def test_install_without_the_database_secret_fails_fast_with_the_command(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    kubeconfig = control_plane.kubeconfig
    # The test API server is v1.24, older than the chart's kubeVersion: lift that one constraint.
    chart = tmp_path / "headrace"
    shutil.copytree(CHART, chart)
    lines = (chart / "Chart.yaml").read_text().splitlines()
    (chart / "Chart.yaml").write_text("\n".join(line for line in lines if not line.startswith("kubeVersion")) + "\n")
    namespace = await control_plane.create_namespace(prefix="hr")

    def install() -> subprocess.CompletedProcess[str]:
        command = [str(tool("helm")), "--kubeconfig", str(kubeconfig), "install", "--dry-run=server"]
        return subprocess.run([*command, "headrace", str(chart), "-n", namespace], capture_output=True, text=True)

    refused = install()
    assert refused.returncode != 0
    assert f'Secret "headrace-database" (key DATABASE_URL) is missing in namespace "{namespace}"' in refused.stderr
    assert f"kubectl -n {namespace} create secret generic headrace-database --from-literal=DATABASE_URL=" in (
        refused.stderr
    )
    created = control_plane.kubectl(
        "-n",
        namespace,
        "create",
        "secret",
        "generic",
        "headrace-database",
        "--from-literal=DATABASE_URL=x",
        check=False,
    )
    assert created.returncode == 0, created.stderr
    accepted = install()
    assert accepted.returncode == 0, accepted.stderr
