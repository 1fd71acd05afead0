"""The stand-in kubelet of the session's control plane: one node that runs every pod in the built image."""

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube.container import BuiltImage
from tests.kube.controlplane import ControlPlane
from tests.kube.kubelet import Image, Kubelet, postgres_socket

IMAGE_REPOSITORY = "registry.e2e.test/headrace"
"""The image the tests install the chart with; the kubelet runs `make image`'s image for it."""


def chart_for_this_control_plane(chart: Path, folder: Path) -> Path:
    """A copy of `chart` in `folder` that installs on this v1.24 control plane (the chart asks for 1.29+)."""
    copy = folder / "chart"
    shutil.copytree(chart, copy)
    chart_yaml = copy / "Chart.yaml"
    chart_yaml.write_text(re.sub(r"(?m)^kubeVersion: .*$", 'kubeVersion: ">=1.24.0-0"', chart_yaml.read_text()))
    return copy


@pytest.fixture(scope="session")
def kubelet(control_plane: ControlPlane, built_image: BuiltImage, postgres_server: str) -> Iterator[Kubelet]:
    control_plane.require_controllers()
    socket = postgres_socket(postgres_server)
    workdir = Path(tempfile.mkdtemp(prefix="headrace-kubelet-"))
    node = Kubelet(
        kubeconfig=control_plane.kubeconfig,
        api_url=control_plane.url,
        workdir=workdir,
        images={IMAGE_REPOSITORY: Image.of(built_image)},
        shared=[socket],
    )
    node.start()
    yield node
    node.stop()
    shutil.rmtree(workdir, ignore_errors=True)
