"""What a worker does with each kind of task: discover lists the source, ingest indexes documents."""

import asyncio
import hashlib
import logging
from dataclasses import dataclass

from headrace import metrics
from headrace.store import documents, jobs, queue
from headrace.store.db import Pool
from headrace.store.documents import ChunkRecord, DocumentRecord
from headrace.store.jobs import JobRecord
from headrace.worker.chunker import chunk_sections
from headrace.worker.errors import DocumentError
from headrace.worker.extract import extract
from headrace.worker.sources import DocumentRef, Source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """What a task handler works with."""

    pool: Pool
    job: JobRecord
    source: Source


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
    spec = ctx.job.spec
    fingerprint = spec.content_fingerprint()
    refs = [DocumentRef.from_payload(d) for d in task.payload["documents"]]
    if task.attempts > 1:  # a redelivery: skip what an earlier attempt of this run already recorded
        done = await documents.processed_in_run(ctx.pool, ctx.job.uid, task.run, [r.uri for r in refs])
        refs = [r for r in refs if r.uri not in done]
    known = await documents.known(ctx.pool, ctx.job.uid, [r.uri for r in refs])
    unchanged: list[str] = []
    failures: dict[str, str] = {}
    for ref in refs:
        previous = known.get(ref.uri)
        current = previous is not None and previous.state == "ingested" and previous.fingerprint == fingerprint
        if current and ref.version is not None and previous.source_version == ref.version:  # type: ignore[union-attr]
            unchanged.append(ref.uri)
            continue
        try:
            data = await ctx.source.fetch(ref, max_bytes=spec.limits.max_document_bytes)
            content_hash = hashlib.sha256(data).hexdigest()
            if current and previous.content_hash == content_hash:  # type: ignore[union-attr]
                unchanged.append(ref.uri)
                continue
            record = await asyncio.to_thread(_process, ref, data, content_hash, fingerprint, ctx)
        except DocumentError as exc:
            failures[ref.uri] = str(exc)
            log.warning("Failed document", extra={"job": ctx.job.name, "uri": ref.uri, "reason": str(exc)})
            continue
        outcome = await documents.store_document(ctx.pool, ctx.job.uid, task.run, record)
        metrics.DOCUMENTS.labels(outcome).inc()
        metrics.DOCUMENT_BYTES.inc(record.bytes)
        metrics.CHUNKS.inc(len(record.chunks))
    await documents.mark_unchanged(ctx.pool, ctx.job.uid, task.run, unchanged)
    await documents.record_failures(ctx.pool, ctx.job.uid, task.run, failures)
    metrics.DOCUMENTS.labels("unchanged").inc(len(unchanged))
    metrics.DOCUMENTS.labels("failed").inc(len(failures))


def _process(ref: DocumentRef, data: bytes, content_hash: str, fingerprint: str, ctx: Context) -> DocumentRecord:
    """Extract and chunk one document (CPU-bound; runs in a thread)."""
    try:
        extracted = extract(data, name=ref.uri)
        chunks = chunk_sections(extracted.sections, ctx.job.spec.chunking)
    except DocumentError:
        raise
    except Exception as exc:  # an extractor bug on odd input must not take the batch down with it
        raise DocumentError(f"extraction failed: {type(exc).__name__}: {exc}") from exc
    if not chunks:
        raise DocumentError("no text to index after extraction")
    return DocumentRecord(
        uri=ref.uri,
        title=extracted.title,
        content_hash=content_hash,
        fingerprint=fingerprint,
        format=extracted.format,
        bytes=len(data),
        source_version=ref.version,
        chunks=[ChunkRecord(c.ordinal, c.text, c.page) for c in chunks],
    )


HANDLERS = {"discover": discover, "ingest": ingest}
