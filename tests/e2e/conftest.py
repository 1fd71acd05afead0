"""The stand-in kubelet of the session's control plane: one node that runs every pod as a local process."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube.controlplane import ControlPlane
from tests.kube.kubelet import HEADRACE_IMAGE, Kubelet

IMAGE_REPOSITORY = "registry.e2e.test/headrace"
"""The image the tests install the chart with; the kubelet runs it from the worktree's .venv."""


@pytest.fixture(scope="session")
def kubelet(control_plane: ControlPlane) -> Iterator[Kubelet]:
    control_plane.require_controllers()
    workdir = Path(tempfile.mkdtemp(prefix="headrace-kubelet-"))
    node = Kubelet(
        kubeconfig=control_plane.kubeconfig,
        api_url=control_plane.url,
        workdir=workdir,
        images={IMAGE_REPOSITORY: HEADRACE_IMAGE},
    )
    node.start()
    yield node
    node.stop()
    shutil.rmtree(workdir, ignore_errors=True)
