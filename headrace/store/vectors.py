"""Embedding vectors in pgvector: spaces (model, dimensions), and one row of vector per chunk.

Every space has its own partial HNSW index (cosine) over `embedding::vector(dimensions)`, so vectors
of two models never meet in one index or one ranking. Vectors travel as pgvector's text form
(`[0.1,0.2]`), which needs no client-side codec and works whether or not the extension existed when
the connection was opened.

This module owns the SQL that writes `embeddings` and `embedding_spaces`. Where one statement writes a
document's rows and its vectors together, `documents` composes it from this module's parts
(`INSERT_OF_INSERTED_CHUNKS`, `delete_of_documents`).
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from headrace.store.db import Connection, Pool

# Above this, HNSW needs halfvec (up to 4,000 dimensions).
MAX_VECTOR_INDEX_DIMENSIONS = 2000


@dataclass(frozen=True)
class Space:
    """A vector space: one embedding model at one dimension."""

    id: int
    model: str
    dimensions: int

    @property
    def sql_type(self) -> str:
        """The type the space's index is built over, e.g. `vector(256)`."""
        kind = "halfvec" if self.dimensions > MAX_VECTOR_INDEX_DIMENSIONS else "vector"
        return f"{kind}({int(self.dimensions)})"


def vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


async def available(conn: Pool | Connection) -> bool:
    """Whether vectors can be stored: pgvector is installed and the embeddings table exists."""
    return bool(await conn.fetchval("SELECT to_regclass('headrace.embeddings') IS NOT NULL"))


async def ensure_space(pool: Pool, model: str, dimensions: int) -> Space:
    """The space of this model and dimension, created (with its index) on first use."""
    async with pool.acquire() as conn, conn.transaction():
        # Several workers (local mode) or the operator's handlers may meet a new space at once: one at a
        # time, or two would race to create its index ("relation embeddings_hnsw_N already exists").
        # A table lock, not an advisory lock, which any tenant role could take and hold.
        await conn.execute("LOCK TABLE headrace.embedding_spaces IN SHARE ROW EXCLUSIVE MODE")
        space_id = await conn.fetchval(
            "INSERT INTO headrace.embedding_spaces (model, dimensions) VALUES ($1, $2) "
            "ON CONFLICT (model, dimensions) DO UPDATE SET model = excluded.model RETURNING id",
            model,
            dimensions,
        )
        await conn.execute("SELECT headrace.ensure_space_index($1)", space_id)
    return Space(int(space_id), model, dimensions)


async def space_for(conn: Pool, model: str, dimensions: int) -> Space:
    """The space of this model and dimension: looked up, and created only when missing. A tenant's
    worker may read spaces but not create them (a space's index needs the table's owner), so the
    operator creates a job's space before its workers start; in local mode the worker's role owns all."""
    found = await find_spaces(conn, [(model, dimensions)])
    if (space := found.get((model, dimensions))) is not None:
        return space
    return await ensure_space(conn, model, dimensions)


async def space_by_id(conn: Pool | Connection, space_id: int) -> Space | None:
    """The space with this id, or None."""
    row = await conn.fetchrow("SELECT id, model, dimensions FROM headrace.embedding_spaces WHERE id = $1", space_id)
    return Space(row["id"], row["model"], row["dimensions"]) if row is not None else None


async def find_spaces(conn: Pool | Connection, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Space]:
    """The spaces that exist among these (model, dimensions) pairs."""
    rows = await conn.fetch(
        "SELECT id, model, dimensions FROM headrace.embedding_spaces s "
        "JOIN unnest($1::text[], $2::int[]) AS k(model, dimensions) USING (model, dimensions)",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r["model"], r["dimensions"]): Space(r["id"], r["model"], r["dimensions"]) for r in rows}


def delete_of_documents(documents: str) -> str:
    """A DELETE of the vectors of the chunks of the documents that `documents` (a CTE with an `id` column)
    lists, the last step of a statement that changes documents and drops their vectors at once
    (`documents.drop_old_input`)."""
    return (
        f"DELETE FROM headrace.embeddings e USING headrace.chunks c, {documents} "
        f"WHERE e.chunk_id = c.id AND c.document_id = {documents}.id"
    )


INSERT_OF_INSERTED_CHUNKS = """INSERT INTO headrace.embeddings (chunk_id, job_uid, space_id, embedding)
        SELECT i.id, $1, $8, ($9::real[])[(v.slot - 1) * $10 + 1 : v.slot * $10]::vector
        FROM inserted i JOIN c USING (document_id, ordinal) JOIN v USING (position)"""
"""The vectors of chunks just written, as the last step of `documents`' one statement that writes chunks
with their vectors (`documents._insert_chunks`). It reads the statement's CTEs `inserted` (id,
document_id, ordinal of each chunk written), `c` (the chunks given, with their `position`) and `v`
(`position`, `slot` of its vector), and its parameters $1 (the job), $8 (the space's id), $9 (every
vector as one flat `real[]`) and $10 (their dimension)."""


async def store_embeddings(
    conn: Connection, job_uid: uuid.UUID, document_id: int, space: Space | None, vectors: Sequence[Sequence[float]]
) -> None:
    """Replace the vectors of a document's chunks with `vectors`, one per chunk in ordinal order. With
    `space=None` the document's vectors are removed. Call it in the transaction that records the space
    on the document (`documents.reembed_document`), so a document is never half-embedded."""
    if await available(conn):
        await conn.execute(
            "DELETE FROM headrace.embeddings e USING headrace.chunks c WHERE e.chunk_id = c.id AND c.document_id = $1",
            document_id,
        )
        if space is not None and vectors:
            inserted = await conn.fetchval(
                """
                WITH v AS (SELECT ordinality - 1 AS ordinal, value FROM unnest($4::text[]) WITH ORDINALITY AS t(value))
                , ins AS (
                    INSERT INTO headrace.embeddings (chunk_id, job_uid, space_id, embedding)
                    SELECT c.id, $2, $3, v.value::vector
                    FROM (SELECT id, row_number() OVER (ORDER BY ordinal) - 1 AS position
                          FROM headrace.chunks WHERE document_id = $1) c
                    JOIN v ON v.ordinal = c.position
                    RETURNING 1
                )
                SELECT count(*) FROM ins
                """,
                document_id,
                job_uid,
                space.id,
                [vector_literal(v) for v in vectors],
            )
            if inserted != len(vectors):
                raise ValueError(f"{len(vectors)} vectors for {inserted} stored chunks of document {document_id}")


async def chunks_lacking(conn: Pool | Connection, document_id: int, space: Space) -> tuple[str, list[tuple[int, str]]]:
    """The document's title and the (id, text) of its chunks, in order, that have no vector in `space`:
    what re-embedding it there still has to do (a chunk is embedded with its document's title)."""
    rows = await conn.fetch(
        "SELECT d.title, c.id, c.content FROM headrace.documents d "
        "LEFT JOIN headrace.chunks c ON c.document_id = d.id "
        "AND NOT EXISTS (SELECT FROM headrace.embeddings e WHERE e.chunk_id = c.id AND e.space_id = $2) "
        "WHERE d.id = $1 ORDER BY c.ordinal",
        document_id,
        space.id,
    )
    title = rows[0]["title"] if rows else ""
    return title, [(r["id"], r["content"]) for r in rows if r["id"] is not None]


async def store_chunk_vectors(
    conn: Pool | Connection,
    job_uid: uuid.UUID,
    space: Space,
    chunk_ids: Sequence[int],
    vectors: Sequence[Sequence[float]],
) -> None:
    """Give these chunks their vector in `space` (a chunk has one vector: one of another space is
    replaced). Chunks deleted meanwhile (a newer run rewrote the document), and any not of the job,
    are skipped."""
    if len(chunk_ids) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors for {len(chunk_ids)} chunks")
    await conn.execute(
        """
        INSERT INTO headrace.embeddings (chunk_id, job_uid, space_id, embedding)
        SELECT c.id, $2, $3, v.value::vector
        FROM unnest($1::bigint[], $4::text[]) AS v(chunk_id, value)
        JOIN headrace.chunks c ON c.id = v.chunk_id AND c.job_uid = $2
        ON CONFLICT (chunk_id) DO UPDATE SET space_id = excluded.space_id, embedding = excluded.embedding
        """,
        list(chunk_ids),
        job_uid,
        space.id,
        [vector_literal(v) for v in vectors],
    )


async def stored_chunks(conn: Pool | Connection, document_id: int) -> list[str]:
    """A document's stored chunk texts in order, for re-embedding without re-extracting."""
    rows = await conn.fetch("SELECT content FROM headrace.chunks WHERE document_id = $1 ORDER BY ordinal", document_id)
    return [r["content"] for r in rows]
