"""The worker's lease loop: lease ahead, heartbeat, handle, ack in batches or fail; exit 0 when the job's queue is
drained (see `leases.py` for what it holds and why)."""

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from headrace import metrics
from headrace.embedding import Embedder, EmbeddingError, open_embedder
from headrace.model.contract import WORKER_EXIT_STOPPED, WORKER_SECRETS_DIR
from headrace.redaction import redact
from headrace.store import jobs, queue, vectors
from headrace.worker.errors import DocumentError
from headrace.worker.leases import Holding, prefetch_limit
from headrace.worker.sandbox import Sandbox
from headrace.worker.sources import open_source
from headrace.worker.store import WorkerStore
from headrace.worker.tasks import HANDLERS, Context, task_uris

log = logging.getLogger(__name__)

EXIT_DRAINED = 0
EXIT_STOPPED = WORKER_EXIT_STOPPED  # stopped with work left: a Job must not count this pod as done
# Stopped by a signal, the worker exits as a shell reports a process that signal ended: 128 + its number,
# 143 for SIGTERM (what Kubernetes sends, EXIT_STOPPED) and 130 for Ctrl-C, as `headrace run` does.
EXIT_UNKNOWN_JOB = 2
EXIT_BAD_SOURCE = 3  # the source cannot be opened: a Secret it references is missing or incomplete
EXIT_REFUSED = 4  # the ingest service refused the worker (its token, or a request): not retried

TASKS_AT_ONCE = 2
"""Tasks one worker works on at once. Two, so that the end of one (its last documents embedded and its
last group written while the sandbox has nothing to extract) overlaps the start of the next (its first
objects fetched and extracted while the database has nothing to write). One at a time, each task
boundary drained the worker's pipeline: a tenth of the wall time of an ingest of 10-document tasks
(docs/benchmarks.md, "Ingest: two tasks at once"). They share one budget of raw objects
(`tasks.RAW_OBJECTS`), so a worker's memory holds no more fetched bytes than one task's stages did, and
share its sandbox, model and database pool."""


class Worker:
    """One worker process's loop over one job's queue, kept in `store` (scoped to that job)."""

    def __init__(
        self,
        store: WorkerStore,
        *,
        volume_root: Path,
        secrets_dir: Path = Path(WORKER_SECRETS_DIR),
        extract_memory_bytes: int | None = None,
        lease_seconds: float = 30.0,
        poll_seconds: float = 0.5,
        grace_seconds: float = 25.0,
        name: str | None = None,
        tasks_at_once: int = TASKS_AT_ONCE,
    ) -> None:
        self.store = store
        self.job_uid: uuid.UUID = store.job_uid
        self.volume_root = volume_root
        self.secrets_dir = secrets_dir
        self.extract_memory_bytes = extract_memory_bytes
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.grace_seconds = grace_seconds
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.tasks_at_once = tasks_at_once
        self.stopping = asyncio.Event()
        self.stopped_code = EXIT_STOPPED

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, sig)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop leasing; the tasks being worked on get `grace_seconds` to finish before they are released.
        The first signal decides the exit code (128 + its number) of a worker stopped with work left."""
        if not self.stopping.is_set():
            log.info("Stopping worker", extra={"worker": self.name, "signal": signal.Signals(signum).name})
            self.stopped_code = 128 + signum
        self.stopping.set()

    async def run(self) -> int:
        job = await self.store.get_job()
        if job is None:
            log.error("Found no such job", extra={"job_uid": str(self.job_uid)})
            return EXIT_UNKNOWN_JOB
        try:
            source = open_source(job.spec.source, volume_root=self.volume_root, secrets_dir=self.secrets_dir)
        except DocumentError as exc:  # e.g. a referenced Secret is not mounted or lacks a key
            log.error("Failed to open source", extra={"job": job.name, "reason": str(exc)})
            return EXIT_BAD_SOURCE
        try:
            embedder, space = await self._embedding(job)
        except EmbeddingError as exc:  # the endpoint's API-key Secret is not mounted
            log.error("Failed to open embedding model", extra={"job": job.name, "reason": str(exc)})
            await source.close()
            return EXIT_BAD_SOURCE
        ctx = Context(self.store, job, source, Sandbox(memory_bytes=self.extract_memory_bytes), embedder, space)
        log.info("Started worker", extra={"worker": self.name, "job": job.name, "namespace": job.namespace})
        try:
            return await self._loop(ctx)
        finally:
            await ctx.extractor.close()
            await source.close()
            if embedder is not None:
                await embedder.close()

    async def _embedding(self, job: jobs.JobRecord) -> tuple[Embedder | None, vectors.Space | None]:
        """The job's embedder and vector space, or (None, None) when embeddings are off or this
        database lacks pgvector; then documents are indexed for keyword search only."""
        spec = job.spec.embedding
        if not spec.enabled:
            return None, None
        if (space := await self.store.vector_space()) is None:
            log.warning(
                "Skipped embeddings",
                extra={"job": job.name, "reason": "the vector extension (pgvector) is not installed in the database"},
            )
            return None, None
        return open_embedder(spec, secrets_dir=self.secrets_dir), space

    async def _loop(self, ctx: Context) -> int:
        holding = Holding(
            self.store,
            worker=self.name,
            lease_seconds=self.lease_seconds,
            prefetch=prefetch_limit(ctx.job.spec.workers.batch_size),
            at_once=self.tasks_at_once,
        )
        beat = asyncio.create_task(holding.beat_forever())
        try:
            return await self._drain(ctx, holding)
        finally:
            await _cancel(beat)

    async def _drain(self, ctx: Context, holding: Holding) -> int:
        """Lease ahead, work on up to `tasks_at_once` tasks, ack in batches; on stop, hand back what was not
        started."""
        job = ctx.job
        working: set[asyncio.Task[None]] = set()
        try:
            while not self.stopping.is_set():
                if len(working) < self.tasks_at_once:
                    leased = await holding.lease()
                    if superseded := next((t.run for t in leased if t.run != job.current_run), None):
                        # A newer run started after this worker read the job: its spec may differ. The run's
                        # own worker Job takes the tasks; this one (of a superseded run) hands them back and
                        # stops once the tasks it is working on have ended.
                        await holding.release_queued()
                        await _settle(working)
                        log.info("Stopped worker", extra={"worker": self.name, "reason": f"run {superseded} started"})
                        return EXIT_STOPPED
                    if started := holding.start():
                        working.add(asyncio.create_task(self._handle(ctx, holding, *started)))
                        continue
                if working:
                    # Nothing more to start now: wait for a task to end (a stop ends each within its grace).
                    done, working = await asyncio.wait(working, return_when=asyncio.FIRST_COMPLETED)
                    for ended in done:
                        ended.result()  # a task's own failure was handled; anything else stops the worker
                    continue
                for dead in await self.store.reap_expired():
                    await self._give_up(ctx, dead, "the worker holding it died or hung on every attempt")
                if await self.store.is_drained():
                    fresh = await self.store.get_job()
                    job = fresh or job
                    if await self.store.finish_run(job.current_run):
                        log.info("Finished run", extra={"job": job.name, "run": job.current_run})
                    log.info("Drained queue", extra={"worker": self.name, "job": job.name})
                    return EXIT_DRAINED
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_seconds):
                        await self.stopping.wait()
            await _settle(working)
            await holding.flush()
            await holding.release_queued()
            return self.stopped_code
        finally:
            await _cancel(*working)  # only when the loop itself failed: the tasks' work stops with it

    async def _handle(self, ctx: Context, holding: Holding, task: queue.Task, lost: asyncio.Event) -> None:
        metrics.TASKS_LEASED.labels(task.kind).inc()
        log.info("Leased task", extra={"task": task.id, "kind": task.kind, "attempt": task.attempts})
        started = time.monotonic()
        work = asyncio.create_task(HANDLERS[task.kind](ctx, task))
        gone = asyncio.create_task(lost.wait())
        stop = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait({work, gone, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop.done() and not work.done() and not gone.done():
                # Asked to stop mid-task: give it the grace period, then hand the task back.
                await asyncio.wait({work, gone}, timeout=self.grace_seconds, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                await _cancel(work)
                holding.forget(task)
                if gone.done():
                    self._abandon(task)
                    return
                await self.store.release(task)
                log.info("Released task", extra={"task": task.id, "reason": "worker stopping"})
                return
        finally:
            await _cancel(gone, stop)
        elapsed = time.monotonic() - started
        metrics.TASK_DURATION.labels(task.kind).observe(elapsed)
        error = work.exception()
        if error is None:
            log.info("Finished task", extra={"task": task.id, "kind": task.kind, "seconds": round(elapsed, 3)})
            await holding.done(task)  # acked with the next batch
            return
        holding.forget(task)
        # A DocumentError says retrying will not help (a source folder that is not there): no retries,
        # and its message is the reason as the user reads it, without a Python class name before it.
        permanent = isinstance(error, DocumentError)
        reason = redact(str(error) if permanent else "".join(traceback.format_exception_only(error)).strip())
        retries = ctx.job.spec.retries
        backoff = queue.backoff_seconds(task.attempts, base=retries.backoff_seconds, cap=retries.max_backoff_seconds)
        outcome = await self.store.fail(task, reason, backoff=backoff, permanent=permanent)
        if outcome == "dead":
            await self._give_up(ctx, task, reason)
        metrics.TASKS_FAILED.labels(task.kind, outcome).inc()
        log.warning(
            "Failed task",
            extra={"task": task.id, "kind": task.kind, "attempt": task.attempts, "outcome": outcome, "error": reason},
        )

    def _abandon(self, task: queue.Task) -> None:
        """The lease was lost mid-task (it expired during an outage and another worker took the task over,
        or a newer run cancelled it): the work was stopped, and the task is the new holder's to finish."""
        metrics.TASKS_FAILED.labels(task.kind, "lost").inc()
        log.warning("Abandoned task", extra={"task": task.id, "kind": task.kind, "reason": "lease lost"})

    async def _give_up(self, ctx: Context, task: queue.Task, reason: str) -> None:
        """A task is dead: record its documents this run has not recorded yet as failed, with the reason."""
        if task.kind != "ingest":
            return
        uris = task_uris(task)
        done = await self.store.processed_in_run(task.run, uris)
        message = f"gave up after {task.attempts} attempts: {reason}"
        failures = {u: message for u in uris if u not in done}
        await self.store.record_outcomes(task.run, failures=failures)


async def _settle(working: "set[asyncio.Task[None]]") -> None:
    """Wait for every task being worked on to end (each ends within its grace once the worker stops),
    raising the first failure of the loop's own making."""
    while working:
        done, _ = await asyncio.wait(working, return_when=asyncio.FIRST_COMPLETED)
        working.difference_update(done)
        for ended in done:
            ended.result()


async def _cancel(*tasks: "asyncio.Task[Any]") -> None:
    """Cancel the tasks and wait until they have stopped (their errors are the caller's to read)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
