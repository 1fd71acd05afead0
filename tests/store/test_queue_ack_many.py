"""Acking a batch of leased tasks in one round trip: exactly once, and never a task whose lease was lost."""

import asyncio
import collections
import uuid

from headrace.store import queue
from headrace.store.db import Pool
from tests.conftest import JobFactory, expire_leases, make_current


async def test_consumers_acking_batches_ack_every_task_exactly_once(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job()
    await make_current(pool, job)
    tasks = [queue.NewTask("ingest", f"t{i}", {"n": i}) for i in range(3000)]
    await queue.enqueue(pool, job.uid, 1, tasks, max_attempts=3)
    acked: collections.Counter[int] = collections.Counter()

    async def consume(name: str) -> None:
        while leased := await queue.lease(pool, job.uid, worker=name, lease_seconds=60, limit=10):
            by_id = {t.id: t for t in leased}
            for task_id in await queue.ack_many(pool, leased):
                acked[by_id[task_id].payload["n"]] += 1

    await asyncio.gather(*(consume(f"w{i}") for i in range(6)))
    assert len(acked) == 3000
    assert set(acked.values()) == {1}
    assert await queue.counts(pool, job.uid) == {"pending": 0, "leased": 0, "done": 3000, "dead": 0, "cancelled": 0}


async def test_ack_many_skips_tasks_whose_lease_was_taken_over(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job()
    await make_current(pool, job)
    await queue.enqueue(pool, job.uid, 1, [queue.NewTask("ingest", f"t{i}", {}) for i in range(2)], max_attempts=3)
    first, second = await queue.lease(pool, job.uid, worker="slow", lease_seconds=30, limit=2)
    assert await expire_leases(pool, job.uid) == 2
    (rescued, _) = await queue.lease(pool, job.uid, worker="other", lease_seconds=30, limit=2)
    assert rescued.id == first.id
    assert await queue.ack_many(pool, [first, second]) == set()  # both leases lapsed and were taken over
    assert await queue.ack_many(pool, []) == set()
    assert (await queue.counts(pool, job.uid))["leased"] == 2


async def test_ack_and_lease_acks_the_held_and_never_releases_them_as_expired(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job()
    await make_current(pool, job)
    await queue.enqueue(pool, job.uid, 1, [queue.NewTask("ingest", f"t{i}", {}) for i in range(7)], max_attempts=3)
    held = await queue.lease(pool, job.uid, worker="w", lease_seconds=30, limit=3)
    # One of them expired meanwhile (its holder still has the token): it must be acked, not leased again.
    await pool.execute(
        "UPDATE headrace.tasks SET lease_expires_at = now() - interval '1 second' WHERE id = $1", held[0].id
    )
    acked, leased = await queue.ack_and_lease(pool, job.uid, held, worker="w", lease_seconds=30, limit=3)
    assert acked == {t.id for t in held}
    assert len(leased) == 3 and not {t.id for t in leased} & acked
    assert (await queue.counts(pool, job.uid))["done"] == 3
    taken_over = queue.Task(**{**leased[0].__dict__, "lease_token": uuid.uuid4()})  # its lease was lost
    acked, more = await queue.ack_and_lease(pool, job.uid, [taken_over], worker="w", lease_seconds=30, limit=10)
    assert acked == set() and [t.id for t in more] == [max(t.id for t in leased) + 1]
    assert (await queue.counts(pool, job.uid))["done"] == 3
