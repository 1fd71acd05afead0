"""What a worker does with each kind of task: discover lists the source, ingest indexes documents."""

import contextlib
import hashlib
import logging
from dataclasses import dataclass, field

from headrace import metrics
from headrace.model.events import Reason
from headrace.redaction import redact
from headrace.store import documents, jobs, queue
from headrace.store.db import Pool
from headrace.store.documents import ChunkRecord, DocumentRecord, KnownDocument
from headrace.store.jobs import JobRecord
from headrace.store.outage import ride_out
from headrace.worker.errors import DocumentError
from headrace.worker.extract import ARCHIVE_FORMATS, looks_like_archive
from headrace.worker.pipeline import Message, Request, content_hash
from headrace.worker.sandbox import Sandbox
from headrace.worker.sources import DocumentRef, Source

log = logging.getLogger(__name__)


class RunSuperseded(Exception):
    """The task's run is no longer the job's current run: its work is the newer run's to do."""


@dataclass(frozen=True)
class Context:
    """What a task handler works with."""

    pool: Pool
    job: JobRecord
    source: Source
    extractor: Sandbox = field(default_factory=Sandbox)


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
        await ride_out(_enqueue_batches, ctx, task, new_tasks, total=total, done=False)
    tail = [_ingest_task(tuple(pending))] if pending else []
    await ride_out(_enqueue_batches, ctx, task, tail, total=total, done=True)
    log.info("Discovered documents", extra={"job": ctx.job.name, "run": task.run, "documents": total})


async def _enqueue_batches(
    ctx: Context, task: queue.Task, batches: list[queue.NewTask], *, total: int, done: bool
) -> None:
    """Enqueue a page's batches and the count discovered so far, in one transaction, while the task's run
    is still the job's current run (else its tasks would never be leased and the queue never drain)."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        if not await queue.lock_run_if_current(conn, ctx.job.uid, task.run):
            raise RunSuperseded(f"run {task.run} was superseded by a newer run")
        await queue.enqueue(conn, ctx.job.uid, task.run, batches, max_attempts=task.max_attempts)
        await jobs.set_discovered(conn, ctx.job.uid, task.run, total=total, done=done)
        if done:
            message = f"Discovered {total} documents"
            await jobs.record_event(conn, ctx.job.uid, task.run, "Normal", Reason.DISCOVERED, message)


def _ingest_task(refs: tuple[DocumentRef, ...]) -> queue.NewTask:
    uris = hashlib.sha256("\n".join(ref.uri for ref in refs).encode()).hexdigest()
    return queue.NewTask("ingest", f"ingest:{uris}", {"documents": [r.to_payload() for r in refs]})


def task_uris(task: queue.Task) -> list[str]:
    """The document URIs an ingest task covers."""
    return [d["uri"] for d in task.payload.get("documents", [])]


async def ingest(ctx: Context, task: queue.Task) -> None:
    """Fetch, extract, chunk and store each document of the task. A bad document is recorded as
    failed and the rest go on; a source outage raises, so the task is retried; a database outage is
    ridden out (see `store.outage`)."""
    refs = [DocumentRef.from_payload(d) for d in task.payload["documents"]]
    # Skip what this run already recorded: an earlier attempt of this task, or another batch of the same
    # document after a discovery that was retried while the source changed.
    done = await ride_out(documents.processed_in_run, ctx.pool, ctx.job.uid, task.run, [r.uri for r in refs])
    refs = [r for r in refs if r.uri not in done]
    known = await ride_out(documents.known, ctx.pool, ctx.job.uid, [r.uri for r in refs])
    batch = _Batch()
    for ref in refs:
        await _ingest_one(ctx, task.run, ref, known.get(ref.uri), batch)
    await ride_out(documents.mark_unchanged, ctx.pool, ctx.job.uid, task.run, batch.unchanged)
    await ride_out(documents.refresh_versions, ctx.pool, ctx.job.uid, batch.versions)
    await ride_out(documents.mark_unchanged_entries, ctx.pool, ctx.job.uid, task.run, batch.unchanged_archives)
    await ride_out(documents.record_failures, ctx.pool, ctx.job.uid, task.run, batch.failures)
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


async def _ingest_one(ctx: Context, run: int, ref: DocumentRef, previous: KnownDocument | None, batch: _Batch) -> None:
    """One listed object: skipped when its version or bytes are unchanged, else turned into 1..n
    documents (an archive yields its entries and a record of itself)."""
    if too_long := documents.uri_too_long(ref.uri):
        batch.fail(ctx.job, ref.uri, too_long)
        return
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
        known=await ride_out(documents.entry_hashes, ctx.pool, ctx.job.uid, ref.uri, fingerprint)
        if looks_like_archive(fetched.data)
        else {},
    )
    messages = ctx.extractor.process(request, fetched.data, silence_seconds=spec.limits.extraction_timeout_seconds)
    async with contextlib.aclosing(messages):
        async for message in messages:
            await _record(ctx, run, message, version, batch)


async def _record(ctx: Context, run: int, message: Message, version: str | None, batch: _Batch) -> None:
    """Act on one message of the extraction pipeline: store a document, or note a skip or failure."""
    kind, uri = message["type"], message["uri"]
    if kind in ("document", "container") and (too_long := documents.uri_too_long(uri)):
        batch.fail(ctx.job, uri, too_long)
    elif kind == "failed":
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
            metadata={"entries": message["entries"]} if kind == "container" else {},
        )
        outcome = await ride_out(documents.store_document, ctx.pool, ctx.job.uid, run, record)
        if "seconds" in message:
            metrics.EXTRACTION_SECONDS.labels(record.format).observe(message["seconds"])
        if outcome is None:
            return  # a newer run already recorded it
        metrics.DOCUMENTS.labels(outcome).inc()
        metrics.DOCUMENT_BYTES.inc(record.bytes)
        metrics.CHUNKS.inc(len(record.chunks))


HANDLERS = {"discover": discover, "ingest": ingest}
