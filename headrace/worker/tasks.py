"""What a worker does with each kind of task: discover lists the source, ingest indexes documents."""

import asyncio
import contextlib
import hashlib
import itertools
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from headrace import metrics
from headrace.embedding import Embedder, EmbeddingError, Vector, embedding_input
from headrace.redaction import redact
from headrace.store import documents, queue, vectors
from headrace.store.documents import ChunkRecord, DocumentRecord, KnownDocument
from headrace.store.jobs import JobRecord
from headrace.worker.conversion import Message, Request, content_hash
from headrace.worker.errors import DocumentError
from headrace.worker.extract import ARCHIVE_FORMATS, looks_like_archive
from headrace.worker.metadata import Metadata, document_metadata
from headrace.worker.sandbox import Sandbox
from headrace.worker.sources import DocumentRef, Source
from headrace.worker.store import RunSuperseded, WorkerStore

__all__ = ["HANDLERS", "Context", "RunSuperseded", "discover", "ingest", "task_uris"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """What a task handler works with."""

    store: WorkerStore
    job: JobRecord
    source: Source
    extractor: Sandbox = field(default_factory=Sandbox)
    embedder: Embedder | None = None
    """The job's embedding model; None when embeddings are off or pgvector is missing."""
    space: vectors.Space | None = None
    """The vector space `embedder` writes to."""
    raw: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(RAW_OBJECTS))
    """The worker's budget of raw objects (RAW_OBJECTS), shared by the ingest tasks it works on at once."""

    @property
    def wanted_space(self) -> int | None:
        return self.space.id if self.space is not None else None

    @property
    def embeddings_settled(self) -> bool:
        """Whether documents can be brought to the job's embedding setting: false when the job asks
        for embeddings that this database cannot store, so stored documents are left as they are."""
        return self.space is not None or not self.job.spec.embedding.enabled


async def embed_chunks(ctx: Context, title: str, texts: list[str]) -> list[Vector]:
    """The embedding stage: one vector per chunk text of the document titled `title` (see
    `embedding_input`), or EmbeddingError. Bounded on its own so the ingest path can batch or
    pipeline it without touching extraction or storage."""
    if ctx.embedder is None or not texts:
        return []
    started = time.perf_counter()
    embedded = await ctx.embedder.embed([embedding_input(title, text) for text in texts])
    metrics.EMBED_SECONDS.observe(time.perf_counter() - started)
    metrics.EMBEDDED_CHUNKS.inc(len(embedded))
    return embedded


async def discover(ctx: Context, task: queue.Task) -> None:
    """List the source page by page and enqueue ingest tasks of `workers.batchSize` documents each.

    A batch is keyed by the documents it carries, not by its position in the listing: a rerun of a
    discover task that died half-way adds what is missing even when the source changed in between
    (keyed by position, a shifted listing would find its batches "already enqueued" and never ingest
    the documents that moved into them). A document in two batches of one run is ingested once: the
    second batch finds it already processed by this run.
    """
    batch_size = ctx.job.spec.workers.batch_size
    total, pending = 0, []
    async for page in ctx.source.pages():
        pending.extend(page)
        total += len(page)
        full = len(pending) - len(pending) % batch_size
        new_tasks = [_ingest_task(tuple(pending[start : start + batch_size])) for start in range(0, full, batch_size)]
        pending = pending[full:]
        await _enqueue_batches(ctx, task, new_tasks, total=total, done=False)
    tail = [_ingest_task(tuple(pending))] if pending else []
    await _enqueue_batches(ctx, task, tail, total=total, done=True)
    log.info("Discovered documents", extra={"job": ctx.job.name, "run": task.run, "documents": total})


async def _enqueue_batches(
    ctx: Context, task: queue.Task, batches: list[queue.NewTask], *, total: int, done: bool
) -> None:
    """Enqueue a page's batches and the count discovered so far, in one transaction, while the task's run
    is still the job's current run (else its tasks would never be leased and the queue never drain):
    RunSuperseded when it is not."""
    await ctx.store.enqueue_discovered(task.run, batches, max_attempts=task.max_attempts, total=total, done=done)


def _ingest_task(refs: tuple[DocumentRef, ...]) -> queue.NewTask:
    uris = hashlib.sha256("\n".join(ref.uri for ref in refs).encode()).hexdigest()
    return queue.NewTask("ingest", f"ingest:{uris}", {"documents": [r.to_payload() for r in refs]})


def task_uris(task: queue.Task) -> list[str]:
    """The document URIs an ingest task covers."""
    return [d["uri"] for d in task.payload.get("documents", [])]


STAGE_BUFFER = 2
"""Items waiting between two stages of an ingest task: fetched objects before the sandbox, extracted
documents before the embedding model, embedded documents before the database. Small and fixed, so the
slowest stage sets the pace and a stalled one (a hung extraction, a slow endpoint, a slow database) holds
the others still instead of letting memory grow."""

RAW_OBJECTS: int = STAGE_BUFFER + 2
"""Raw objects (fetched, not yet through the sandbox) a worker holds at once, across the tasks it works
on: what one task's stages hold, one being read, STAGE_BUFFER waiting and one in the sandbox. Shared, so
that a worker working on two tasks at once holds no more fetched bytes than one task did: at most
RAW_OBJECTS × `limits.maxDocumentBytes`."""

STORE_GROUP_CHUNKS = 64
"""Chunks a group of documents gathers before it goes to the database while another group is being
written: a transaction's own cost (its round trips and commit) is shared by at least this many chunks,
about four documents of the Python docs."""

STORE_GROUP_DOCUMENTS = 32
STORE_GROUP_CHUNKS_MAX = 2000
"""A full group goes to the database as soon as it can, and the group stage takes no more until it has:
at most one group being written, one waiting and one filling."""


async def ingest(ctx: Context, task: queue.Task) -> None:
    """Fetch, extract, chunk, embed and store each document of the task, the stages overlapping: the
    sandbox extracts the next document while the model embeds one and Postgres stores a group of the
    ones before, one transaction per group, and the source is read meanwhile. A bad document is
    recorded as failed and the rest go on; a source outage raises, so the task is retried; a database
    outage is ridden out (see `store.outage`)."""
    refs = [DocumentRef.from_payload(d) for d in task.payload["documents"]]
    # Skip what this run already recorded: an earlier attempt of this task, or another batch of the same
    # document after a discovery that was retried while the source changed.
    done = await ctx.store.processed_in_run(task.run, [r.uri for r in refs])
    refs = [r for r in refs if r.uri not in done]
    known = await ctx.store.known([r.uri for r in refs])
    batch = _Batch()
    share = _RawShare(ctx.raw)
    fetched: asyncio.Queue[_Fetched | None] = asyncio.Queue(STAGE_BUFFER)
    extracted: asyncio.Queue[_Extracted | None] = asyncio.Queue(STAGE_BUFFER)
    embedded: asyncio.Queue[_Embedded | None] = asyncio.Queue(STAGE_BUFFER)
    grouped: asyncio.Queue[list[_Embedded] | None] = asyncio.Queue(1)
    try:
        await _run_stages(
            _read(ctx, refs, known, batch, share, fetched),
            _extract(ctx, share, fetched, extracted),
            _embed(ctx, extracted, embedded, batch),
            _group(embedded, grouped),
            _store(ctx, task.run, grouped, batch),
        )
    finally:
        share.give_back()  # what a failed or stopped task still held: the objects it read are dropped
    await _reembed_kept(ctx, task.run, batch)
    await ctx.store.record_outcomes(
        task.run,
        unchanged=batch.unchanged,
        unchanged_archives=batch.unchanged_archives,
        versions=batch.versions,
        failures=batch.failures,
    )
    metrics.DOCUMENTS.labels("unchanged").inc(len(batch.unchanged))
    metrics.DOCUMENTS.labels("failed").inc(len(batch.failures))


@dataclass
class _Batch:
    """What an ingest task has decided but not yet written."""

    unchanged: list[str] = field(default_factory=list)
    unchanged_archives: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def fail(self, job: JobRecord, uri: str, reason: str) -> None:
        reason = redact(reason)
        self.failures[uri] = reason
        log.warning("Failed document", extra={"job": job.name, "uri": uri, "reason": reason})

    def keep(self, uri: str, previous: KnownDocument, version: str | None = None) -> None:
        self.unchanged.append(uri)
        if previous.format in ARCHIVE_FORMATS:
            self.unchanged_archives.append(uri)
        if version is not None and version != previous.source_version:
            self.versions[uri] = version


class _RawShare:
    """One ingest task's part of the worker's raw-object budget (`Context.raw`): an object's place is taken
    before it is read and given back once the sandbox has read it, or when it needed no extracting."""

    def __init__(self, budget: asyncio.Semaphore) -> None:
        self.budget = budget
        self.held = 0

    async def take(self) -> None:
        await self.budget.acquire()
        self.held += 1

    def give(self) -> None:
        self.held -= 1
        self.budget.release()

    def give_back(self) -> None:
        """Give back every place still held."""
        while self.held:
            self.give()


@dataclass(frozen=True)
class _Fetched:
    """An object read from the source that needs extracting, with what the source said about it."""

    request: Request
    data: bytes
    version: str | None
    metadata: Metadata


@dataclass(frozen=True)
class _Extracted:
    """One message of the sandbox, with the source's version and metadata of the object it came from
    (the metadata belongs to the object itself, not to an archive's entries)."""

    message: Message
    version: str | None
    metadata: Metadata


@dataclass(frozen=True)
class _Embedded:
    """A document ready for the database: its record and one vector per chunk (none when embeddings are off)."""

    record: DocumentRecord
    embeddings: list[Vector]


async def _run_stages(*stages: Coroutine[Any, Any, None]) -> None:
    """Run the stages together until all are done; the first error cancels the others and is raised as is."""
    running = [asyncio.create_task(stage) for stage in stages]
    try:
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_EXCEPTION)
        for stage in done:
            if (error := stage.exception()) is not None:
                raise error
    finally:
        for stage in running:
            stage.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def _read(
    ctx: Context,
    refs: list[DocumentRef],
    known: dict[str, KnownDocument],
    batch: _Batch,
    share: _RawShare,
    out: "asyncio.Queue[_Fetched | None]",
) -> None:
    """Stage 1: fetch each listed object that may have changed, for the sandbox, once the worker's
    raw-object budget has room for it."""
    for ref in refs:
        await share.take()
        if (item := await _fetch(ctx, ref, known.get(ref.uri), batch)) is None:
            share.give()
            continue
        await out.put(item)
    await out.put(None)


async def _extract(
    ctx: Context, share: _RawShare, inbox: "asyncio.Queue[_Fetched | None]", out: "asyncio.Queue[_Extracted | None]"
) -> None:
    """Stage 2: turn each fetched object into messages in the sandbox, for the embedding model."""
    timeout = ctx.job.spec.limits.extraction_timeout_seconds
    while (item := await inbox.get()) is not None:
        messages = ctx.extractor.process(item.request, item.data, silence_seconds=timeout)
        async with contextlib.aclosing(messages):
            async for message in messages:
                own = item.metadata if message["uri"] == item.request.uri else {}
                await out.put(_Extracted(message, item.version, own))
        del item, messages  # the object's bytes go before its place in the budget does
        share.give()
    await out.put(None)


async def _embed(
    ctx: Context, inbox: "asyncio.Queue[_Extracted | None]", out: "asyncio.Queue[_Embedded | None]", batch: _Batch
) -> None:
    """Stage 3: note skips and failures, and embed each document's chunks, for the database. A document
    the model cannot embed is recorded as failed and the rest go on."""
    while (item := await inbox.get()) is not None:
        if (record := _document(ctx, item, batch)) is None:
            continue
        if "seconds" in item.message:  # timed in the sandbox, observed here: the child's metrics die with it
            metrics.EXTRACTION_SECONDS.labels(record.format).observe(item.message["seconds"])
        try:
            embedded = await embed_chunks(ctx, record.title, [c.content for c in record.chunks])
        except EmbeddingError as exc:
            batch.fail(ctx.job, record.uri, f"embedding failed: {exc}")
            continue
        await out.put(_Embedded(record, embedded))
    await out.put(None)


async def _group(inbox: "asyncio.Queue[_Embedded | None]", out: "asyncio.Queue[list[_Embedded] | None]") -> None:
    """Stage 4: gather embedded documents into groups for the database, one transaction each. A group is
    handed on once it holds `STORE_GROUP_CHUNKS` chunks and no other group is waiting (so while Postgres
    writes one group, the next one grows), or when it is full: `STORE_GROUP_DOCUMENTS` documents or
    `STORE_GROUP_CHUNKS_MAX` chunks, which bounds the memory of the groups waiting."""
    group: list[_Embedded] = []
    chunks = 0
    while (item := await inbox.get()) is not None:
        group.append(item)
        chunks += len(item.record.chunks)
        if len(group) >= STORE_GROUP_DOCUMENTS or chunks >= STORE_GROUP_CHUNKS_MAX:
            await out.put(group)  # waits while another group waits: the bound
        elif chunks >= STORE_GROUP_CHUNKS and out.empty():
            out.put_nowait(group)
        else:
            continue
        group, chunks = [], 0
    if group:
        await out.put(group)
    await out.put(None)


async def _store(ctx: Context, run: int, inbox: "asyncio.Queue[list[_Embedded] | None]", batch: _Batch) -> None:
    """Stage 5: store each group of documents with their vectors in one transaction (their chunks inserted
    from arrays, `store_documents`). A document Postgres refuses is recorded as failed and its group-mates
    are stored."""
    while (group := await inbox.get()) is not None:
        written = await ctx.store.store_documents(
            run, [(item.record, item.embeddings) for item in group], space=ctx.space
        )
        for uri, reason in written.refused.items():
            batch.fail(ctx.job, uri, reason)
        for item in group:
            if (outcome := written.outcomes.get(item.record.uri)) is None:
                continue  # refused, or a newer run already recorded it
            metrics.DOCUMENTS.labels(outcome).inc()
            metrics.DOCUMENT_BYTES.inc(item.record.bytes)
            metrics.CHUNKS.inc(len(item.record.chunks))


REEMBED_SLICE = 64
"""Chunks re-embedded and stored per transaction (one request at an endpoint's default batchSize)."""


async def _reembed_kept(ctx: Context, run: int, batch: _Batch) -> None:
    """Bring documents kept as unchanged (and the entries of kept archives) to the job's embedding
    setting from their stored chunks: a model change re-embeds without fetching or extracting.

    Each store call rides out an outage by itself and is idempotent, and a document is stored slice by
    slice: a retried task finds the documents finished before no longer stale, and the one under way
    with only its chunks still lacking a vector, so an outage costs at most one slice of embedding work,
    not the document's."""
    if not ctx.embeddings_settled or not (batch.unchanged or batch.unchanged_archives):
        return
    stale = await ctx.store.stale_embeddings(ctx.space, batch.unchanged, batch.unchanged_archives)
    for document_id, uri in stale:
        try:
            outcome = await _reembed(ctx, run, document_id)
        except EmbeddingError as exc:
            batch.fail(ctx.job, uri, f"embedding failed: {exc}")
            continue
        if outcome is not None:
            log.info("Re-embedded document", extra={"job": ctx.job.name, "uri": uri})


async def _reembed(ctx: Context, run: int, document_id: int) -> documents.Outcome | None:
    """One kept document brought to the job's space, REEMBED_SLICE chunks per transaction (or its vectors
    dropped when the job wants none). Until its last slice is stored it keeps its former space, so it
    stays stale and a retry resumes it; semantic search meanwhile finds the chunks already embedded.
    A document an earlier version embedded from another input (the chunk text alone) first loses its
    vectors, and then is brought to the space the same way."""
    if ctx.space is None:
        return await ctx.store.drop_vectors(run, document_id)
    title, lacking = await ctx.store.chunks_to_embed(document_id, ctx.space)
    for start in range(0, len(lacking), REEMBED_SLICE):
        part = lacking[start : start + REEMBED_SLICE]
        embedded = await embed_chunks(ctx, title, [text for _, text in part])
        await ctx.store.store_chunk_vectors(ctx.space, [chunk for chunk, _ in part], embedded)
    return await ctx.store.finish_reembed(run, document_id, ctx.space)


async def _fetch(ctx: Context, ref: DocumentRef, previous: KnownDocument | None, batch: _Batch) -> _Fetched | None:
    """One listed object: None when its version or bytes are unchanged (or it cannot be fetched), else
    what the sandbox turns into 1..n documents (an archive yields its entries and a record of itself)."""
    if too_long := documents.uri_too_long(ref.uri):
        batch.fail(ctx.job, ref.uri, too_long)
        return None
    spec = ctx.job.spec
    fingerprint = spec.content_fingerprint()
    current = previous if previous and previous.state == "ingested" and previous.fingerprint == fingerprint else None
    if current and ref.version is not None and current.source_version == ref.version:
        batch.keep(ref.uri, current)
        return None
    try:
        fetched = await ctx.source.fetch(
            ref, max_bytes=spec.limits.max_document_bytes, known_version=current.source_version if current else None
        )
    except DocumentError as exc:
        batch.fail(ctx.job, ref.uri, str(exc))
        return None
    if fetched is None:  # the source says: not modified since current.source_version
        assert current is not None
        batch.keep(ref.uri, current)
        return None
    digest = content_hash(fetched.data)
    version = fetched.version or ref.version
    if current and current.content_hash == digest:
        batch.keep(ref.uri, current, version)
        return None
    request = Request(
        uri=ref.uri,
        limits=spec.limits,
        chunking=spec.chunking,
        media_type=fetched.media_type,
        known=await ctx.store.entry_hashes(ref.uri, fingerprint) if looks_like_archive(fetched.data) else {},
    )
    return _Fetched(request, fetched.data, version, fetched.metadata)


def _document(ctx: Context, item: _Extracted, batch: _Batch) -> DocumentRecord | None:
    """The record of a document or container message; a skip or failure is noted in `batch` instead."""
    message = item.message
    kind, uri = message["type"], message["uri"]
    if kind in ("document", "container") and (too_long := documents.uri_too_long(uri)):
        batch.fail(ctx.job, uri, too_long)
        return None
    if kind == "failed":
        batch.fail(ctx.job, uri, message["reason"])
        return None
    if kind == "unchanged":
        batch.unchanged.append(uri)
        return None
    if kind not in ("document", "container"):
        return None
    return DocumentRecord(
        uri=uri,
        title=message.get("title", ""),
        content_hash=message["hash"],
        fingerprint=ctx.job.spec.content_fingerprint(),
        format=message["format"],
        bytes=message["bytes"],
        source_version=item.version,
        chunks=[
            ChunkRecord(ordinal, text, page, path)
            for (ordinal, text, page), path in zip(
                message.get("chunks", []), message.get("headingPaths") or itertools.repeat(None), strict=False
            )
        ],
        metadata={"entries": message["entries"]}
        if kind == "container"
        else document_metadata(
            source=item.metadata,
            extracted=message.get("metadata", {}),
            format=message["format"],
            size=message["bytes"],
            title=message.get("title", ""),
            detected_language=message.get("language"),
        ),
    )


HANDLERS = {"discover": discover, "ingest": ingest}
