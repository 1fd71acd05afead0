"""A tenant setting `allowPrivateNetworks` to reach the cluster's own services or a metadata endpoint."""

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

import kmock
import kopf
import pytest

from headrace.operator import reconcile
from headrace.operator.reconcile import Operator
from headrace.store import jobs
from tests.operator.conftest import ij, patched

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


async def apply(op: Operator, raw: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    patch = kopf.Patch()
    events = await reconcile.apply_spec(op, kopf.Body(raw), patch, now=NOW)
    return patched(raw, patch), events


PRIVATE_SOURCES = [
    {"http": {"urls": ["http://169.254.169.254/latest/meta-data/"], "allowPrivateNetworks": True}},
    {"s3": {"bucket": "internal", "endpoint": "http://minio.storage:9000", "allowPrivateNetworks": True}},
]


@pytest.mark.parametrize("source", PRIVATE_SOURCES, ids=["http", "s3"])
async def test_refused_unless_the_installation_permits_it(
    op: Operator, emulator: kmock.KubernetesEmulator, source: dict[str, Any]
) -> None:
    raw, events = await apply(op, ij(spec={"source": source}))
    ready = {c["type"]: c for c in raw["status"]["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    kind = next(iter(source))
    assert f"spec.source.{kind}.allowPrivateNetworks" in ready["message"]
    assert "operator.allowPrivateNetworks" in ready["message"]
    assert [e.type for e in events] == ["Warning"]
    assert not list(emulator.objects)  # no worker Job: nothing ever fetched
    assert await jobs.get_job(op.pool, uuid.UUID(raw["metadata"]["uid"])) is None


@pytest.mark.parametrize("source", PRIVATE_SOURCES, ids=["http", "s3"])
async def test_honoured_when_the_installation_permits_it(
    op: Operator, emulator: kmock.KubernetesEmulator, source: dict[str, Any]
) -> None:
    permissive = dataclasses.replace(op, config=dataclasses.replace(op.config, allow_private_networks=True))
    raw, _ = await apply(permissive, ij(spec={"source": source}))
    ready = {c["type"]: c for c in raw["status"]["conditions"]}["Ready"]
    assert ready["status"] == "True"
    assert raw["status"]["phase"] == "Running"
