"""The tasks one worker holds: leased ahead of need (prefetch), heartbeated together, acked in batches.

A worker that leases one task and acks it before leasing the next pays two round trips per task;
the queue then runs at half a peer's speed however fast Postgres is. `Holding` leases several at once
and acks finished ones with one `ack_many`, and keeps the guarantees of leasing one at a time:

- exactly-once effects: a task is acked only after its work is done, and every write of that work is
  idempotent for the task's run (keyed by content), so a redelivery after a lost ack changes nothing;
- lease loss: every held task (queued, running or finished-but-unacked) is heartbeated, one statement
  for all of them; a queued task whose lease was lost is dropped, a running one is signalled to stop
  (`lost(task)`), a finished one is counted lost when its ack finds it gone;
- shutdown: `release_queued` hands back every task leased but not started, without counting the attempt.

How many to hold is bounded twice: by documents (`workers.batchSize` documents per ingest task, at most
`PREFETCH_DOCUMENTS` documents held), so one worker does not take a whole small queue from the others;
and by the lease time, so a worker holds no more than it expects to finish within half a lease at the
pace of its tasks so far: their duration, divided by the tasks it works on at once (the heartbeat keeps
them held regardless, but a worker that dies holding them delays them by a lease).
"""

import asyncio
import collections
import logging
import time
from collections.abc import Callable

from headrace import metrics
from headrace.store import queue
from headrace.worker.store import WorkerStore

log = logging.getLogger(__name__)

PREFETCH_DOCUMENTS = 500
"""At most this many documents (tasks × `workers.batchSize`) held by one worker, leased ahead of need."""

MAX_PREFETCH = 32
"""At most this many tasks held by one worker, whatever their size."""


def prefetch_limit(batch_size: int) -> int:
    """How many tasks of `batch_size` documents a worker may hold at once."""
    return max(1, min(MAX_PREFETCH, PREFETCH_DOCUMENTS // max(1, batch_size)))


class Holding:
    """One worker's held tasks of one job: `next()` hands out the next to start, `done()` queues its ack."""

    def __init__(
        self, store: WorkerStore, *, worker: str, lease_seconds: float, prefetch: int, at_once: int = 1
    ) -> None:
        self.store = store
        self.worker = worker
        self.lease_seconds = lease_seconds
        self.prefetch = max(1, prefetch)
        self.at_once = max(1, at_once)  # tasks the worker works on at once: each takes longer, more finish
        self.queued: collections.deque[queue.Task] = collections.deque()
        self.running: dict[int, tuple[queue.Task, asyncio.Event]] = {}
        self.finished: list[queue.Task] = []
        self._mean_seconds: float | None = None  # moving average of a task's duration, for the lease bound
        self._started_at: dict[int, float] = {}

    @property
    def held(self) -> list[queue.Task]:
        """Every task this worker holds a lease on: queued, running, or finished and waiting for its ack."""
        return [*self.queued, *(t for t, _ in self.running.values()), *self.finished]

    def _limit(self) -> int:
        """How many to lease now: the prefetch, less when tasks are slow enough to outlast half a lease."""
        if self._mean_seconds is None:
            return 1  # nothing known about these tasks yet: one, then as many as their pace allows
        by_lease = int(self.lease_seconds / 2 * self.at_once / max(self._mean_seconds, 1e-6))
        return max(1, min(self.prefetch, by_lease))

    async def lease(self) -> list[queue.Task]:
        """Lease more tasks when none is queued, acking the finished ones in the same statement. Returns
        the new ones."""
        if self.queued:
            return []
        batch, self.finished = self.finished, []
        acked, leased = await self.store.lease(
            batch, worker=self.worker, lease_seconds=self.lease_seconds, limit=self._limit()
        )
        self._count_acks(batch, acked)
        self.queued.extend(leased)
        return leased

    def start(self) -> tuple[queue.Task, asyncio.Event] | None:
        """The next queued task, now running, and the event set if its lease is lost; None when none is queued."""
        if not self.queued:
            return None
        task = self.queued.popleft()
        lost = asyncio.Event()
        self.running[task.id] = (task, lost)
        self._started_at[task.id] = time.monotonic()
        return task, lost

    def _stopped(self, task: queue.Task) -> None:
        self.running.pop(task.id, None)
        started = self._started_at.pop(task.id, None)
        if started is not None:
            took = time.monotonic() - started
            self._mean_seconds = took if self._mean_seconds is None else 0.8 * self._mean_seconds + 0.2 * took

    async def done(self, task: queue.Task) -> None:
        """The task's work is done: ack it with the next lease (one statement acks the batch and leases the
        next), or at once should a full batch of finished tasks wait while more are queued."""
        self._stopped(task)
        self.finished.append(task)
        if self.queued and len(self.finished) >= self.prefetch:
            await self.flush()

    def forget(self, task: queue.Task) -> None:
        """The task left this worker's hands otherwise (failed, released or abandoned)."""
        self._stopped(task)

    async def flush(self) -> set[int]:
        """Ack every finished task in one round trip. Returns the ids acked."""
        if not self.finished:
            return set()
        batch, self.finished = self.finished, []
        acked = await self.store.ack(batch)
        self._count_acks(batch, acked)
        return acked

    def _count_acks(self, batch: list[queue.Task], acked: set[int]) -> None:
        for task in batch:
            if task.id in acked:
                metrics.TASKS_ACKED.labels(task.kind).inc()
                log.debug("Acked task", extra={"task": task.id, "kind": task.kind})
            else:
                metrics.TASKS_FAILED.labels(task.kind, "lost").inc()
                log.warning("Lost lease before ack", extra={"task": task.id})

    async def heartbeat(self) -> None:
        """Extend every held lease; drop queued tasks whose lease was lost and signal running ones."""
        held = self.held
        if not held:
            return
        kept = await self.store.heartbeat(held, lease_seconds=self.lease_seconds)
        # Only what was asked about: a task leased while the heartbeat was on its way holds a new lease.
        asked = {task.id for task in held}
        self._lose(lambda task: task.id in asked and task.id not in kept)

    def lose_all(self) -> None:
        """The leases could not be extended (the database stayed away): count every one of them lost."""
        self._lose(lambda _: True)

    def _lose(self, gone: Callable[[queue.Task], bool]) -> None:
        for task in [t for t in self.queued if gone(t)]:
            self.queued.remove(task)
            metrics.TASKS_FAILED.labels(task.kind, "lost").inc()
            log.warning("Lost lease of a queued task", extra={"task": task.id})
        for task, lost in self.running.values():
            if gone(task):
                lost.set()
        self.finished = [t for t in self.finished if not gone(t)]

    async def beat_forever(self) -> None:
        """Heartbeat every third of the lease until cancelled."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.heartbeat()
            except Exception as exc:  # the outage outlasted the retry policy: the leases have expired
                log.warning("Failed to extend leases", extra={"error": repr(exc)})
                self.lose_all()

    async def release_queued(self) -> int:
        """Hand back every task leased but not started. Returns how many were handed back."""
        released = 0
        while self.queued:
            task = self.queued.popleft()
            if await self.store.release(task):
                released += 1
        if released:
            log.info("Released tasks", extra={"tasks": released, "reason": "not started"})
        return released
