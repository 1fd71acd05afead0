"""Semantic candidates: cosine similarity over the HNSW index of the searched jobs' vector space,
scanned iteratively so that filters cannot starve a page."""

import uuid
from typing import Any

from headrace.store import vectors
from headrace.store.db import Connection


def _semantic_sql(space: vectors.Space) -> str:
    # The cast and the space id come from the spaces table (integers), so they are safe to format in,
    # and must be: the space's HNSW index is partial (`WHERE space_id = N`) over `embedding::vector(D)`,
    # and only a literal lets the planner match a prepared statement's plan to it.
    cast = space.sql_type
    distance = f"(e.embedding::{cast} <=> $1::{cast})"
    return f"""
SELECT id, score FROM (
    SELECT e.chunk_id AS id, 1 - {distance} AS score
    FROM headrace.embeddings e
    JOIN headrace.chunks c ON c.id = e.chunk_id AND c.job_uid = e.job_uid
    JOIN headrace.documents d ON d.id = c.document_id AND d.job_uid = c.job_uid
    WHERE e.space_id = {int(space.id)} AND $2::int IS NOT NULL AND e.job_uid = ANY($3::uuid[])
      AND ($4::text IS NULL OR starts_with(d.uri, $4))
      AND ($5::jsonb IS NULL OR d.metadata @> $5)
      AND ($7::float8 IS NULL OR 1 - {distance} < $7::float8 OR (1 - {distance} = $7::float8 AND e.chunk_id > $8))
    ORDER BY {distance}
    LIMIT $6
) nearest
ORDER BY score DESC, id ASC
"""


def settings(ef_search: int) -> str:
    """The transaction's HNSW scan, as SQL to send with its BEGIN (no round trip of its own):
    `ef_search` candidates per scan, scanned on in strict order while filters drop them."""
    return f"SET LOCAL hnsw.ef_search = {max(int(ef_search), 1)}; SET LOCAL hnsw.iterative_scan = strict_order"


async def rank(
    conn: Connection,
    space: vectors.Space,
    vector: str,
    uids: list[uuid.UUID],
    filters: tuple[str | None, dict[str, Any] | None],
    limit: int,
    after: tuple[float, int] | None,
) -> list[tuple[int, float]]:
    """The best `limit` chunks of the jobs `uids` in `space` after `after` by cosine similarity to
    `vector` (a vectors.vector_literal), best first."""
    rows = await conn.fetch(_semantic_sql(space), vector, space.id, uids, *filters, limit, *(after or (None, None)))
    return [(r["id"], float(r["score"])) for r in rows]
