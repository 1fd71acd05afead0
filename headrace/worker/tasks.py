"""What a worker does with each kind of task: discover lists the source, ingest indexes documents."""

import contextlib
import logging
import time
from dataclasses import dataclass, field

from headrace import metrics
from headrace.embedding import Embedder, EmbeddingError, Vector
from headrace.store import documents, jobs, queue, vectors
from headrace.store.db import Pool
from headrace.store.documents import ChunkRecord, DocumentRecord, KnownDocument
from headrace.store.jobs import JobRecord
from headrace.worker.errors import DocumentError
from headrace.worker.extract import ARCHIVE_FORMATS, looks_like_archive
from headrace.worker.metadata import Metadata, document_metadata
from headrace.worker.pipeline import Message, Request, content_hash
from headrace.worker.sandbox import Sandbox
from headrace.worker.sources import DocumentRef, Source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """What a task handler works with."""

    pool: Pool
    job: JobRecord
    source: Source
    extractor: Sandbox = field(default_factory=Sandbox)
    embedder: Embedder | None = None
    """The job's embedding model; None when embeddings are off or pgvector is missing."""
    space: vectors.Space | None = None
    """The vector space `embedder` writes to."""

    @property
    def wanted_space(self) -> int | None:
        return self.space.id if self.space is not None else None

    @property
    def embeddings_settled(self) -> bool:
        """Whether documents can be brought to the job's embedding setting: false when the job asks
        for embeddings that this database cannot store, so stored documents are left as they are."""
        return self.space is not None or not self.job.spec.embedding.enabled


async def embed_chunks(ctx: Context, texts: list[str]) -> list[Vector]:
    """The embedding stage: one vector per chunk text, or EmbeddingError. Bounded on its own so the
    ingest path can batch or pipeline it without touching extraction or storage."""
    if ctx.embedder is None or not texts:
        return []
    started = time.perf_counter()
    embedded = await ctx.embedder.embed(texts)
    metrics.EMBED_SECONDS.observe(time.perf_counter() - started)
    metrics.EMBEDDED_CHUNKS.inc(len(embedded))
    return embedded


async def discover(ctx: Context, task: queue.Task) -> None:
    """List the source page by page and enqueue ingest tasks of `workers.batchSize` documents each.

    Batches are numbered in listing order and enqueued under that number, so a rerun of a
    discover task that died half-way adds only what is missing.
    """
    batch_size = ctx.job.spec.workers.batch_size
    total, number, pending = 0, 0, []
    async for page in ctx.source.pages():
        pending.extend(page)
        total += len(page)
        full = len(pending) - len(pending) % batch_size
        new_tasks = [
            _ingest_task(number + i, tuple(pending[start : start + batch_size]))
            for i, start in enumerate(range(0, full, batch_size))
        ]
        number += len(new_tasks)
        pending = pending[full:]
        async with ctx.pool.acquire() as conn, conn.transaction():
            await queue.enqueue(conn, ctx.job.uid, task.run, new_tasks, max_attempts=task.max_attempts)
            await jobs.set_discovered(conn, ctx.job.uid, task.run, total=total, done=False)
    async with ctx.pool.acquire() as conn, conn.transaction():
        tail = [_ingest_task(number, tuple(pending))] if pending else []
        await queue.enqueue(conn, ctx.job.uid, task.run, tail, max_attempts=task.max_attempts)
        await jobs.set_discovered(conn, ctx.job.uid, task.run, total=total, done=True)
        await jobs.record_event(conn, ctx.job.uid, task.run, "Normal", "Discovered", f"Discovered {total} documents")
    log.info("Discovered documents", extra={"job": ctx.job.name, "run": task.run, "documents": total})


def _ingest_task(number: int, refs: tuple[DocumentRef, ...]) -> queue.NewTask:
    return queue.NewTask("ingest", f"ingest:{number}", {"documents": [r.to_payload() for r in refs]})


def task_uris(task: queue.Task) -> list[str]:
    """The document URIs an ingest task covers."""
    return [d["uri"] for d in task.payload.get("documents", [])]


async def ingest(ctx: Context, task: queue.Task) -> None:
    """Fetch, extract, chunk and store each document of the task. A bad document is recorded as
    failed and the rest go on; a database or source outage raises, so the task is retried."""
    refs = [DocumentRef.from_payload(d) for d in task.payload["documents"]]
    if task.attempts > 1:  # a redelivery: skip what an earlier attempt of this run already recorded
        done = await documents.processed_in_run(ctx.pool, ctx.job.uid, task.run, [r.uri for r in refs])
        refs = [r for r in refs if r.uri not in done]
    known = await documents.known(ctx.pool, ctx.job.uid, [r.uri for r in refs])
    batch = _Batch()
    for ref in refs:
        await _ingest_one(ctx, task.run, ref, known.get(ref.uri), batch)
    await _reembed_kept(ctx, task.run, batch)
    await documents.mark_unchanged(ctx.pool, ctx.job.uid, task.run, batch.unchanged)
    await documents.refresh_versions(ctx.pool, ctx.job.uid, batch.versions)
    await documents.mark_unchanged_entries(ctx.pool, ctx.job.uid, task.run, batch.unchanged_archives)
    await documents.record_failures(ctx.pool, ctx.job.uid, task.run, batch.failures)
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
        self.failures[uri] = reason
        log.warning("Failed document", extra={"job": job.name, "uri": uri, "reason": reason})

    def keep(self, uri: str, previous: KnownDocument, version: str | None = None) -> None:
        self.unchanged.append(uri)
        if previous.format in ARCHIVE_FORMATS:
            self.unchanged_archives.append(uri)
        if version is not None and version != previous.source_version:
            self.versions[uri] = version


async def _reembed_kept(ctx: Context, run: int, batch: _Batch) -> None:
    """Bring documents kept as unchanged (and the entries of kept archives) to the job's embedding
    setting from their stored chunks: a model change re-embeds without fetching or extracting."""
    if not ctx.embeddings_settled or not (batch.unchanged or batch.unchanged_archives):
        return
    stale = await documents.stale_embeddings(
        ctx.pool, ctx.job.uid, ctx.wanted_space, batch.unchanged, batch.unchanged_archives
    )
    for document_id, uri in stale:
        stored = await vectors.stored_chunks(ctx.pool, document_id)
        try:
            embedded = await embed_chunks(ctx, stored)
        except EmbeddingError as exc:
            batch.fail(ctx.job, uri, f"embedding failed: {exc}")
            continue
        outcome = await documents.reembed_document(
            ctx.pool, ctx.job.uid, run, document_id, ctx.space, embedded, expected_chunks=len(stored)
        )
        if outcome is not None:
            log.info("Re-embedded document", extra={"job": ctx.job.name, "uri": uri, "chunks": len(stored)})


async def _ingest_one(ctx: Context, run: int, ref: DocumentRef, previous: KnownDocument | None, batch: _Batch) -> None:
    """One listed object: skipped when its version or bytes are unchanged, else turned into 1..n
    documents (an archive yields its entries and a record of itself)."""
    spec = ctx.job.spec
    fingerprint = spec.content_fingerprint()
    current = previous if previous and previous.state == "ingested" and previous.fingerprint == fingerprint else None
    if current and ref.version is not None and current.source_version == ref.version:
        batch.keep(ref.uri, current)
        return
    try:
        fetched = await ctx.source.fetch(
            ref, max_bytes=spec.limits.max_document_bytes, known_version=current.source_version if current else None
        )
    except DocumentError as exc:
        batch.fail(ctx.job, ref.uri, str(exc))
        return
    if fetched is None:  # the source says: not modified since current.source_version
        assert current is not None
        batch.keep(ref.uri, current)
        return
    digest = content_hash(fetched.data)
    version = fetched.version or ref.version
    if current and current.content_hash == digest:
        batch.keep(ref.uri, current, version)
        return
    request = Request(
        uri=ref.uri,
        limits=spec.limits,
        chunking=spec.chunking,
        media_type=fetched.media_type,
        known=await documents.entry_hashes(ctx.pool, ctx.job.uid, ref.uri, fingerprint)
        if looks_like_archive(fetched.data)
        else {},
    )
    messages = ctx.extractor.process(request, fetched.data, silence_seconds=spec.limits.extraction_timeout_seconds)
    async with contextlib.aclosing(messages):
        async for message in messages:
            await _record(ctx, run, message, version, batch, fetched.metadata if message["uri"] == ref.uri else {})


async def _record(
    ctx: Context, run: int, message: Message, version: str | None, batch: _Batch, source_metadata: Metadata
) -> None:
    """Act on one message of the extraction pipeline: store a document, or note a skip or failure."""
    kind, uri = message["type"], message["uri"]
    if kind == "failed":
        batch.fail(ctx.job, uri, message["reason"])
    elif kind == "unchanged":
        batch.unchanged.append(uri)
    elif kind in ("document", "container"):
        record = DocumentRecord(
            uri=uri,
            title=message.get("title", ""),
            content_hash=message["hash"],
            fingerprint=ctx.job.spec.content_fingerprint(),
            format=message["format"],
            bytes=message["bytes"],
            source_version=version,
            chunks=[ChunkRecord(ordinal, text, page) for ordinal, text, page in message.get("chunks", [])],
            metadata={"entries": message["entries"]}
            if kind == "container"
            else document_metadata(
                source=source_metadata,
                extracted=message.get("metadata", {}),
                format=message["format"],
                size=message["bytes"],
                title=message.get("title", ""),
                detected_language=message.get("language"),
            ),
        )
        try:
            embedded = await embed_chunks(ctx, [c.content for c in record.chunks])
        except EmbeddingError as exc:
            batch.fail(ctx.job, uri, f"embedding failed: {exc}")
            return
        outcome = await documents.store_document(
            ctx.pool, ctx.job.uid, run, record, space=ctx.space if embedded else None, embeddings=embedded
        )
        metrics.DOCUMENTS.labels(outcome).inc()
        metrics.DOCUMENT_BYTES.inc(record.bytes)
        metrics.CHUNKS.inc(len(record.chunks))


HANDLERS = {"discover": discover, "ingest": ingest}
