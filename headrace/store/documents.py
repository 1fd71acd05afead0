"""Documents and their chunks: idempotent writes keyed by (job, source URI).

A document's `run` is the newest run that recorded it, never an older one: a write from a superseded
run (a worker that went on after a new run started) changes nothing of a document a newer run already
recorded. `sync: mirror` deletes the documents whose `run` is older than the run that just finished.
"""

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from headrace.redaction import redact
from headrace.store import vectors
from headrace.store.db import Connection, Pool

Outcome = Literal["added", "updated", "unchanged", "failed"]


@dataclass(frozen=True)
class KnownDocument:
    """What the index already holds for a source URI."""

    uri: str
    state: str
    content_hash: str | None
    fingerprint: str | None
    source_version: str | None
    run: int
    format: str | None = None
    embedding_space: int | None = None


@dataclass(frozen=True)
class ChunkRecord:
    ordinal: int
    content: str
    page: int | None = None


@dataclass(frozen=True)
class DocumentRecord:
    """A successfully processed document, ready to be written with its chunks."""

    uri: str
    title: str
    content_hash: str
    fingerprint: str
    format: str
    bytes: int
    chunks: list[ChunkRecord]
    source_version: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


async def known(conn: Pool | Connection, job_uid: uuid.UUID, uris: list[str]) -> dict[str, KnownDocument]:
    """The index's record of each of these URIs that it has."""
    rows = await conn.fetch(
        "SELECT uri, state, content_hash, fingerprint, source_version, run, format, embedding_space "
        "FROM headrace.documents "
        "WHERE job_uid = $1 AND uri = ANY($2::text[])",
        job_uid,
        uris,
    )
    return {row["uri"]: KnownDocument(**dict(row)) for row in rows}


def _next_outcome(previous: Any, run: int, fresh: Outcome) -> Outcome:
    """The outcome to record. A redelivered task in the same run keeps what its first delivery recorded."""
    if previous is None:
        return "added" if fresh != "failed" else "failed"
    if previous["run"] == run and previous["outcome"] != "failed" and fresh != "failed":
        return previous["outcome"]  # type: ignore[no-any-return]
    if fresh == "updated" and previous["state"] == "failed":
        return "added"
    return fresh


async def mark_unchanged(pool: Pool, job_uid: uuid.UUID, run: int, uris: list[str]) -> None:
    """Record that this run found these documents unchanged (keeping the outcome of a same-run delivery)."""
    if uris:
        await pool.execute(
            "UPDATE headrace.documents SET outcome = CASE WHEN run = $2 THEN outcome ELSE 'unchanged' END, "
            "run = $2 WHERE job_uid = $1 AND uri = ANY($3::text[]) AND run <= $2",
            job_uid,
            run,
            uris,
        )


async def refresh_versions(pool: Pool, job_uid: uuid.UUID, versions: dict[str, str]) -> None:
    """Store new change markers of documents whose content turned out unchanged (a touched file, a
    re-uploaded object), so the next run skips them without fetching."""
    if versions:
        await pool.execute(
            "UPDATE headrace.documents d SET source_version = v.version "
            "FROM unnest($2::text[], $3::text[]) AS v(uri, version) WHERE d.job_uid = $1 AND d.uri = v.uri",
            job_uid,
            list(versions),
            list(versions.values()),
        )


def _entries_pattern(archive_uri: str) -> str:
    """A LIKE pattern matching the URIs of an archive's entries, nested ones included (`a.zip!/...`)."""
    escaped = archive_uri.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "!/%"


async def mark_unchanged_entries(pool: Pool, job_uid: uuid.UUID, run: int, archive_uris: list[str]) -> None:
    """Record that this run found these archives unchanged, and with them every entry they hold
    (entries that failed stay failed, with their reason)."""
    if archive_uris:
        await pool.execute(
            "UPDATE headrace.documents SET run = $2, outcome = CASE WHEN run = $2 THEN outcome "
            "WHEN state = 'failed' THEN 'failed' ELSE 'unchanged' END "
            "WHERE job_uid = $1 AND uri LIKE ANY($3::text[]) AND run <= $2",
            job_uid,
            run,
            [_entries_pattern(uri) for uri in archive_uris],
        )


async def entry_hashes(pool: Pool, job_uid: uuid.UUID, archive_uri: str, fingerprint: str) -> dict[str, str]:
    """Content hashes of an archive's entries ingested with this fingerprint (none for a plain document)."""
    rows = await pool.fetch(
        "SELECT uri, content_hash FROM headrace.documents WHERE job_uid = $1 AND uri LIKE $2 "
        "AND state = 'ingested' AND fingerprint = $3",
        job_uid,
        _entries_pattern(archive_uri),
        fingerprint,
    )
    return {row["uri"]: row["content_hash"] for row in rows}


async def store_document(
    pool: Pool,
    job_uid: uuid.UUID,
    run: int,
    doc: DocumentRecord,
    *,
    space: vectors.Space | None = None,
    embeddings: Sequence[Sequence[float]] = (),
) -> Outcome | None:
    """Write a document and replace its chunks, and their vectors in `space`, in one transaction; None when a
    newer run already recorded it."""
    async with pool.acquire() as conn, conn.transaction():
        config = await conn.fetchval("SELECT text_search_config FROM headrace.jobs WHERE uid = $1", job_uid)
        previous = await conn.fetchrow(
            "SELECT id, state, run, outcome FROM headrace.documents WHERE job_uid = $1 AND uri = $2 FOR UPDATE",
            job_uid,
            doc.uri,
        )
        if previous is not None and previous["run"] > run:
            return None
        outcome = _next_outcome(previous, run, "updated")
        doc_id = await conn.fetchval(
            """
            INSERT INTO headrace.documents
                (job_uid, uri, title, state, error, content_hash, fingerprint, source_version, format,
                 bytes, chunk_count, metadata, run, outcome)
            VALUES ($1, $2, $3, 'ingested', NULL, $4, $5, $6, $7, $8, $9, $10, $11, $12)
            ON CONFLICT (job_uid, uri) DO UPDATE
            SET title = excluded.title, state = 'ingested', error = NULL,
                content_hash = excluded.content_hash, fingerprint = excluded.fingerprint,
                source_version = excluded.source_version, format = excluded.format,
                bytes = excluded.bytes, chunk_count = excluded.chunk_count, metadata = excluded.metadata,
                run = excluded.run, outcome = excluded.outcome, updated_at = now()
            WHERE headrace.documents.run <= excluded.run
            RETURNING id
            """,
            job_uid,
            doc.uri,
            doc.title,
            doc.content_hash,
            doc.fingerprint,
            doc.source_version,
            doc.format,
            doc.bytes,
            len(doc.chunks),
            doc.metadata,
            run,
            outcome,
        )
        if doc_id is None:  # inserted meanwhile by a newer run
            return None
        await conn.execute("DELETE FROM headrace.chunks WHERE document_id = $1", doc_id)
        # INSERT from arrays, not COPY: Postgres refuses COPY FROM into a table with row-level security
        # for the roles it applies to, which tenant workers are.
        await conn.execute(
            "INSERT INTO headrace.chunks (document_id, job_uid, ordinal, page, content, config) "
            "SELECT $1, $2, c.ordinal, c.page, c.content, $6 "
            "FROM unnest($3::integer[], $4::integer[], $5::text[]) AS c(ordinal, page, content)",
            doc_id,
            job_uid,
            [c.ordinal for c in doc.chunks],
            [c.page for c in doc.chunks],
            [c.content for c in doc.chunks],
            config,
        )
        await vectors.store_embeddings(conn, job_uid, doc_id, space, embeddings)
        return outcome


async def reembed_document(
    pool: Pool,
    job_uid: uuid.UUID,
    run: int,
    document_id: int,
    space: vectors.Space | None,
    embeddings: Sequence[Sequence[float]],
    *,
    expected_chunks: int,
) -> Outcome | None:
    """Replace the vectors of a document whose chunks are current; None when its chunks changed
    meanwhile (another run rewrote it), in which case nothing is written."""
    async with pool.acquire() as conn, conn.transaction():
        previous = await conn.fetchrow(
            "SELECT id, state, run, outcome, chunk_count FROM headrace.documents WHERE id = $1 FOR UPDATE",
            document_id,
        )
        if previous is None or previous["chunk_count"] != expected_chunks:
            return None
        outcome = _next_outcome(previous, run, "updated")
        await vectors.store_embeddings(conn, job_uid, document_id, space, embeddings)
        await conn.execute(
            "UPDATE headrace.documents SET run = $2, outcome = $3, updated_at = now() WHERE id = $1",
            document_id,
            run,
            outcome,
        )
        return outcome


async def finish_reembed(pool: Pool, run: int, document_id: int, space: vectors.Space) -> Outcome | None:
    """Record a document as re-embedded in `space` once every chunk has its vector there (see
    `vectors.store_chunk_vectors`); None, writing nothing, when some chunk still lacks one or a newer
    run has recorded the document meanwhile."""
    async with pool.acquire() as conn, conn.transaction():
        previous = await conn.fetchrow(
            "SELECT id, state, run, outcome FROM headrace.documents WHERE id = $1 FOR UPDATE", document_id
        )
        if previous is None or previous["run"] > run:
            return None
        lacking = await conn.fetchval(
            "SELECT count(*) FROM headrace.chunks c "
            "LEFT JOIN headrace.embeddings e ON e.chunk_id = c.id AND e.space_id = $2 "
            "WHERE c.document_id = $1 AND e.chunk_id IS NULL",
            document_id,
            space.id,
        )
        if lacking:
            return None
        outcome = _next_outcome(previous, run, "updated")
        await conn.execute(
            "UPDATE headrace.documents SET embedding_space = $2, run = $3, outcome = $4, updated_at = now() "
            "WHERE id = $1",
            document_id,
            space.id,
            run,
            outcome,
        )
        return outcome


MAX_URI_BYTES = 2048
"""Longest document URI stored, in UTF-8 bytes. The (job, uri) btree index takes keys of at most
about 2.7 KB; a longer URI would fail every write of its task, so it fails as a document instead."""


def uri_too_long(uri: str) -> str | None:
    """Why `uri` cannot be stored as a document's URI, or None when it can."""
    size = len(uri.encode())
    return f"source URI is {size} bytes, over the {MAX_URI_BYTES}-byte limit" if size > MAX_URI_BYTES else None


def storable_uri(uri: str) -> str:
    """`uri` itself when it fits the index; else a prefix of it with a digest of the whole, which
    fits, stays unique per URI and still tells a reader which document failed."""
    if uri_too_long(uri) is None:
        return uri
    digest = hashlib.sha256(uri.encode()).hexdigest()
    return uri.encode()[:1024].decode(errors="ignore") + f"...#sha256={digest}"


async def record_failures(pool: Pool, job_uid: uuid.UUID, run: int, failures: dict[str, str]) -> None:
    """Record documents that could not be ingested, each with its (redacted) reason; their old chunks go.
    A URI too long to store is shortened by `storable_uri`."""
    if not failures:
        return
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """
            INSERT INTO headrace.documents (job_uid, uri, state, error, run, outcome)
            SELECT $1, f.uri, 'failed', f.error, $2, 'failed'
            FROM unnest($3::text[], $4::text[]) AS f(uri, error)
            ON CONFLICT (job_uid, uri) DO UPDATE
            SET state = 'failed', error = excluded.error, run = excluded.run, outcome = 'failed',
                chunk_count = 0, embedding_space = NULL, content_hash = NULL, fingerprint = NULL, source_version = NULL,
                updated_at = now()
            WHERE headrace.documents.run <= excluded.run
            RETURNING id
            """,
            job_uid,
            run,
            [storable_uri(uri) for uri in failures],
            [redact(reason)[:4000] for reason in failures.values()],
        )
        await conn.execute("DELETE FROM headrace.chunks WHERE document_id = ANY($1::bigint[])", [r["id"] for r in rows])


async def stale_embeddings(
    pool: Pool, job_uid: uuid.UUID, space_id: int | None, uris: list[str], archive_uris: list[str]
) -> list[tuple[int, str]]:
    """(id, uri) of these documents, and of these archives' entries, whose chunks are not embedded in
    `space_id` (None: that carry vectors while the job wants none)."""
    rows = await pool.fetch(
        "SELECT id, uri FROM headrace.documents WHERE job_uid = $1 AND state = 'ingested' AND chunk_count > 0 "
        "AND embedding_space IS DISTINCT FROM $2 AND (uri = ANY($3::text[]) OR uri LIKE ANY($4::text[])) ORDER BY id",
        job_uid,
        space_id,
        uris,
        [_entries_pattern(uri) for uri in archive_uris],
    )
    return [(r["id"], r["uri"]) for r in rows]


async def processed_in_run(pool: Pool, job_uid: uuid.UUID, run: int, uris: list[str]) -> set[str]:
    """Which of these URIs this run has already recorded (ingested, unchanged or failed)."""
    rows = await pool.fetch(
        "SELECT uri FROM headrace.documents WHERE job_uid = $1 AND run = $2 AND uri = ANY($3::text[])",
        job_uid,
        run,
        uris,
    )
    return {row["uri"] for row in rows}


@dataclass(frozen=True)
class DocumentRow:
    """A document as the API lists it, with the reason when it failed."""

    id: int
    uri: str
    title: str
    state: str
    error: str | None
    format: str | None
    bytes: int
    chunk_count: int
    run: int
    outcome: str
    updated_at: Any


async def list_documents(
    pool: Pool, job_uid: uuid.UUID, *, state: str | None = None, after_id: int = 0, limit: int = 50
) -> list[DocumentRow]:
    """The job's documents in id order after `after_id` (keyset paging), optionally of one state."""
    rows = await pool.fetch(
        "SELECT id, uri, title, state, error, format, bytes, chunk_count, run, outcome, updated_at "
        "FROM headrace.documents WHERE job_uid = $1 AND ($2::text IS NULL OR state = $2) AND id > $3 "
        "ORDER BY id LIMIT $4",
        job_uid,
        state,
        after_id,
        limit,
    )
    return [DocumentRow(**dict(row)) for row in rows]


async def first_failure(pool: Pool, job_uid: uuid.UUID, run: int) -> tuple[int, str, str] | None:
    """(how many documents failed in the run, the first one's URI, its reason), or None when none did."""
    row = await pool.fetchrow(
        """
        SELECT count(*) OVER () AS failed, uri, coalesce(error, 'unknown error') AS error
        FROM headrace.documents WHERE job_uid = $1 AND run = $2 AND outcome = 'failed'
        ORDER BY id LIMIT 1
        """,
        job_uid,
        run,
    )
    return (row["failed"], row["uri"], row["error"]) if row is not None else None
