"""The worker's lease path: prefetch, one heartbeat for every held task, batched acks, hand-back on stop."""

import asyncio
import uuid
from pathlib import Path

from headrace.store import jobs, queue, runs
from headrace.store.db import Pool
from headrace.worker.leases import MAX_PREFETCH, Holding, prefetch_limit
from headrace.worker.loop import EXIT_DRAINED, EXIT_STOPPED, Worker
from headrace.worker.store import DirectStore
from tests.conftest import JobFactory, volume_spec
from tests.worker.test_worker import BIG_CORPUS, documents, wait_for, write


async def _queue_of(pool: Pool, make_job: JobFactory, n: int) -> uuid.UUID:
    job = await make_job(volume_spec())
    run = await runs.start_run(pool, job, reason="test")
    await pool.execute("DELETE FROM headrace.tasks WHERE job_uid = $1", job.uid)  # no discover task
    await queue.enqueue(pool, job.uid, run, [queue.NewTask("ingest", f"t{i}", {}) for i in range(n)], max_attempts=3)
    return job.uid


async def _states(pool: Pool, uid: uuid.UUID) -> dict[int, tuple[str, int]]:
    rows = await pool.fetch("SELECT id, state, attempts FROM headrace.tasks WHERE job_uid = $1", uid)
    return {r["id"]: (r["state"], r["attempts"]) for r in rows}


def test_prefetch_holds_fewer_tasks_the_more_documents_each_carries() -> None:
    assert prefetch_limit(1) == MAX_PREFETCH
    assert prefetch_limit(50) == 10
    assert prefetch_limit(10_000) == 1


async def test_tasks_are_leased_ahead_heartbeated_together_and_acked_in_one_batch(
    pool: Pool, make_job: JobFactory
) -> None:
    uid = await _queue_of(pool, make_job, 12)
    holding = Holding(DirectStore(pool, uid), worker="w", lease_seconds=30, prefetch=5)
    assert len(await holding.lease()) == 1  # nothing known of these tasks' pace yet
    first, _ = holding.start() or (None, None)
    assert first is not None
    await holding.done(first)
    assert (await queue.counts(pool, uid))["done"] == 0, "acked before the next lease"

    assert len(await holding.lease()) == 5  # fast tasks: the whole prefetch, leased as the first is acked
    assert (await queue.counts(pool, uid))["done"] == 1
    await pool.execute("UPDATE headrace.tasks SET lease_expires_at = now() WHERE state = 'leased'")
    await holding.heartbeat()
    expires = await pool.fetchval(
        "SELECT min(lease_expires_at) > now() + interval '20 seconds' FROM headrace.tasks WHERE state = 'leased'"
    )
    assert expires, "a queued task's lease was not extended"
    for _ in range(4):
        task, _ = holding.start() or (None, None)
        assert task is not None
        await holding.done(task)
    assert (await queue.counts(pool, uid))["done"] == 1, "acked one by one instead of in a batch"
    last, _ = holding.start() or (None, None)
    assert last is not None
    await holding.done(last)
    assert len(await holding.lease()) == 5
    assert (await queue.counts(pool, uid))["done"] == 6


async def test_a_queued_task_whose_lease_was_lost_is_never_started(pool: Pool, make_job: JobFactory) -> None:
    uid = await _queue_of(pool, make_job, 3)
    holding = Holding(DirectStore(pool, uid), worker="w", lease_seconds=30, prefetch=3)
    holding._mean_seconds = 0.001  # as after a few fast tasks
    leased = await holding.lease()
    assert len(leased) == 3
    started = holding.start()
    assert started is not None
    running, lost = started
    taken = leased[2]
    await pool.execute("UPDATE headrace.tasks SET lease_token = $2 WHERE id = $1", taken.id, uuid.uuid4())
    await holding.heartbeat()
    assert not lost.is_set()
    assert [t.id for t in holding.queued] == [leased[1].id]

    await pool.execute("UPDATE headrace.tasks SET lease_token = $2 WHERE id = $1", running.id, uuid.uuid4())
    await holding.heartbeat()
    assert lost.is_set(), "the running task was not told its lease was lost"


async def test_tasks_leased_while_a_heartbeat_is_under_way_keep_their_lease(pool: Pool, make_job: JobFactory) -> None:
    uid = await _queue_of(pool, make_job, 3)
    holding = Holding(DirectStore(pool, uid), worker="w", lease_seconds=30, prefetch=3, at_once=2)
    (first,) = await holding.lease()  # nothing known of their pace yet: one
    assert holding.start() is not None
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("SELECT FROM headrace.tasks WHERE id = $1 FOR UPDATE", first.id)
        beating = asyncio.create_task(holding.heartbeat())  # waits for the row lock
        await wait_for(
            pool,
            "SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1",
            "%SET lease_expires_at = now() +%",
        )
        # Meanwhile a worker working on two tasks at once leases for the second.
        (second,) = await holding.lease()
        started = holding.start()
        assert started is not None and started[0].id == second.id
    await asyncio.wait_for(beating, 30)
    _, lost = started
    assert not lost.is_set(), "a task leased during the heartbeat was told its lease was lost"
    assert await holding.flush() == set()  # nothing finished yet; both still held:
    assert {t.id for t in holding.held} == {first.id, second.id}
    assert sorted(s for s, _ in (await _states(pool, uid)).values()) == ["leased", "leased", "pending"]


def test_a_worker_working_on_two_tasks_at_once_holds_as_many_as_it_finishes_in_half_a_lease(
    pool: Pool,
) -> None:
    one, two = (
        Holding(DirectStore(pool, uuid.uuid4()), worker="w", lease_seconds=30, prefetch=10, at_once=n) for n in (1, 2)
    )
    one._mean_seconds = two._mean_seconds = 5.0  # each task takes 5 s; two at once finish two in that time
    assert (one._limit(), two._limit()) == (3, 6)


async def test_release_hands_back_every_unstarted_task_without_counting_the_attempt(
    pool: Pool, make_job: JobFactory
) -> None:
    uid = await _queue_of(pool, make_job, 4)
    holding = Holding(DirectStore(pool, uid), worker="w", lease_seconds=30, prefetch=4)
    holding._mean_seconds = 0.001
    await holding.lease()
    assert holding.start() is not None
    assert await holding.release_queued() == 3
    states = sorted((await _states(pool, uid)).values())
    assert states == [("leased", 1), ("pending", 0), ("pending", 0), ("pending", 0)]


async def test_sigterm_with_prefetched_tasks_leaves_none_leased_and_a_rerun_stores_each_document_once(
    pool: Pool, make_job: JobFactory, tmp_path: Path
) -> None:
    write(tmp_path, BIG_CORPUS)
    job = await make_job(volume_spec(workers={"batchSize": 10}))  # 30 tasks, up to 32 held at once
    run = await runs.start_run(pool, job, reason="test")
    worker = Worker(DirectStore(pool, job.uid), volume_root=tmp_path, poll_seconds=0.05, grace_seconds=0)
    running = asyncio.create_task(worker.run())
    await wait_for(pool, "SELECT count(*) >= 25 FROM headrace.documents WHERE job_uid = $1", job.uid)
    worker.stop()
    assert await asyncio.wait_for(running, 60) == EXIT_STOPPED

    states = (await _states(pool, job.uid)).values()
    assert all(state in ("pending", "done") for state, _ in states)
    assert all(attempts == 0 for state, attempts in states if state == "pending"), "a hand-back counted an attempt"
    assert any(state == "pending" for state, _ in states), "the worker was not stopped mid-run"

    assert await Worker(DirectStore(pool, job.uid), volume_root=tmp_path, poll_seconds=0.05).run() == EXIT_DRAINED
    docs = await documents(pool, job)
    assert len(docs) == 300 and all(d["chunk_count"] == d["chunks"] for d in docs.values())
    state = await jobs.run_state(pool, job.uid, run)
    assert state is not None and state.finished and state.summary.added == 300
