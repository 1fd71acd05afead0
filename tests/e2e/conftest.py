"""The stand-in kubelet of the session's control plane: one node that runs every pod in the built image."""

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.kube.container import BuiltImage
from tests.kube.controlplane import ControlPlane
from tests.kube.kubelet import Image, Kubelet

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
    # The tests' Postgres listens on a Unix socket in its data folder, which only its own user may enter:
    # the socket itself is bound into every pod at the same path (as a node would mount a hostPath socket).
    (socket_folder,) = parse_qs(urlsplit(postgres_server).query)["host"]
    (socket,) = [path for path in Path(socket_folder).glob(".s.PGSQL.*") if path.suffix != ".lock"]
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
