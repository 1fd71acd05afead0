"""A tenant setting `allowPrivateNetworks` to reach the cluster's own services or a metadata endpoint."""

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

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


async def apply(op: Operator, raw: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    patch, events = await handle(reconcile.apply_spec, op, raw, NOW)
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
    assert not [key for key in emulator.objects if key[0].plural != "namespaces"]  # no worker Job: nothing fetched
    view = await jobs.find_job(op.pool, "default", raw["metadata"]["name"])
    assert view is not None and view.spec_error is not None and "allowPrivateNetworks" in view.spec_error


@pytest.mark.parametrize("source", PRIVATE_SOURCES, ids=["http", "s3"])
async def test_honoured_when_the_installation_permits_it(
    op: Operator, emulator: kmock.KubernetesEmulator, source: dict[str, Any]
) -> None:
    permissive = dataclasses.replace(op, config=op.config.model_copy(update={"allow_private_networks": True}))
    raw, _ = await apply(permissive, ij(spec={"source": source}))
    ready = {c["type"]: c for c in raw["status"]["conditions"]}["Ready"]
    assert ready["status"] == "True"
    assert raw["status"]["phase"] == "Running"
