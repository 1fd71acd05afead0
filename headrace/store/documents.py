"""Documents and their chunks: idempotent writes keyed by (job, source URI).

A document's `run` is the newest run that recorded it, never an older one: a write from a superseded
run (a worker that went on after a new run started) changes nothing of a document a newer run already
recorded. `sync: mirror` deletes the documents whose `run` is older than the run that just finished.

This module owns the SQL that writes `documents` and `chunks`; `vectors` owns the vectors'
(`embeddings`). A statement that writes both is composed here from `vectors`' parts.
"""

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg

from headrace.redaction import redact
from headrace.store import vectors
from headrace.store.db import Connection, Pool
from headrace.store.search import bm25

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
    heading_path: str | None = None
    """The headings the chunk stands under, joined with chunker.HEADING_SEPARATOR; None under none."""


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


@dataclass(frozen=True)
class Written:
    """What one transaction of `store_documents` did: the outcome of each document written (a document
    a newer run had already recorded is in neither map), and the documents Postgres refused, each with
    its reason, which their batch-mates outlived."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


def _refuses_document(error: BaseException) -> bool:
    """Whether the error is about a value of the document (a character Postgres cannot store, a chunk
    too long for a tsvector, a vector of the wrong size), so the document fails and not its task."""
    if isinstance(error, asyncpg.InterfaceError):  # asyncpg could not encode an argument
        return isinstance(error, ValueError)
    return isinstance(
        error,
        (
            asyncpg.DataError,  # SQLSTATE 22: untranslatable character, invalid input, value too long
            asyncpg.ProgramLimitExceededError,  # 54: string too long for tsvector, index row too large
            asyncpg.NotNullViolationError,
            asyncpg.UniqueViolationError,  # two chunks of a document with one ordinal
            asyncpg.CheckViolationError,
        ),
    )


async def store_documents(
    pool: Pool,
    job_uid: uuid.UUID,
    run: int,
    docs: Sequence[tuple[DocumentRecord, Sequence[Sequence[float]]]],
    *,
    space: vectors.Space | None = None,
) -> Written:
    """Write documents and replace their chunks, and the chunks' vectors in `space`, in one transaction
    of a few statements whatever the number of documents. Each document comes with one vector per
    chunk, or none (then it has no vectors).

    A document that a newer run already recorded is left as it is. When Postgres refuses a value of
    one document, the batch is written again one document at a time, so only that document is
    refused, with the reason. Retry the whole call, never a part of it, after a lost connection: what
    it writes is idempotent within a run."""
    batch = {doc.uri: (doc, vecs) for doc, vecs in docs}  # the last of a URI given twice wins
    refused = {uri: why for uri, (doc, vecs) in batch.items() if (why := _unfit(doc, vecs, space)) is not None}
    fit = [doc for uri, doc in batch.items() if uri not in refused]
    if not fit:
        return Written(refused=refused)
    try:
        written = await _write_documents(pool, job_uid, run, fit, space)
    except Exception as exc:
        if not _refuses_document(exc):
            raise
        if len(fit) == 1:
            written = Written(refused={fit[0][0].uri: f"the database refused the document: {exc}"})
        else:  # find the culprit: each document alone
            written = Written()
            for doc in fit:
                alone = await store_documents(pool, job_uid, run, [doc], space=space)
                written.outcomes.update(alone.outcomes)
                written.refused.update(alone.refused)
    written.refused.update(refused)
    return written


def _unfit(doc: DocumentRecord, vecs: Sequence[Sequence[float]], space: vectors.Space | None) -> str | None:
    """Why the document's vectors cannot be stored with its chunks, or None when they can."""
    if not vecs:
        return None
    if len(vecs) != len(doc.chunks):
        return f"{len(vecs)} vectors for {len(doc.chunks)} chunks"
    if space is None:
        return "vectors without an embedding space to store them in"
    if any(len(v) != space.dimensions for v in vecs):
        return f"a vector whose dimension is not the {space.dimensions} of model {space.model}"
    return None


async def _write_documents(
    pool: Pool,
    job_uid: uuid.UUID,
    run: int,
    docs: list[tuple[DocumentRecord, Sequence[Sequence[float]]]],
    space: vectors.Space | None,
) -> Written:
    """One transaction: lock the rows the documents already have (in URI order, as every writer does,
    so two workers never deadlock), upsert the documents while their `run` is not newer than this one,
    drop their old chunks (their vectors go with them), and insert the new chunks with their vectors."""
    docs = sorted(docs, key=lambda d: d[0].uri)
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT uri, state, run, outcome FROM headrace.documents WHERE job_uid = $1 AND uri = ANY($2::text[]) "
            "ORDER BY uri FOR UPDATE",
            job_uid,
            [doc.uri for doc, _ in docs],
        )
        previous = {row["uri"]: row for row in rows}
        docs = [(doc, vecs) for doc, vecs in docs if doc.uri not in previous or previous[doc.uri]["run"] <= run]
        if not docs:
            return Written()
        outcomes = {doc.uri: _next_outcome(previous.get(doc.uri), run, "updated") for doc, _ in docs}
        embedded = space is not None
        ids = await conn.fetch(
            """
            WITH upserted AS (
                INSERT INTO headrace.documents
                    (job_uid, uri, title, state, error, content_hash, fingerprint, source_version, format,
                     bytes, chunk_count, metadata, run, outcome, embedding_space)
                SELECT $1, d.uri, d.title, 'ingested', NULL, d.content_hash, d.fingerprint, d.source_version,
                       d.format, d.bytes, d.chunk_count, d.metadata::jsonb, $2, d.outcome, d.embedding_space
                FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[],
                            $10::integer[], $11::text[], $12::text[], $13::integer[])
                     AS d(uri, title, content_hash, fingerprint, source_version, format, bytes, chunk_count,
                          metadata, outcome, embedding_space)
                ON CONFLICT (job_uid, uri) DO UPDATE
                SET title = excluded.title, state = 'ingested', error = NULL,
                    content_hash = excluded.content_hash, fingerprint = excluded.fingerprint,
                    source_version = excluded.source_version, format = excluded.format,
                    bytes = excluded.bytes, chunk_count = excluded.chunk_count, metadata = excluded.metadata,
                    run = excluded.run, outcome = excluded.outcome, embedding_space = excluded.embedding_space,
                    updated_at = now()
                WHERE headrace.documents.run <= excluded.run
                RETURNING id, uri
            ), dropped AS (
                DELETE FROM headrace.chunks c USING upserted u WHERE c.document_id = u.id
            )
            SELECT id, uri FROM upserted
            """,
            job_uid,
            run,
            [doc.uri for doc, _ in docs],
            [doc.title for doc, _ in docs],
            [doc.content_hash for doc, _ in docs],
            [doc.fingerprint for doc, _ in docs],
            [doc.source_version for doc, _ in docs],
            [doc.format for doc, _ in docs],
            [doc.bytes for doc, _ in docs],
            [len(doc.chunks) for doc, _ in docs],
            [json.dumps(doc.metadata) for doc, _ in docs],
            [outcomes[doc.uri] for doc, _ in docs],
            [space.id if space is not None and vecs else None for doc, vecs in docs],
        )
        by_uri = {row["uri"]: row["id"] for row in ids}  # a URI inserted meanwhile by a newer run is missing
        written = [(by_uri[doc.uri], doc, vecs) for doc, vecs in docs if doc.uri in by_uri]
        chunks = [
            (doc_id, chunk, vecs[i] if vecs else None)
            for doc_id, doc, vecs in written
            for i, chunk in enumerate(doc.chunks)
        ]
        if chunks:
            await _insert_chunks(conn, job_uid, chunks, space if embedded else None)
        return Written(outcomes={doc.uri: outcomes[doc.uri] for _, doc, _ in written})


async def _insert_chunks(
    conn: Connection,
    job_uid: uuid.UUID,
    chunks: list[tuple[int, ChunkRecord, Sequence[float] | None]],
    space: vectors.Space | None,
) -> None:
    """Insert chunks from arrays, and with them their vectors in `space`, in one statement. INSERT ...
    SELECT, not COPY: each chunk's context `tsvector` is computed from its document's title and its
    job's text-search configuration, a join COPY cannot make. Vectors travel as one flat `real[]` sliced
    per chunk: binary floats, no text to format and parse."""
    context = bm25.CONTEXT_SQL.format(config="j.config", title="d.title", heading_path="c.heading_path")
    insert = (
        "INSERT INTO headrace.chunks (document_id, job_uid, ordinal, page, heading_path, content, config, context_tsv) "
        f"SELECT c.document_id, $1, c.ordinal, c.page, c.heading_path, c.content, j.config, {context} FROM c "
        "JOIN headrace.documents d ON d.id = c.document_id "
        "LEFT JOIN (SELECT text_search_config AS config FROM headrace.jobs WHERE uid = $1) j ON true"
    )
    source = (
        "unnest($2::bigint[], $3::integer[], $4::integer[], $5::text[], $6::text[]) "
        "WITH ORDINALITY AS c(document_id, ordinal, page, content, heading_path, position)"
    )
    args: list[object] = [
        job_uid,
        [doc_id for doc_id, _, _ in chunks],
        [chunk.ordinal for _, chunk, _ in chunks],
        [chunk.page for _, chunk, _ in chunks],
        [chunk.content for _, chunk, _ in chunks],
        [chunk.heading_path for _, chunk, _ in chunks],
    ]
    with_vectors = [(position, vec) for position, (_, _, vec) in enumerate(chunks, start=1) if vec is not None]
    if space is None or not with_vectors:
        await conn.execute(f"WITH c AS (SELECT * FROM {source}) {insert}", *args)
        return
    dims = space.dimensions
    flat = [x for _, vec in with_vectors for x in vec]
    await conn.execute(
        f"""
        WITH c AS (SELECT * FROM {source}),
        v AS (SELECT * FROM unnest($7::bigint[]) WITH ORDINALITY AS v(position, slot)),
        inserted AS ({insert} RETURNING id, document_id, ordinal)
        {vectors.INSERT_OF_INSERTED_CHUNKS}
        """,
        *args,
        [position for position, _ in with_vectors],
        space.id,
        flat,
        dims,
    )


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
    newer run already recorded it. A value Postgres refuses raises."""
    if (why := _unfit(doc, embeddings, space)) is not None:
        raise ValueError(f"cannot store {doc.uri}: {why}")
    written = await _write_documents(pool, job_uid, run, [(doc, embeddings)], space)
    return written.outcomes.get(doc.uri)


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
            "UPDATE headrace.documents SET embedding_space = $2 WHERE id = $1",
            document_id,
            space.id if space is not None and embeddings else None,
        )
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


async def drop_old_input(conn: Pool | Connection, document_id: int) -> None:
    """Remove the vectors of a document that an earlier version computed from another input than this
    one's (`embedding_input` set, see migration 0009), with its space and its mark, so that re-embedding
    it is the same resumable work as bringing it from another space: its chunks then all lack a vector.
    One statement, so an outage leaves the document as it was or without vectors, never half of each."""
    await conn.execute(
        f"""
        WITH old AS (
            UPDATE headrace.documents SET embedding_space = NULL, embedding_input = NULL
            WHERE id = $1 AND embedding_input IS NOT NULL
            RETURNING id
        )
        {vectors.delete_of_documents("old")}
        """,
        document_id,
    )


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


async def delete_unseen_batch(
    conn: Pool | Connection, job_uid: uuid.UUID, run: int, *, after: str, limit: int
) -> tuple[str | None, int]:
    """`sync: mirror`, one batch: of the job's next `limit` documents in URI order after `after` (its
    unique index), delete those that `run` did not record. Returns the last URI scanned (None when
    none was left) and how many were deleted; `history.delete_unseen` walks the job with it."""
    row = await conn.fetchrow(
        """
        WITH scanned AS (
            SELECT id, uri, run FROM headrace.documents
            WHERE job_uid = $1 AND uri > $3 ORDER BY uri LIMIT $4
        ),
        gone AS (
            DELETE FROM headrace.documents d USING scanned s WHERE d.id = s.id AND s.run < $2 RETURNING 1
        )
        SELECT (SELECT max(uri) FROM scanned) AS last, (SELECT count(*) FROM gone) AS deleted
        """,
        job_uid,
        run,
        after,
        limit,
    )
    assert row is not None
    return row["last"], int(row["deleted"])


async def delete_some_chunks(conn: Pool | Connection, job_uid: uuid.UUID, limit: int) -> int:
    """Delete up to `limit` of the job's chunks (with their vectors); returns how many."""
    status = await conn.execute(
        "DELETE FROM headrace.chunks WHERE id IN (SELECT id FROM headrace.chunks WHERE job_uid = $1 LIMIT $2)",
        job_uid,
        limit,
    )
    return int(status.split()[-1])


async def delete_some(conn: Pool | Connection, job_uid: uuid.UUID, limit: int) -> int:
    """Delete up to `limit` of the job's documents (with their chunks); returns how many."""
    status = await conn.execute(
        "DELETE FROM headrace.documents WHERE id IN (SELECT id FROM headrace.documents WHERE job_uid = $1 LIMIT $2)",
        job_uid,
        limit,
    )
    return int(status.split()[-1])


async def stale_embeddings(
    pool: Pool, job_uid: uuid.UUID, space_id: int | None, uris: list[str], archive_uris: list[str]
) -> list[tuple[int, str]]:
    """(id, uri) of these documents, and of these archives' entries, whose chunks are not embedded in
    `space_id` (None: that carry vectors while the job wants none), or whose vectors an earlier version
    computed from another input (`embedding_input`, see migration 0009)."""
    rows = await pool.fetch(
        "SELECT id, uri FROM headrace.documents WHERE job_uid = $1 AND state = 'ingested' AND chunk_count > 0 "
        "AND (embedding_space IS DISTINCT FROM $2 OR ($2 IS NOT NULL AND embedding_input IS NOT NULL)) "
        "AND (uri = ANY($3::text[]) OR uri LIKE ANY($4::text[])) ORDER BY id",
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


async def not_of_job(
    conn: Pool | Connection, job_uid: uuid.UUID, *, document_ids: Sequence[int] = (), chunk_ids: Sequence[int] = ()
) -> set[int]:
    """Which of these document and chunk ids are not the job's (whatever they are, or whether they exist)."""
    rows = await conn.fetch(
        "SELECT id FROM headrace.documents WHERE job_uid = $1 AND id = ANY($2::bigint[]) "
        "UNION ALL SELECT -id FROM headrace.chunks WHERE job_uid = $1 AND id = ANY($3::bigint[])",
        job_uid,
        list(document_ids),
        list(chunk_ids),
    )
    found = {row["id"] for row in rows}
    return {i for i in document_ids if i not in found} | {i for i in chunk_ids if -i not in found}


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


async def failures(pool: Pool, job_uid: uuid.UUID, run: int) -> list[tuple[str, str]]:
    """The documents that failed in `run`, as (uri, error), by uri."""
    rows = await pool.fetch(
        "SELECT uri, error FROM headrace.documents WHERE job_uid = $1 AND run = $2 AND state = 'failed' ORDER BY uri",
        job_uid,
        run,
    )
    return [(row["uri"], row["error"]) for row in rows]


async def chunk_total(pool: Pool, job_uid: uuid.UUID) -> int:
    """How many chunks the job's index holds."""
    return int(
        await pool.fetchval("SELECT coalesce(sum(chunk_count), 0) FROM headrace.documents WHERE job_uid = $1", job_uid)
    )
