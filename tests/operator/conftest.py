"""Operator fixtures: IngestionJob bodies, the operator's context on real Postgres, kmock's Kubernetes emulator."""

import copy
import uuid
from collections.abc import AsyncIterator
from typing import Any

import kmock
import kopf
import pytest

from headrace.operator.config import OperatorSettings
from headrace.operator.kube import KubeClient
from headrace.operator.reconcile import Operator
from headrace.store.db import Pool

IMAGE = "ghcr.io/example/headrace:test"

# What kopf and our client need the emulator to list, with the verbs they use. Without the CRD and
# namespace entries kopf never starts watching (see DESIGN.md, "Field notes").
RESOURCES = {
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False),
    "v1/namespaces": ("Namespace", False),
    "headrace.io/v1alpha1/ingestionjobs": ("IngestionJob", True),
    "batch/v1/jobs": ("Job", True),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", True),
    "v1/events": ("Event", True),
}
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]


def declare_resources(emulator: kmock.KubernetesEmulator) -> None:
    for key, (kind, namespaced) in RESOURCES.items():
        emulator.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=namespaced, verbs=VERBS)


@pytest.fixture
def emulator(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    declare_resources(kmock)
    return kmock


@pytest.fixture
async def op(pool: Pool, emulator: kmock.KubernetesEmulator) -> AsyncIterator[Operator]:
    kube = KubeClient(kopf.ConnectionInfo(server=str(emulator.url)))
    config = OperatorSettings(database_url="postgresql://unused", worker_image=IMAGE)
    yield Operator(pool=pool, kube=kube, config=config)
    await kube.close()


def ij(
    name: str = "handbook",
    *,
    spec: dict[str, Any] | None = None,
    uid: str | None = None,
    generation: int = 1,
    namespace: str = "default",
) -> dict[str, Any]:
    """An IngestionJob as the API server would hand it to kopf."""
    return {
        "apiVersion": "headrace.io/v1alpha1",
        "kind": "IngestionJob",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4()), "generation": generation},
        "spec": spec if spec is not None else {"source": {"volume": {"claimName": "docs", "path": "."}}},
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies kopf's Patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def patched(raw: dict[str, Any], patch: kopf.Patch) -> dict[str, Any]:
    """The body after the patch a handler produced was applied."""
    return merge_patch(raw, dict(patch))  # type: ignore[no-any-return]
