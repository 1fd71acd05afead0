"""Operator fixtures: IngestionJob bodies, the operator's context on real Postgres, kmock's Kubernetes emulator."""

import copy
import uuid
from collections.abc import AsyncIterator
from typing import Any

import kmock
import kopf
import pytest
from kmock._internal import parsing as kmock_parsing

from bench.common import list_then_watch_emulator, with_cluster_namespaces
from headrace.operator.kube import KubeClient
from headrace.operator.reconcile import Operator
from headrace.operator.settings import OperatorSettings
from headrace.store.db import Pool

IMAGE = "ghcr.io/example/headrace:test"
INGEST_URL = "http://headrace-ingest.headrace.svc:8081"

# What kopf and our client need the emulator to list, with the verbs they use. Without the CRD and
# namespace entries kopf never starts watching (see DESIGN.md, "Field notes").
RESOURCES = {
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False),
    "v1/namespaces": ("Namespace", False),
    "v1/secrets": ("Secret", True),
    "headrace.io/v1alpha1/ingestionjobs": ("IngestionJob", True),
    "batch/v1/jobs": ("Job", True),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", True),
    "v1/events": ("Event", True),
}
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]
_kmock_parse_path = kmock_parsing.parse_path


def declare_resources(emulator: kmock.KubernetesEmulator) -> None:
    for key, (kind, namespaced) in RESOURCES.items():
        emulator.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=namespaced, verbs=VERBS)


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    """kmock's emulator, with a watch that begins where kopf's list ended (`list_then_watch_emulator`)."""
    return {**kmock_options, "cls": list_then_watch_emulator()}


def parse_cluster_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make kmock parse /api/v1/namespaces/<name> as the cluster-scoped object it is
    (`with_cluster_namespaces`), for this test."""
    monkeypatch.setattr(kmock_parsing, "parse_path", with_cluster_namespaces(_kmock_parse_path))


@pytest.fixture
def emulator(kmock: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch) -> kmock.KubernetesEmulator:
    declare_resources(kmock)
    parse_cluster_namespaces(monkeypatch)
    return kmock


NAMESPACES = ("default", "team-a", "team-b")


class Namespaces:
    """The emulator's namespaces, each with a uid."""

    def __init__(self, emulator: kmock.KubernetesEmulator) -> None:
        self.emulator = emulator

    def create(self, name: str) -> str:
        """A namespace with a fresh uid (replacing one of the same name, as a re-created one); returns the uid."""
        uid = str(uuid.uuid4())
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "uid": uid}}
        self.emulator.objects[kmock.resource("v1/namespaces"), None, name] = namespace
        return uid


@pytest.fixture
def namespaces(emulator: kmock.KubernetesEmulator) -> Namespaces:
    found = Namespaces(emulator)
    for name in NAMESPACES:
        found.create(name)
    return found


@pytest.fixture
async def op(pool: Pool, emulator: kmock.KubernetesEmulator, namespaces: Namespaces) -> AsyncIterator[Operator]:
    kube = KubeClient(kopf.ConnectionInfo(server=str(emulator.url)))
    config = OperatorSettings(
        database_url="postgresql://owner:secret@db.example:5432/headrace?sslmode=require",
        worker_image=IMAGE,
        ingest_url=INGEST_URL,
    )
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
