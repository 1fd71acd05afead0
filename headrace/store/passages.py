"""Chunks as passages for RAG: one chunk with its neighbours, and a document's chunks in order."""

import uuid
from dataclasses import dataclass
from typing import Any

from headrace.store.db import Pool


@dataclass(frozen=True)
class Passage:
    chunk_id: int
    ordinal: int
    page: int | None
    heading_path: str | None
    text: str


@dataclass(frozen=True)
class DocumentPassages:
    """A document with some of its chunks, in order."""

    uri: str
    title: str
    metadata: dict[str, Any]
    chunk_count: int
    passages: list[Passage]


def _passages(rows: list[Any]) -> list[Passage]:
    return [Passage(r["id"], r["ordinal"], r["page"], r["heading_path"], r["content"]) for r in rows]


async def with_neighbours(pool: Pool, job_uid: uuid.UUID, chunk_id: int, context: int) -> DocumentPassages | None:
    """The chunk `chunk_id` of this job and up to `context` chunks either side of it in its document;
    None when the job has no such chunk. Neighbours are found by ordinal on the (document, ordinal)
    unique index, so this reads 2 × context + 1 rows.

    Every row is matched on the job as well as on its id, here and in `of_document`: the schema
    keeps a chunk in its document's job (0010_job_scoped_keys.sql), and these reads do not rely on it."""
    async with pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        anchor = await conn.fetchrow(
            "SELECT c.document_id, c.ordinal, d.uri, d.title, d.metadata, d.chunk_count "
            "FROM headrace.chunks c JOIN headrace.documents d ON d.id = c.document_id AND d.job_uid = c.job_uid "
            "WHERE c.id = $1 AND c.job_uid = $2",
            chunk_id,
            job_uid,
        )
        if anchor is None:
            return None
        rows = await conn.fetch(
            "SELECT id, ordinal, page, heading_path, content FROM headrace.chunks "
            "WHERE document_id = $1 AND job_uid = $4 AND ordinal BETWEEN $2 AND $3 ORDER BY ordinal",
            anchor["document_id"],
            anchor["ordinal"] - context,
            anchor["ordinal"] + context,
            job_uid,
        )
    return DocumentPassages(anchor["uri"], anchor["title"], anchor["metadata"], anchor["chunk_count"], _passages(rows))


async def of_document(
    pool: Pool, job_uid: uuid.UUID, uri: str, *, after_ordinal: int = -1, limit: int = 50
) -> DocumentPassages | None:
    """The document's chunks after `after_ordinal`, in order (keyset paging); None when the job has
    no ingested document at `uri`."""
    async with pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        document = await conn.fetchrow(
            "SELECT id, uri, title, metadata, chunk_count FROM headrace.documents "
            "WHERE job_uid = $1 AND uri = $2 AND state = 'ingested'",
            job_uid,
            uri,
        )
        if document is None:
            return None
        rows = await conn.fetch(
            "SELECT id, ordinal, page, heading_path, content FROM headrace.chunks "
            "WHERE document_id = $1 AND job_uid = $4 AND ordinal > $2 ORDER BY ordinal LIMIT $3",
            document["id"],
            after_ordinal,
            limit,
            job_uid,
        )
    return DocumentPassages(
        document["uri"], document["title"], document["metadata"], document["chunk_count"], _passages(rows)
    )
