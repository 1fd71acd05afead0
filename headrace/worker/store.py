"""Everything a worker keeps: the one port through which the worker loop reads and writes its job's queue,
documents, chunks, vectors and runs, and `DirectStore`, which does it on a Postgres pool.

A worker pod in a tenant namespace holds no database credential: it talks to the ingest service
(`RemoteStore`, headrace/worker/remote.py), which runs this same `DirectStore` for the job its token
belongs to. Local mode (`headrace run`, `headrace demo`) uses `DirectStore` in the worker itself. Either
way the worker loop sees one interface, so the queue's guarantees (at-least-once, leases, "newer run
wins", skip by hash, one transaction per group) are kept by one piece of code.

`DirectStore` is scoped to one job, and every id it is handed is checked to be that job's: a run number
must be one of the job's runs, a task, document or chunk id one of its rows. An id that is not raises
`ForeignId` and changes nothing (the ingest service answers 404). A legitimate worker never meets one.
"""

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Literal, ParamSpec, Protocol, TypeVar

from headrace.model.events import Reason
from headrace.store import documents, jobs, queue, runs, vectors
from headrace.store.db import Pool
from headrace.store.documents import DocumentRecord, KnownDocument, Outcome, Written
from headrace.store.jobs import JobRecord
from headrace.store.outage import ride_out

P = ParamSpec("P")
T = TypeVar("T")

FailOutcome = Literal["retry", "dead", "lost"]
Vectors = Sequence[Sequence[float]]


class RunSuperseded(Exception):
    """The task's run is no longer the job's current run: its work is the newer run's to do."""


class ForeignId(LookupError):
    """A run, task, document, chunk or vector-space id that is not one of the job's: nothing was changed."""


class WorkerStore(Protocol):
    """Every persistent operation of one worker, scoped to its one job. Each call is one unit of work,
    idempotent for its run, so a call repeated after a lost answer changes nothing (see `store.outage`)."""

    @property
    def job_uid(self) -> uuid.UUID: ...

    async def get_job(self) -> JobRecord | None:
        """The job as it is now, or None when it was deleted."""
        ...

    async def vector_space(self) -> vectors.Space | None:
        """The vector space of the job's embedding model, or None when the database cannot store vectors."""
        ...

    async def lease(
        self, done: Sequence[queue.Task], *, worker: str, lease_seconds: float, limit: int
    ) -> tuple[set[int], list[queue.Task]]:
        """Ack `done` and lease up to `limit` tasks of the current run (`queue.ack_and_lease`)."""
        ...

    async def ack(self, tasks: Sequence[queue.Task]) -> set[int]:
        """Ack tasks; returns the ids acked (a missing one lost its lease)."""
        ...

    async def heartbeat(self, tasks: Sequence[queue.Task], *, lease_seconds: float) -> set[int]:
        """Extend leases; returns the ids still held."""
        ...

    async def fail(self, task: queue.Task, error: str, *, backoff: float, permanent: bool) -> FailOutcome:
        """Record a failed attempt (`queue.fail`)."""
        ...

    async def release(self, task: queue.Task) -> bool:
        """Hand a task back unprocessed, without counting the attempt."""
        ...

    async def reap_expired(self) -> list[queue.Task]:
        """Dead-letter the tasks whose lease expired on their last attempt, and return them."""
        ...

    async def is_drained(self) -> bool:
        """Whether no task of the job is pending or leased."""
        ...

    async def finish_run(self, run: int) -> bool:
        """Close the drained run exactly once; True when this call closed it."""
        ...

    async def enqueue_discovered(
        self, run: int, batches: Sequence[queue.NewTask], *, max_attempts: int, total: int, done: bool
    ) -> None:
        """Enqueue a page of discovered batches and record the count discovered so far (and, when `done`,
        the Discovered event), in one transaction, or raise RunSuperseded when `run` is no longer current."""
        ...

    async def known(self, uris: Sequence[str]) -> dict[str, KnownDocument]:
        """What the index holds of these URIs."""
        ...

    async def processed_in_run(self, run: int, uris: Sequence[str]) -> set[str]:
        """Which of these URIs the run has already recorded."""
        ...

    async def entry_hashes(self, archive_uri: str, fingerprint: str) -> dict[str, str]:
        """Content hashes of an archive's entries ingested with this fingerprint."""
        ...

    async def store_documents(
        self, run: int, docs: Sequence[tuple[DocumentRecord, Vectors]], *, space: vectors.Space | None
    ) -> Written:
        """Write a group of documents with their chunks and vectors, in one transaction."""
        ...

    async def record_outcomes(
        self,
        run: int,
        *,
        unchanged: Sequence[str] = (),
        unchanged_archives: Sequence[str] = (),
        versions: Mapping[str, str] | None = None,
        failures: Mapping[str, str] | None = None,
    ) -> None:
        """Record what an ingest task decided without writing a document: unchanged documents (and archives
        with their entries), refreshed change markers, and failed documents with their reasons."""
        ...

    async def stale_embeddings(
        self, space: vectors.Space | None, uris: Sequence[str], archive_uris: Sequence[str]
    ) -> list[tuple[int, str]]:
        """(id, uri) of these documents and archive entries whose vectors are not in `space`."""
        ...

    async def drop_vectors(self, run: int, document_id: int) -> Outcome | None:
        """Remove a document's vectors (the job wants none now); None when its chunks changed meanwhile."""
        ...

    async def chunks_to_embed(self, document_id: int, space: vectors.Space) -> tuple[str, list[tuple[int, str]]]:
        """The document's title and the (id, text) of its chunks still lacking a vector in `space`, after
        dropping vectors an earlier version computed from another input."""
        ...

    async def store_chunk_vectors(self, space: vectors.Space, chunk_ids: Sequence[int], vecs: Vectors) -> None:
        """Give these chunks of the job their vector in `space`."""
        ...

    async def finish_reembed(self, run: int, document_id: int, space: vectors.Space) -> Outcome | None:
        """Record a document as re-embedded once all its chunks have their vector in `space`."""
        ...

    async def aclose(self) -> None:
        """Release what the store holds (connections)."""
        ...


async def _call(call: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """A call made once: the ingest service's policy, where the worker's `RemoteStore` rides out outages."""
    return await call(*args, **kwargs)


class DirectStore:
    """`WorkerStore` on a Postgres pool, for one job. Each call rides out a database outage (`ride_out`)
    unless `ride_out_outages` is false (the ingest service, whose callers ride it out themselves)."""

    def __init__(self, pool: Pool, job_uid: uuid.UUID, *, ride_out_outages: bool = True) -> None:
        self.pool = pool
        self._job_uid = job_uid
        self._policy = ride_out if ride_out_outages else _call
        self._current_run = 0  # the highest run number known to be the job's; runs only grow
        self._spaces: dict[int, vectors.Space] = {}  # a space never changes once made

    @property
    def job_uid(self) -> uuid.UUID:
        return self._job_uid

    async def aclose(self) -> None:
        """The pool is its owner's to close."""

    # --- checks: every id is the job's ---------------------------------------------------------------

    async def check_run(self, run: int) -> None:
        """Raise ForeignId unless `run` is one of the job's runs (1 up to its current run)."""
        if 1 <= run <= self._current_run:
            return
        current = await self._policy(jobs.current_run, self.pool, self._job_uid)
        self._current_run = max(self._current_run, current or 0)
        if not 1 <= run <= self._current_run:
            raise ForeignId(f"run {run} is not a run of job {self._job_uid}")

    async def _check_rows(self, *, document_ids: Sequence[int] = (), chunk_ids: Sequence[int] = ()) -> None:
        """Raise ForeignId unless every id is a document or chunk of the job."""
        if document_ids or chunk_ids:
            foreign = await self._policy(
                documents.not_of_job, self.pool, self._job_uid, document_ids=document_ids, chunk_ids=chunk_ids
            )
            if foreign:
                raise ForeignId(f"ids {sorted(foreign)} are not documents or chunks of job {self._job_uid}")

    async def _check_lost(self, tasks: Sequence[queue.Task], kept: set[int]) -> None:
        """Tasks a statement did not find (lease lost, or not the job's): ForeignId for any not the job's.
        Checked after the fact, so the common case costs no extra round trip: the statements themselves
        match only the job's tasks (and only by their lease token), so a foreign id changed nothing."""
        missing = [t.id for t in tasks if t.id not in kept]
        if missing and (foreign := await self._policy(queue.not_of_job, self.pool, self._job_uid, missing)):
            raise ForeignId(f"task ids {sorted(foreign)} are not tasks of job {self._job_uid}")

    # --- the job -----------------------------------------------------------------------------------------

    async def get_job(self) -> JobRecord | None:
        job = await self._policy(jobs.get_job, self.pool, self._job_uid)
        if job is not None:
            self._current_run = max(self._current_run, job.current_run)
        return job

    async def vector_space(self) -> vectors.Space | None:
        """The space of the job's current embedding model; created on first use (the operator normally
        has). The model is the job's, never the caller's, so no caller can make spaces (each one an index)."""
        job = await self.get_job()
        if job is None or not job.spec.embedding.enabled:
            return None
        if not await self._policy(vectors.available, self.pool):
            return None
        spec = job.spec.embedding
        assert spec.model_name is not None and spec.dimensions is not None
        return await self._policy(vectors.space_for, self.pool, spec.model_name, spec.dimensions)

    async def space(self, space_id: int) -> vectors.Space:
        """The vector space with this id, or ForeignId."""
        if (space := self._spaces.get(space_id)) is None:
            if (space := await self._policy(vectors.space_by_id, self.pool, space_id)) is None:
                raise ForeignId(f"no vector space {space_id}")
            self._spaces[space_id] = space
        return space

    # --- the queue ---------------------------------------------------------------------------------------

    async def lease(
        self, done: Sequence[queue.Task], *, worker: str, lease_seconds: float, limit: int
    ) -> tuple[set[int], list[queue.Task]]:
        acked, leased = await self._policy(
            queue.ack_and_lease,
            self.pool,
            self._job_uid,
            list(done),
            worker=worker,
            lease_seconds=lease_seconds,
            limit=limit,
        )
        if len(acked) < len(done):
            try:
                await self._check_lost(done, acked)
            except ForeignId:
                for task in leased:  # hand back what the refused call leased, so nothing waits for its lease
                    await self._policy(queue.release, self.pool, task, job_uid=self._job_uid)
                raise
        return acked, leased

    async def ack(self, tasks: Sequence[queue.Task]) -> set[int]:
        acked = await self._policy(queue.ack_many, self.pool, list(tasks), job_uid=self._job_uid)
        await self._check_lost(tasks, acked)
        return acked

    async def heartbeat(self, tasks: Sequence[queue.Task], *, lease_seconds: float) -> set[int]:
        kept = await self._policy(
            queue.heartbeat, self.pool, list(tasks), lease_seconds=lease_seconds, job_uid=self._job_uid
        )
        await self._check_lost(tasks, kept)
        return kept

    async def fail(self, task: queue.Task, error: str, *, backoff: float, permanent: bool) -> FailOutcome:
        outcome = await self._policy(
            queue.fail, self.pool, task, error, backoff=backoff, permanent=permanent, job_uid=self._job_uid
        )
        if outcome == "lost":
            await self._check_lost([task], set())
        return outcome

    async def release(self, task: queue.Task) -> bool:
        released = await self._policy(queue.release, self.pool, task, job_uid=self._job_uid)
        if not released:
            await self._check_lost([task], set())
        return released

    async def reap_expired(self) -> list[queue.Task]:
        return await self._policy(queue.reap_expired, self.pool, self._job_uid)

    async def is_drained(self) -> bool:
        return await self._policy(queue.is_drained, self.pool, self._job_uid)

    async def finish_run(self, run: int) -> bool:
        await self.check_run(run)
        job = await self.get_job()
        if job is None:
            return False
        return await self._policy(runs.finish_run, self.pool, job, run) is not None

    async def enqueue_discovered(
        self, run: int, batches: Sequence[queue.NewTask], *, max_attempts: int, total: int, done: bool
    ) -> None:
        await self.check_run(run)
        await self._policy(self._enqueue_discovered, run, list(batches), max_attempts, total, done)

    async def _enqueue_discovered(
        self, run: int, batches: list[queue.NewTask], max_attempts: int, total: int, done: bool
    ) -> None:
        # While the run is the job's current run, else its tasks would never be leased and the queue never drain.
        async with self.pool.acquire() as conn, conn.transaction():
            if not await queue.lock_run_if_current(conn, self._job_uid, run):
                raise RunSuperseded(f"run {run} was superseded by a newer run")
            await queue.enqueue(conn, self._job_uid, run, batches, max_attempts=max_attempts)
            await runs.set_discovered(conn, self._job_uid, run, total=total, done=done)
            if done:
                message = f"Discovered {total} documents"
                await jobs.record_event(conn, self._job_uid, run, "Normal", Reason.DISCOVERED, message)

    # --- documents ---------------------------------------------------------------------------------------

    async def known(self, uris: Sequence[str]) -> dict[str, KnownDocument]:
        return await self._policy(documents.known, self.pool, self._job_uid, list(uris))

    async def processed_in_run(self, run: int, uris: Sequence[str]) -> set[str]:
        await self.check_run(run)
        return await self._policy(documents.processed_in_run, self.pool, self._job_uid, run, list(uris))

    async def entry_hashes(self, archive_uri: str, fingerprint: str) -> dict[str, str]:
        return await self._policy(documents.entry_hashes, self.pool, self._job_uid, archive_uri, fingerprint)

    async def store_documents(
        self, run: int, docs: Sequence[tuple[DocumentRecord, Vectors]], *, space: vectors.Space | None
    ) -> Written:
        await self.check_run(run)
        return await self._policy(documents.store_documents, self.pool, self._job_uid, run, docs, space=space)

    async def record_outcomes(
        self,
        run: int,
        *,
        unchanged: Sequence[str] = (),
        unchanged_archives: Sequence[str] = (),
        versions: Mapping[str, str] | None = None,
        failures: Mapping[str, str] | None = None,
    ) -> None:
        await self.check_run(run)
        if unchanged:
            await self._policy(documents.mark_unchanged, self.pool, self._job_uid, run, list(unchanged))
        if versions:
            await self._policy(documents.refresh_versions, self.pool, self._job_uid, dict(versions))
        if unchanged_archives:
            await self._policy(
                documents.mark_unchanged_entries, self.pool, self._job_uid, run, list(unchanged_archives)
            )
        if failures:
            await self._policy(documents.record_failures, self.pool, self._job_uid, run, dict(failures))

    # --- re-embedding kept documents -----------------------------------------------------------------------

    async def stale_embeddings(
        self, space: vectors.Space | None, uris: Sequence[str], archive_uris: Sequence[str]
    ) -> list[tuple[int, str]]:
        space_id = space.id if space is not None else None
        return await self._policy(
            documents.stale_embeddings, self.pool, self._job_uid, space_id, list(uris), list(archive_uris)
        )

    async def drop_vectors(self, run: int, document_id: int) -> Outcome | None:
        await self.check_run(run)
        await self._check_rows(document_ids=[document_id])
        stored = await self._policy(vectors.stored_chunks, self.pool, document_id)
        return await self._policy(
            documents.reembed_document,
            self.pool,
            self._job_uid,
            run,
            document_id,
            None,
            [],
            expected_chunks=len(stored),
        )

    async def chunks_to_embed(self, document_id: int, space: vectors.Space) -> tuple[str, list[tuple[int, str]]]:
        await self._check_rows(document_ids=[document_id])
        await self._policy(documents.drop_old_input, self.pool, document_id)
        return await self._policy(vectors.chunks_lacking, self.pool, document_id, space)

    async def store_chunk_vectors(self, space: vectors.Space, chunk_ids: Sequence[int], vecs: Vectors) -> None:
        await self._check_rows(chunk_ids=chunk_ids)
        await self._policy(vectors.store_chunk_vectors, self.pool, self._job_uid, space, list(chunk_ids), vecs)

    async def finish_reembed(self, run: int, document_id: int, space: vectors.Space) -> Outcome | None:
        await self.check_run(run)
        await self._check_rows(document_ids=[document_id])
        return await self._policy(documents.finish_reembed, self.pool, run, document_id, space)
