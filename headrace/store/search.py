"""Full-text search over chunks: websearch syntax, ts_rank_cd ranking, ts_headline snippets, keyset pages."""

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

from headrace.store import snippets
from headrace.store.db import Pool

# Matches are delimited by sentinels that snippets.render turns into escaped HTML or plain text.
SNIPPET_START = snippets.START
SNIPPET_STOP = snippets.STOP
_HEADLINE_OPTIONS = f"StartSel={SNIPPET_START}, StopSel={SNIPPET_STOP}, MaxWords=35, MinWords=15, MaxFragments=2"


class InvalidCursor(ValueError):
    """A page cursor that this server did not hand out."""


@dataclass(frozen=True)
class SearchFilter:
    """Which chunks a search may return. `namespaces=None` means every namespace."""

    namespaces: list[str] | None = None
    job: str | None = None
    job_uid: uuid.UUID | None = None
    uri_prefix: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class SearchHit:
    chunk_id: int
    score: float
    snippet: str
    uri: str
    title: str
    ordinal: int
    page: int | None
    namespace: str
    job: str


@dataclass(frozen=True)
class SearchPage:
    hits: list[SearchHit]
    next_cursor: str | None


def encode_cursor(score: float, chunk_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([score, chunk_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, int]:
    try:
        score, chunk_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(score), int(chunk_id)
    except (ValueError, TypeError) as exc:
        raise InvalidCursor("cursor is not one this server returned") from exc


_SEARCH_SQL = f"""
WITH scope AS (
    SELECT uid, namespace, name, text_search_config AS cfg FROM headrace.jobs
    -- Retained data (its IngestionJob deleted) is not served until a new IngestionJob adopts it.
    WHERE deleted_at IS NULL
      AND ($2::text[] IS NULL OR namespace = ANY($2::text[]))
      AND ($3::text IS NULL OR name = $3)
      AND ($4::uuid IS NULL OR uid = $4)
),
q AS (
    SELECT cfg, websearch_to_tsquery(cfg, $1) AS query FROM (SELECT DISTINCT cfg FROM scope) c
),
ranked AS (
    SELECT c.id, c.document_id, c.job_uid, c.ordinal, c.page, c.content, q.cfg, q.query,
           ts_rank_cd(c.tsv, q.query) AS score
    FROM q
    -- LATERAL with OFFSET 0 keeps Postgres from flattening this into a hash join that tests `@@` on
    -- every chunk: per text-search config it is a bitmap scan of the GIN index for that config's query.
    CROSS JOIN LATERAL (
        SELECT * FROM headrace.chunks c0 WHERE c0.tsv @@ q.query AND c0.config = q.cfg OFFSET 0
    ) c
    JOIN headrace.documents d ON d.id = c.document_id
    WHERE c.job_uid IN (SELECT uid FROM scope)
      AND ($5::text IS NULL OR starts_with(d.uri, $5))
      AND ($6::jsonb IS NULL OR d.metadata @> $6)
),
page AS (
    SELECT * FROM ranked
    WHERE $7::real IS NULL OR score < $7::real OR (score = $7::real AND id > $8)
    ORDER BY score DESC, id ASC
    LIMIT $9
)
SELECT p.id, p.score, p.ordinal, p.page, d.uri, d.title, s.namespace, s.name AS job,
       ts_headline(p.cfg, translate(p.content, '{SNIPPET_START}{SNIPPET_STOP}', ''), p.query, '{_HEADLINE_OPTIONS}')
           AS snippet
FROM page p
JOIN headrace.documents d ON d.id = p.document_id
JOIN scope s ON s.uid = p.job_uid
ORDER BY p.score DESC, p.id ASC
"""


async def search(
    pool: Pool,
    query: str,
    *,
    where: SearchFilter = SearchFilter(),
    limit: int = 10,
    cursor: str | None = None,
    timeout_ms: int = 5000,
) -> SearchPage:
    """One page of chunks matching `query` (websearch syntax), best first."""
    after_score, after_id = decode_cursor(cursor) if cursor else (None, None)
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
        rows = await conn.fetch(
            _SEARCH_SQL,
            query,
            where.namespaces,
            where.job,
            where.job_uid,
            where.uri_prefix,
            where.metadata,
            after_score,
            after_id,
            limit + 1,
        )
    hits = [
        SearchHit(
            chunk_id=row["id"],
            score=row["score"],
            snippet=row["snippet"],
            uri=row["uri"],
            title=row["title"],
            ordinal=row["ordinal"],
            page=row["page"],
            namespace=row["namespace"],
            job=row["job"],
        )
        for row in rows[:limit]
    ]
    next_cursor = encode_cursor(hits[-1].score, hits[-1].chunk_id) if len(rows) > limit else None
    return SearchPage(hits=hits, next_cursor=next_cursor)
