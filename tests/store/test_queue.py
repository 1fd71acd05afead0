"""The task queue: exactly-once acks under concurrency, lease expiry, heartbeats, backoff, dead letters."""

import asyncio
import collections
from datetime import timedelta

from headrace.model import events
from headrace.store import queue
from headrace.store.db import Pool, create_pool
from headrace.store.jobs import JobRecord
from tests.conftest import JobFactory, expire_leases, make_current


async def fill(pool: Pool, job: JobRecord, n: int, *, max_attempts: int = 5) -> None:
    await make_current(pool, job)
    tasks = [queue.NewTask("ingest", f"t{i}", {"n": i}) for i in range(n)]
    for start in range(0, n, 2000):
        await queue.enqueue(pool, job.uid, 1, tasks[start : start + 2000], max_attempts=max_attempts)


async def test_eight_consumers_ack_each_of_ten_thousand_tasks_exactly_once(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job()
    await fill(pool, job, 10_000)
    acked: collections.Counter[int] = collections.Counter()

    async def consume(name: str) -> None:
        while leased := await queue.lease(pool, job.uid, worker=name, lease_seconds=60, limit=10):
            for task in leased:
                if await queue.ack(pool, task):
                    acked[task.payload["n"]] += 1

    await asyncio.gather(*(consume(f"w{i}") for i in range(8)))
    assert len(acked) == 10_000
    assert set(acked.values()) == {1}
    assert await queue.counts(pool, job.uid) == {"pending": 0, "leased": 0, "done": 10_000, "dead": 0, "cancelled": 0}
    assert await queue.is_drained(pool, job.uid)


async def test_enqueue_is_idempotent_by_dedupe_key(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job()
    await make_current(pool, job)
    first = await queue.enqueue(pool, job.uid, 1, [queue.NewTask("ingest", "a", {})], max_attempts=3)
    again = await queue.enqueue(
        pool, job.uid, 1, [queue.NewTask("ingest", "a", {}), queue.NewTask("ingest", "b", {})], max_attempts=3
    )
    assert (first, again) == (1, 1)
    assert (await queue.counts(pool, job.uid))["pending"] == 2


async def test_expired_lease_is_taken_over_and_the_old_holder_cannot_ack(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job()
    await fill(pool, job, 1)
    (first,) = await queue.lease(pool, job.uid, worker="dies", lease_seconds=30)
    assert await queue.lease(pool, job.uid, worker="other", lease_seconds=30) == []
    assert await expire_leases(pool, job.uid) == 1
    (second,) = await queue.lease(pool, job.uid, worker="other", lease_seconds=30)
    assert second.id == first.id and second.attempts == 2
    assert not await queue.ack(pool, first)
    assert await queue.ack(pool, second)


async def test_heartbeat_keeps_a_lease_alive(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job()
    await fill(pool, job, 1)
    (task,) = await queue.lease(pool, job.uid, worker="alive", lease_seconds=30)
    assert await queue.heartbeat(pool, [task], lease_seconds=3600) == {task.id}
    left = await pool.fetchval("SELECT lease_expires_at - now() FROM headrace.tasks WHERE id = $1", task.id)
    assert left > timedelta(minutes=59)  # past the 30 s it was leased for
    assert await queue.lease(pool, job.uid, worker="thief", lease_seconds=30) == []
    assert await queue.ack(pool, task)


async def test_heartbeat_cannot_revive_a_lease_taken_over(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job()
    await fill(pool, job, 1)
    (task,) = await queue.lease(pool, job.uid, worker="stalled", lease_seconds=30)
    assert await expire_leases(pool, job.uid) == 1
    (taken,) = await queue.lease(pool, job.uid, worker="other", lease_seconds=30)
    assert await queue.heartbeat(pool, [task], lease_seconds=30) == set()
    assert await queue.ack(pool, taken)


async def test_failure_is_retried_after_backoff_then_dead_with_its_error(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job()
    await fill(pool, job, 1, max_attempts=2)
    (task,) = await queue.lease(pool, job.uid, worker="w", lease_seconds=30)
    assert await queue.fail(pool, task, "boom 1", backoff=3600) == "retry"
    assert await queue.lease(pool, job.uid, worker="w", lease_seconds=30) == []  # waiting out the backoff
    assert not await queue.is_drained(pool, job.uid)  # a task waiting for retry is still work
    wait = await pool.fetchval("SELECT available_at - now() FROM headrace.tasks WHERE id = $1", task.id)
    assert timedelta(minutes=59) < wait <= timedelta(hours=1)

    await pool.execute("UPDATE headrace.tasks SET available_at = now() WHERE id = $1", task.id)
    (again,) = await queue.lease(pool, job.uid, worker="w", lease_seconds=30)
    assert again.attempts == 2 and again.last_attempt
    assert await queue.fail(pool, again, "boom 2", backoff=3600) == "dead"
    row = await pool.fetchrow("SELECT state, last_error, attempts FROM headrace.tasks WHERE id = $1", task.id)
    assert dict(row) == {"state": "dead", "last_error": "boom 2", "attempts": 2}
    assert await queue.is_drained(pool, job.uid)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [queue.backoff_seconds(n, base=2, cap=20) for n in range(1, 7)] == [2, 4, 8, 16, 20, 20]


async def test_lease_expired_on_the_last_attempt_is_reaped_as_dead(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job()
    await fill(pool, job, 1, max_attempts=1)
    (task,) = await queue.lease(pool, job.uid, worker="crashes", lease_seconds=30)
    assert await expire_leases(pool, job.uid) == 1
    assert await queue.lease(pool, job.uid, worker="w", lease_seconds=30) == []
    (reaped,) = await queue.reap_expired(pool, job.uid)
    assert reaped.id == task.id
    error = await pool.fetchval("SELECT last_error FROM headrace.tasks WHERE id = $1", task.id)
    assert "lease expired on attempt 1 of 1" in error
    assert await queue.is_drained(pool, job.uid)


async def test_release_hands_a_task_back_without_spending_an_attempt(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job()
    await fill(pool, job, 1)
    (task,) = await queue.lease(pool, job.uid, worker="stopping", lease_seconds=30)
    assert await queue.release(pool, task)
    (again,) = await queue.lease(pool, job.uid, worker="next", lease_seconds=30)
    assert again.id == task.id and again.attempts == 1


async def test_jobs_do_not_share_tasks(pool: Pool, make_job: JobFactory) -> None:
    one, two = await make_job(name="one"), await make_job(name="two")
    await fill(pool, one, 3)
    assert await queue.lease(pool, two.uid, worker="w", lease_seconds=30, limit=10) == []
    assert len(await queue.lease(pool, one.uid, worker="w", lease_seconds=30, limit=10)) == 3


async def test_a_holder_repeating_ack_or_fail_gets_the_same_answer(pool: Pool, make_job: JobFactory) -> None:
    """After a lost reply (the connection broke after the commit) the worker repeats the call."""
    job = await make_job()
    await fill(pool, job, 2, max_attempts=1)
    first, second = await queue.lease(pool, job.uid, worker="w", lease_seconds=30, limit=2)
    assert await queue.ack(pool, first) and await queue.ack(pool, first)
    assert await queue.fail(pool, second, "boom", backoff=0) == "dead"
    assert await queue.fail(pool, second, "boom", backoff=0) == "dead"
    assert await queue.counts(pool, job.uid) == {"pending": 0, "leased": 0, "done": 1, "dead": 1, "cancelled": 0}


async def test_a_cancelled_task_cannot_be_acked_failed_or_released(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job()
    await fill(pool, job, 2)
    (leased,) = await queue.lease(pool, job.uid, worker="old", lease_seconds=30, limit=1)  # and one pending
    await make_current(pool, job, 2)
    async with pool.acquire() as conn:
        assert await queue.cancel_superseded(conn, job.uid, 2, events.superseded_by(2)) == 2
        errors = await conn.fetch("SELECT DISTINCT last_error FROM headrace.tasks WHERE job_uid = $1", job.uid)
    assert [row["last_error"] for row in errors] == ["superseded by run 2"]
    assert not await queue.ack(pool, leased)
    assert await queue.fail(pool, leased, "late", backoff=0) == "lost"
    assert not await queue.release(pool, leased)
    assert await queue.heartbeat(pool, [leased], lease_seconds=30) == set()
    assert await queue.counts(pool, job.uid) == {"pending": 0, "leased": 0, "done": 0, "dead": 0, "cancelled": 2}


async def test_a_lease_reads_the_tasks_it_acks_and_takes_however_many_the_run_has_done(
    pool: Pool, dsn: str, make_job: JobFactory
) -> None:
    """What Postgres reads to ack ten tasks and lease ten does not grow with the run's done tasks, also in the
    plan a connection's prepared statement keeps on a table without statistics (as a new queue's is). It
    read every task of the job per ack before (`tasks_run_finished`), about 1 ms of Postgres CPU per task at
    10,000 tasks (docs/benchmarks.md)."""
    job = await make_job()
    await fill(pool, job, 3000)
    one = await create_pool(dsn, min_size=1, max_size=1)  # one connection: one prepared statement, reused
    try:
        held: list[queue.Task] = []
        for _ in range(200):  # 2,000 tasks done; the statement has long had its generic plan
            _, held = await queue.ack_and_lease(one, job.uid, held, worker="w", lease_seconds=60, limit=10)
        before = await rows_read(one)
        acked, held = await queue.ack_and_lease(one, job.uid, held, worker="w", lease_seconds=60, limit=10)
        assert len(acked) == len(held) == 10
        assert await rows_read(one) - before < 100
    finally:
        await one.close()


async def rows_read(pool: Pool) -> int:
    """Rows of `headrace.tasks` read so far (heap fetches through indexes, and sequential reads), once this
    connection's statistics are flushed."""
    await pool.execute("SELECT pg_stat_force_next_flush()")  # flushed as the backend goes idle after this
    return int(
        await pool.fetchval(
            "SELECT coalesce(idx_tup_fetch, 0) + seq_tup_read FROM pg_stat_user_tables "
            "WHERE relid = 'headrace.tasks'::regclass"
        )
    )
