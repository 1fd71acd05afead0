"""Search over chunks: keyword (full text), semantic (pgvector) and hybrid (a weighted sum of both).

`search` runs one page through the stages, each in its own module:
- **query parsing** (query.py): whether the query is in websearch syntax, its positive words;
- **scope** (scope.py): the jobs the filters select and the vector spaces of their chunks, and from
  them the mode (`choose_mode`);
- **candidate generation and ranking**: keyword.py for keyword candidates, ranked by Okapi BM25
  (bm25.py, one definition for every path) from the search statistics (statistics.py) or over the
  GIN index; semantic.py for cosine similarity over the HNSW index;
- **fusion** (fusion.py): hybrid's weighted sum of the keyword and semantic scores;
- **snippets** (snippets.py): the page's hits read once (for hybrid, the fused page's, not each
  half's), each with its chunk's whole text for a RAG client and a snippet highlighted from that text
  in this process when it is first read (the API's reranking reads only the chosen page's).

Every mode takes the same filters and pages the same way: hits are ordered by (score desc, chunk id
asc) and a cursor (store/cursors.py) is the last hit's (score, id), so a page never repeats or skips
a hit ranked above the cursor.

Keyword ranking: any query word matches, rarer words weigh more, and a word in the chunk's document
title or heading path weighs more again (its context field). Semantic ranking is cosine similarity
over the HNSW index of the searched jobs' vector space. Hybrid fuses the best `candidates` of each by
their scores, each list's scaled to 0..1 (its worst candidate 0, its best 1): score = 0.8 x keyword
+ 0.2 x semantic, a chunk missing from a list counting 0 there.
"""

import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from headrace.model import search_defaults
from headrace.store import cursors, vectors
from headrace.store.db import Connection, Pool
from headrace.store.errors import QueryCanceledError
from headrace.store.search import fusion, keyword, semantic, snippets
from headrace.store.search.query import has_words, positive_words
from headrace.store.search.scope import Scope, scope

Mode = Literal["keyword", "semantic", "hybrid"]
MODES: tuple[Mode, ...] = ("keyword", "semantic", "hybrid")
QueryEmbedder = Callable[[vectors.Space, str], Awaitable[Sequence[float]]]


class SearchRefused(ValueError):
    """A search that cannot run as asked, with the reason (the mode needs vectors the jobs lack, ...)."""


class SearchTimedOut(Exception):
    """A search whose statement ran past its `statement_timeout` (`timeout_ms`): the API answers 504,
    the CLI one line saying how to narrow it."""

    def __init__(self, timeout_ms: int) -> None:
        super().__init__(f"the search took longer than its timeout of {timeout_ms} ms")
        self.timeout_ms = timeout_ms


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
    text: str
    uri: str
    title: str
    ordinal: int
    page: int | None
    heading_path: str | None
    """The headings the chunk stands under, joined; None when none is known."""
    namespace: str
    job: str
    metadata: dict[str, Any]
    lexemes: Sequence[str] = field(repr=False)
    """The query's positive words as `config` normalises them, those the chunk holds: what `snippet` marks."""
    config: str = field(repr=False)
    """The chunk's text-search config."""

    @functools.cached_property
    def snippet(self) -> str:
        """The hit's snippet (snippets.py), made when first read: a reranked search reads `limit` of
        its K candidates' snippets, those of the page the reranker chose, and highlights no other."""
        return snippets.snippet(self.text, self.lexemes, self.config)


@dataclass(frozen=True)
class SearchPage:
    hits: list[SearchHit]
    next_cursor: str | None
    mode: Mode = "keyword"


def choose_mode(asked: Mode | None, where: Scope) -> Mode:
    """The mode to run: the one asked for, or hybrid when the searched jobs share one vector space
    (keyword when they have none). Raises SearchRefused when vectors are needed and absent or mixed."""
    if asked is None:
        if not where.spaces:
            return "keyword"
        asked = "hybrid"
    if asked == "keyword":
        return asked
    if not where.spaces:
        raise SearchRefused(
            f"mode {asked} needs embeddings, and none of the searched jobs has any "
            "(spec.embedding is none, the vector extension is missing, or nothing is ingested yet); use mode keyword"
        )
    if len(where.spaces) > 1:
        raise SearchRefused(
            f"mode {asked}: the searched jobs use different embedding models, whose vectors cannot be compared: "
            f"{where.describe_spaces()}. Narrow the search with namespaces or job, or use mode keyword"
        )
    return asked


def transaction_settings(timeout_ms: int) -> str:
    """The search transaction's settings, sent as one statement (one round trip).

    - `plan_cache_mode = force_custom_plan`: asyncpg prepares every statement, and after five runs
      on a connection Postgres may switch it to a generic plan, made without the parameters' values.
      The generic plan of the semantic SQL guesses that `($4 IS NULL OR starts_with(d.uri, $4))`
      keeps one document, and computes the distance of every chunk in a nested loop instead of
      walking the space's HNSW index (EXPLAIN at 27,255 chunks: 360 ms against 28 ms; it grows with
      the index). Planning with the values costs about a millisecond per statement.
    - `jit = off`: the searches' cost estimates exceed `jit_above_cost` on a large index, and
      compiling a query (up to a second) costs far more than it saves on a page of ten hits.
    - `work_mem = 64MB`: the bitmap of a common word's matches stays exact. At the default 4 MB the
      bitmap of `exception` (227,328 of a million chunks) went lossy, and Postgres rechecked 26,853
      chunks' tsvectors to find the first 10,000 matches (EXPLAIN: 100 ms of heap scan against 64 ms).
    """
    return (
        f"SET LOCAL statement_timeout = {int(timeout_ms)}; SET LOCAL plan_cache_mode = force_custom_plan; "
        "SET LOCAL jit = off; SET LOCAL work_mem = '64MB'"
    )


PLANNED_TABLES = ("headrace.documents", "headrace.chunks", "headrace.embeddings")
"""The tables whose rows a search's plans are chosen by (how many chunks and vectors each job has)."""


async def analyze(pool: Pool) -> None:
    """Refresh the planner's statistics of PLANNED_TABLES (ANALYZE reads a sample of each table, not
    all of it), after many rows were written: by `headrace run` as its run ends, finished or
    interrupted, and in a cluster by the operator's statistics loop after a pass that built a job's
    search statistics (operator/statistics.py: the job's run has just finished).

    Until autovacuum first analyzes them, Postgres guesses that `e.job_uid = ANY($3)` keeps 0.5% of a
    space's vectors per job, and plans the semantic SQL as the exact distance of every vector of the
    searched jobs, sorted, instead of walking the space's HNSW index. EXPLAIN (ANALYZE, BUFFERS) after
    `headrace run` of the demo's job and another: 4,091 vectors, 25,351 buffers against 1,162 once
    analyzed; 8,571 vectors, 300 ms cold (2,427 buffers read, 525 dirtied) and 50 ms warm against
    4-8 ms. It grows with the jobs' vectors. A role that does not own the tables gets a warning from
    Postgres ("permission denied to analyze"), no error, and autovacuum's statistics later; both
    callers connect as the role that ran the migrations (the chart gives the operator and the
    migration hook one `DATABASE_URL`), which owns them."""
    async with pool.acquire() as conn:
        await conn.execute(f"ANALYZE {', '.join(PLANNED_TABLES)}")


@asynccontextmanager
async def _read_only_transaction(pool: Pool, timeout_ms: int, more: str | None = None) -> AsyncIterator[Connection]:
    """A pooled connection in a read-only transaction with the search's settings (and `more` SQL
    settings), begun in one round trip (BEGIN and the SETs in one simple query): a round trip is a
    context switch into Postgres, and on a busy machine each one costs the search about a millisecond.
    A statement cancelled by the timeout raises SearchTimedOut."""
    async with pool.acquire() as conn:
        await conn.execute("; ".join(["BEGIN READ ONLY", transaction_settings(timeout_ms), *([more] if more else [])]))
        try:
            try:
                yield conn
            except QueryCanceledError as exc:
                raise SearchTimedOut(timeout_ms) from exc
        except BaseException:
            if not conn.is_closed():
                with contextlib.suppress(Exception):  # the pool's reset rolls back what this could not
                    await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")


async def search(
    pool: Pool,
    query: str,
    *,
    where: SearchFilter = SearchFilter(),
    limit: int = search_defaults.LIMIT,
    cursor: str | None = None,
    timeout_ms: int = search_defaults.TIMEOUT_MS,
    mode: Mode | None = "keyword",
    embed: QueryEmbedder | None = None,
    candidates: int = search_defaults.CANDIDATES,
    ef_search: int = search_defaults.EF_SEARCH,
    ranked_matches: int | None = None,
) -> SearchPage:
    """One page of chunks for `query`, best first. `mode=None` picks hybrid when the searched jobs
    share a vector space and `embed` can embed the query in it, else keyword. `ranked_matches` caps
    how many keyword candidates are ranked and how far a word's document frequency is counted (None:
    all, exactly): the bound that keeps common words fast on a large index, at the cost of ranking a
    sample of the chunks that share only common words with the query (see docs/benchmarks.md).
    Bounded keyword ranking reads the jobs' search statistics first when they have current ones
    (statistics.rank: a few hundred postings per query word); None ranks every match exactly, always."""
    after: tuple[float, int] | None = None
    pinned: dict[str, Any] | None = None  # the statistics the first page ranked by
    if cursor:
        score, chunk_id, pinned = cursors.decode_search(cursor)
        after = (score, chunk_id)
    # A search that may be semantic sets its HNSW scan as it begins (placeholders until pgvector
    # loads, and unused if the scope makes it a keyword search).
    hnsw = semantic.settings(ef_search) if mode != "keyword" and embed is not None else None
    async with _read_only_transaction(pool, timeout_ms, hnsw) as conn:
        scoped = await scope(conn, namespaces=where.namespaces, job=where.job, job_uid=where.job_uid)
        chosen = choose_mode(mode if (mode is not None or embed is not None) else "keyword", scoped)
        if chosen != "keyword" and embed is None:
            raise SearchRefused(f"mode {chosen} needs a query embedder")
        uids = [j.uid for j in scoped.jobs]
        configs = sorted({j.config for j in scoped.jobs})
        filters = (where.uri_prefix, where.metadata)
        ranked: list[tuple[int, float]]
        statistics: dict[str, Any] | None = None
        keyword_ranking = functools.partial(
            keyword.rank,
            conn,
            query,
            configs,
            uids,
            filters,
            ranked_matches=ranked_matches,
            statistics=pinned,
            use_statistics=scoped.statistics and ranked_matches is not None,
        )
        if chosen == "keyword":
            ranked, statistics = await keyword_ranking(after, limit + 1)
            if not ranked and after is None and query.strip() and not await has_words(conn, query, configs):
                raise SearchRefused("q has no words to search by keyword: only stop words or punctuation")
        else:
            assert embed is not None
            space = next(iter(scoped.spaces.values()))
            vector = vectors.vector_literal(await embed(space, query))
            space_uids = scoped.jobs_in(space.id)
            if chosen == "semantic":
                ranked = await semantic.rank(conn, space, vector, space_uids, filters, limit + 1, after)
            else:
                by_words, statistics = await keyword_ranking(None, candidates)
                by_meaning = await semantic.rank(conn, space, vector, space_uids, filters, candidates, None)
                ranked = fusion.hybrid(by_words, by_meaning, after, limit + 1)
        page = ranked[:limit]
        rows = await snippets.hits(conn, [chunk_id for chunk_id, _ in page], positive_words(query))
    # Highlighted when a hit's snippet is read, after the transaction: the connection is back in the pool.
    scores = dict(page)
    hits = [
        SearchHit(
            chunk_id=r["id"],
            score=scores[r["id"]],
            text=r["content"],
            uri=r["uri"],
            title=r["title"],
            ordinal=r["ordinal"],
            page=r["page"],
            heading_path=r["heading_path"],
            namespace=r["namespace"],
            job=r["job"],
            metadata=r["metadata"],
            lexemes=r["lexemes"],
            config=r["config"],
        )
        for r in rows
    ]
    next_cursor = (
        cursors.encode_search(hits[-1].score, hits[-1].chunk_id, statistics) if hits and len(ranked) > limit else None
    )
    return SearchPage(hits=hits, next_cursor=next_cursor, mode=chosen)
