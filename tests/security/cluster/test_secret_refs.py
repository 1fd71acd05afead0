"""A tenant naming Headrace's own Secret in a Secret reference, to have its values sent to an endpoint of
their choosing: refused, with a condition naming the field. Any other Secret of the namespace is mounted."""

import dataclasses
from datetime import UTC, datetime
from typing import Any

import kmock
import pytest

from headrace.operator import reconcile
from headrace.operator.reconcile import Operator
from headrace.store import jobs
from tests.operator.conftest import ij, patched
from tests.operator.test_reconcile import handle

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
VOLUME = {"volume": {"claimName": "docs", "path": "."}}


def spec_naming(field: str, secret: str) -> dict[str, Any]:
    """A spec whose Secret reference `field` names `secret`."""
    if field == "spec.source.http.headersSecretRef.name":
        return {"source": {"http": {"urls": ["https://example.org/a"], "headersSecretRef": {"name": secret}}}}
    if field == "spec.source.s3.credentialsSecretRef.name":
        return {"source": {"s3": {"bucket": "docs", "credentialsSecretRef": {"name": secret}}}}
    endpoint = {
        "url": "https://embed.example.org/v1",
        "model": "m",
        "dimensions": 8,
        "apiKeySecretRef": {"name": secret},
    }
    return {"source": VOLUME, "embedding": {"provider": "endpoint", "endpoint": endpoint}}


FIELDS = [
    "spec.source.http.headersSecretRef.name",
    "spec.source.s3.credentialsSecretRef.name",
    "spec.embedding.endpoint.apiKeySecretRef.name",
]


async def apply(op: Operator, raw: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    patch, events = await handle(reconcile.apply_spec, op, raw, NOW)
    return patched(raw, patch), events


def worker_jobs(emulator: kmock.KubernetesEmulator) -> list[dict[str, Any]]:
    return [dict(obj) for key, obj in emulator.objects.items() if key[0].plural == "jobs"]


@pytest.mark.parametrize("field", FIELDS)
async def test_headraces_own_secret_is_refused_naming_the_field(
    op: Operator, emulator: kmock.KubernetesEmulator, field: str
) -> None:
    own = "registry-credentials"
    op = dataclasses.replace(op, config=op.config.model_copy(update={"worker_image_pull_secrets": [own]}))
    raw, events = await apply(op, ij(spec=spec_naming(field, own)))
    ready = {c["type"]: c for c in raw["status"]["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith(f"{field}: {own} is Headrace's own Secret")
    assert [(e.type, e.reason) for e in events] == [("Warning", "InvalidSpec")]
    assert field in events[0].message
    assert worker_jobs(emulator) == []  # nothing mounts it
    view = await jobs.find_job(op.pool, "default", raw["metadata"]["name"])
    assert view is not None and view.spec_error is not None and field in view.spec_error


async def test_a_secret_of_the_tenants_own_is_mounted(op: Operator, emulator: kmock.KubernetesEmulator) -> None:
    raw, _ = await apply(op, ij(spec=spec_naming(FIELDS[0], "intranet-headers")))
    ready = {c["type"]: c for c in raw["status"]["conditions"]}["Ready"]
    assert ready["status"] == "True", ready
    [job] = worker_jobs(emulator)
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "secret-0", "secret": {"secretName": "intranet-headers"}} in volumes
