"""Search over chunks: keyword (full text), semantic (pgvector) and hybrid (a weighted sum of both).

Every mode takes the same filters and pages the same way: hits are ordered by (score desc, chunk id
asc) and a cursor is the last hit's (score, id), so a page never repeats or skips a hit ranked above
the cursor. Each hit carries its chunk's whole text for a RAG client, beside a `ts_headline` snippet.

Keyword ranking is Okapi BM25 (bm25.py, one definition for every path): any query word matches, rarer
words weigh more, and a word in the chunk's document title or heading path weighs more again (its
context field). A query is ranked on one of three paths, each there for a reason:
- **the search statistics** (lexicon.rank), when a bounded search's jobs have current ones: a few
  hundred postings per word instead of every match, which is what keeps common words fast at a
  million chunks. A query in websearch syntax ("a phrase", -word, or) adds a sample of its matches
  from the GIN index, because the lists hold words, not phrases.
- **the exact path** (_KEYWORD_SQL over the GIN index), every match ranked, when asked for
  (`ranked_matches=None`), or when the statistics cannot answer: a job has none yet (its first run),
  too many chunks were stored since the build, or a truncated list ran out before a page was full
  (then it ranks by the statistics' N and document frequencies, so the pages agree).
- **the bounded exact path** (the same SQL with `ranked_matches`): as the exact path, but the matches
  ranked and the document frequencies counted stop at the bound, rarest words first; only for jobs
  without current statistics, because counting every match of a common word is what the bound avoids.
All three rank by the same collection statistics (bm25.py), so a query scores the same before and
after a statistics build.
Semantic ranking is cosine similarity over the HNSW index of the searched jobs'
vector space, scanned iteratively so filters cannot starve a page. Hybrid fuses the best
`candidates` of each by their scores, each list's scaled to 0..1 (its worst candidate 0, its best 1):
score = 0.8 x keyword + 0.2 x semantic, a chunk missing from a list counting 0 there (_fuse).
"""

import base64
import contextlib
import functools
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from headrace.model import Embedding, search_defaults
from headrace.store import bm25, lexicon, snippets, vectors
from headrace.store.db import Connection, Pool

# Matches are delimited by sentinels that snippets.render turns into escaped HTML or plain text.
SNIPPET_START = snippets.START
SNIPPET_STOP = snippets.STOP
_HEADLINE_OPTIONS = f"StartSel={SNIPPET_START}, StopSel={SNIPPET_STOP}, MaxWords=35, MinWords=15, MaxFragments=2"
HYBRID_KEYWORD_WEIGHT = 0.8
"""Hybrid search's weight of the keyword score (the semantic score's is 1 minus it), both scaled to
0..1 within their lists. Chosen on the development halves of our evaluation sets (bench/retrieval.py,
docs/benchmarks.md), among reciprocal rank fusion (k 10 to 60, keyword weight 1 to 4) and weights 0.5
to 0.9: the only choice there that beat keyword alone on every corpus (MRR@10 +0.03 to +0.06); RRF
with weight 2, the previous default, trailed keyword alone by 0.04 overall. A form-adaptive weight
(less keyword for questions) did no better."""
_OPERATORS = re.compile(r'"|(?:^|\s)-\w|(?:^|\s)or(?:\s|$)', re.IGNORECASE)
"""Websearch syntax (a quoted phrase, -word, or): a keyword query that uses it matches as written."""
MAX_QUERY_TERMS = 32
"""Keyword ranking weighs a query's first 32 distinct words: each costs a document-frequency count."""

Mode = Literal["keyword", "semantic", "hybrid"]
MODES: tuple[Mode, ...] = ("keyword", "semantic", "hybrid")
QueryEmbedder = Callable[[vectors.Space, str], Awaitable[Sequence[float]]]


class InvalidCursor(ValueError):
    """A page cursor that this server did not hand out."""


class SearchRefused(ValueError):
    """A search that cannot run as asked, with the reason (the mode needs vectors the jobs lack, ...)."""


@dataclass(frozen=True)
class SearchFilter:
    """Which chunks a search may return. `namespaces=None` means every namespace."""

    namespaces: list[str] | None = None
    job: str | None = None
    job_uid: uuid.UUID | None = None
    uri_prefix: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class ScopedJob:
    uid: uuid.UUID
    namespace: str
    name: str
    config: str
    embedding: Embedding

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Scope:
    """The jobs a search covers and the vector spaces their chunks are embedded in."""

    jobs: list[ScopedJob]
    spaces: dict[int, vectors.Space] = field(default_factory=dict)
    space_of: dict[uuid.UUID, int] = field(default_factory=dict)
    statistics: bool = False
    """Whether the database has search statistics (lexicon.py; a schema before 0008 has none)."""

    def jobs_in(self, space_id: int) -> list[uuid.UUID]:
        return [uid for uid, sid in self.space_of.items() if sid == space_id]

    def describe_spaces(self) -> str:
        parts = []
        for space_id, space in sorted(self.spaces.items()):
            names = sorted(j.label for j in self.jobs if self.space_of.get(j.uid) == space_id)
            parts.append(f"{space.model} ({space.dimensions} dimensions): {', '.join(names)}")
        return "; ".join(parts)


@dataclass(frozen=True)
class SearchHit:
    chunk_id: int
    score: float
    snippet: str
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


@dataclass(frozen=True)
class SearchPage:
    hits: list[SearchHit]
    next_cursor: str | None
    mode: Mode = "keyword"


def encode_cursor(score: float, chunk_id: int, statistics: dict[str, Any] | None = None) -> str:
    """A cursor after the hit (score, chunk_id); keyword ranking's collection statistics ride along, so
    that later pages score every chunk as the first page did, while documents come and go."""
    fields: list[Any] = [score, chunk_id] + ([statistics] if statistics is not None else [])
    return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, int]:
    score, chunk_id, _ = _cursor_fields(cursor)
    return score, chunk_id


def cursor_statistics(cursor: str | None) -> dict[str, Any] | None:
    """The keyword-ranking statistics a cursor carries (None: rank by the current ones)."""
    return _cursor_fields(cursor)[2] if cursor else None


def _cursor_fields(cursor: str) -> tuple[float, int, dict[str, Any] | None]:
    try:
        fields = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        score, chunk_id, *rest = fields
        statistics = rest[0] if rest else None
        if len(rest) > 1 or not (statistics is None or isinstance(statistics, dict)):
            raise ValueError("unknown cursor fields")
        return float(score), int(chunk_id), statistics
    except (ValueError, TypeError) as exc:
        raise InvalidCursor("cursor is not one this server returned") from exc


async def scope(conn: Pool | Connection, where: SearchFilter) -> Scope:
    """The jobs `where` selects, and for each the vector space its spec names, when it exists."""
    # One round trip: the jobs, whether vectors can exist, and every vector space (a handful of rows).
    rows = await conn.fetch(
        """
        SELECT uid, namespace, name, text_search_config::text AS config, spec->'embedding' AS embedding,
               to_regclass('headrace.embeddings') IS NOT NULL AS vectors,
               to_regclass('headrace.search_statistics') IS NOT NULL AS statistics,
               (SELECT jsonb_agg(jsonb_build_array(id, model, dimensions)) FROM headrace.embedding_spaces) AS spaces
        FROM headrace.jobs
        -- Retained data (its IngestionJob deleted) is not served until a new IngestionJob adopts it.
        WHERE deleted_at IS NULL
          AND ($1::text[] IS NULL OR namespace = ANY($1::text[]))
          AND ($2::text IS NULL OR name = $2) AND ($3::uuid IS NULL OR uid = $3)
        """,
        where.namespaces,
        where.job,
        where.job_uid,
    )
    jobs = [
        ScopedJob(r["uid"], r["namespace"], r["name"], r["config"], Embedding.model_validate(r["embedding"] or {}))
        for r in rows
    ]
    keys = {j.uid: key for j in jobs if (key := _space_key(j.embedding)) is not None}
    statistics = bool(rows and rows[0]["statistics"])
    if not keys or not rows[0]["vectors"]:
        return Scope(jobs, statistics=statistics)
    spaces = (vectors.Space(int(i), str(m), int(d)) for i, m, d in rows[0]["spaces"] or [])
    found = {key: space for space in spaces if (key := (space.model, space.dimensions)) in keys.values()}
    space_of = {uid: found[key].id for uid, key in keys.items() if key in found}
    return Scope(jobs, {s.id: s for s in found.values()}, space_of, statistics)


def _space_key(embedding: Embedding) -> tuple[str, int] | None:
    if embedding.model_name is None or embedding.dimensions is None:
        return None
    return embedding.model_name, embedding.dimensions


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


_KEYWORD_SQL = rf"""
WITH pinned AS (
    -- The statistics a first page ranked by, carried in its cursor (NULL on a first page).
    SELECT $11::jsonb AS s
),
terms AS (
    -- The query's distinct words (its first MAX_QUERY_TERMS; $13: not those negated with -word,
    -- lexicon.positive_words), normalised by each searched
    -- text-search config as its chunks were (stemmed, stop words dropped), each as a one-word
    -- tsquery (quoted, so that no word is read as an operator).
    SELECT cfg, lexeme, ('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''')::tsquery AS query
    FROM (
        SELECT c.cfg, t.lexeme, row_number() OVER (PARTITION BY c.cfg ORDER BY t.positions[1], t.lexeme) AS nth
        FROM (SELECT DISTINCT unnest($2::text[])::regconfig AS cfg) c
        CROSS JOIN LATERAL unnest(to_tsvector(c.cfg, $13)) AS t
    ) words
    WHERE nth <= $12
),
matched AS MATERIALIZED (
    -- One scan per word, through the GIN index, of its matches in the searched jobs up to
    -- `ranked_matches`: their count is the word's document frequency (a word in more chunks gets the
    -- floor rarity, so counting stays bounded), and those the filters keep, in the scan's order, are
    -- its candidates below, so a word's matches are found (bitmap and heap) once, not twice.
    SELECT t.*, m.found, coalesce(m.ids, '{{}}') AS ids
    FROM terms t
    CROSS JOIN LATERAL (
        SELECT count(*) AS found, array_agg(x.id) FILTER (WHERE x.kept) AS ids
        FROM (
            SELECT c0.id, ($4::text IS NULL AND $5::jsonb IS NULL) OR EXISTS (
                SELECT FROM headrace.documents d WHERE d.id = c0.document_id AND d.job_uid = c0.job_uid
                  AND ($4::text IS NULL OR starts_with(d.uri, $4)) AND ($5::jsonb IS NULL OR d.metadata @> $5)
            ) AS kept
            FROM headrace.chunks c0
            WHERE c0.tsv @@ t.query AND c0.config = t.cfg AND c0.job_uid = ANY($3::uuid[])
            LIMIT $9::bigint OFFSET 0
        ) x
    ) m
),
counted AS (
    -- A first page's document frequencies are the counts; a later page's those its cursor carries.
    SELECT t.*, coalesce(((SELECT s FROM pinned) -> 'df' ->> (t.cfg::text || ' ' || t.lexeme))::bigint, t.found) AS df
    FROM matched t
),
collection AS (
    -- BM25's collection statistics (bm25.py): N and the average length of the searched jobs' chunks,
    -- summed over their documents, so IDF is BM25's over what the caller may search (nothing of
    -- another namespace's), and a chunk scores as it does from the search statistics; or those a
    -- first page ranked by, carried in its cursor.
    SELECT coalesce(((SELECT s FROM pinned) ->> 'n')::float8,
                    greatest(t.chunks, (SELECT max(df) FROM counted), 1)::float8) AS n,
           coalesce(((SELECT s FROM pinned) ->> 'avglen')::float8,
                    {bm25.average_length("t.total_length", "t.chunks")}) AS avglen
    FROM ({bm25.collection("$3::uuid[]")}) t
),
weighted AS (
    -- BM25's IDF, and the order in which words give candidates: the rarest first.
    SELECT w.*, {bm25.idf("c.n", "w.df")} AS idf, row_number() OVER (ORDER BY w.df, w.lexeme) AS rarity,
           row_number() OVER (PARTITION BY w.cfg ORDER BY w.df, w.lexeme) AS among
    FROM counted w, collection c
),
passes AS (
    -- Where candidates come from, in order, until `ranked_matches` of them are found: every match of
    -- each word under the cap, rarest first (a word that rare costs little to read whole); then, when
    -- some word is over the cap, the chunks holding every word (the GIN index's AND), then those
    -- holding two of the six rarest words, and only then a sample of each common word's matches. So a
    -- chunk sharing more, and rarer, words with the query is a candidate before one sharing a common
    -- word only. A query in websearch syntax ("a phrase", -word, or) is taken as written: its
    -- matches are the only candidates. A pass reads a word's matches found above (`ids`) or scans the
    -- index for `query`: a common word's sample is scanned again only under filters (which may keep
    -- few of its first matches), and a query of one word has no AND pass (its sample is the same).
    SELECT 0 AS pass, cfg, websearch_to_tsquery(cfg, $1) AS query, NULL::bigint[] AS ids
    FROM (SELECT DISTINCT unnest($2::text[])::regconfig AS cfg) c WHERE $10
    UNION ALL
    SELECT rarity, cfg, query, ids FROM weighted WHERE NOT $10 AND ($9::bigint IS NULL OR df < $9::bigint)
    UNION ALL
    SELECT 1000, cfg, plainto_tsquery(cfg, $1), NULL FROM (SELECT cfg FROM weighted GROUP BY cfg HAVING count(*) > 1) c
    WHERE NOT $10 AND (SELECT max(df) FROM weighted) >= $9::bigint
    UNION ALL
    SELECT 2000 + 100 * a.rarity + b.rarity, a.cfg, a.query && b.query, NULL
    FROM weighted a JOIN weighted b ON b.cfg = a.cfg AND b.among < 7 AND a.among < b.among
    WHERE NOT $10 AND (SELECT max(df) FROM weighted) >= $9::bigint
    UNION ALL
    SELECT 10000 + rarity, cfg, query,
           CASE WHEN ($4::text IS NULL AND $5::jsonb IS NULL) OR found < $9::bigint THEN ids END
    FROM weighted WHERE NOT $10 AND df >= $9::bigint
),
candidates AS (
    SELECT DISTINCT id FROM (
        SELECT m.id
        FROM (SELECT * FROM passes ORDER BY pass) p
        CROSS JOIN LATERAL (
            SELECT unnest(p.ids) AS id WHERE p.ids IS NOT NULL
            UNION ALL
            -- LATERAL with OFFSET 0: a bitmap scan of the GIN index, never `@@` on every chunk.
            (SELECT c0.id FROM headrace.chunks c0
             JOIN headrace.documents d ON d.id = c0.document_id AND d.job_uid = c0.job_uid
             WHERE p.ids IS NULL AND c0.tsv @@ p.query AND c0.config = p.cfg AND c0.job_uid = ANY($3::uuid[])
               AND ($4::text IS NULL OR starts_with(d.uri, $4))
               AND ($5::jsonb IS NULL OR d.metadata @> $5)
             LIMIT $9::bigint OFFSET 0)
        ) m
        LIMIT $9::bigint
    ) found
),
lengths AS MATERIALIZED (
    -- A chunk's length counts distinct words, which a tsvector knows without reading its positions.
    -- Each query word's frequency in the chunk is the count of its positions: setweight marks the
    -- query's words and ts_filter keeps them. setweight's result is a copy in memory, so the chunk's
    -- stored tsvector is fetched (and decompressed) once for both.
    -- Its context field (bm25.py, "Fields") too, once per chunk (so materialized), and read word by
    -- word only when it holds some query word (one `@@` with the words or'ed).
    SELECT c.id, c.config, length(w.tsv) AS len, ts_filter(w.tsv, '{{a}}') AS hits,
           CASE WHEN x.context @@ v.query THEN {bm25.fields("x.context", "c.config", "weighted")}
                ELSE 0::float8 END AS fields
    FROM candidates k
    JOIN headrace.chunks c ON c.id = k.id
    LEFT JOIN (SELECT cfg, array_agg(lexeme) AS lexemes, string_agg(query::text, ' | ')::tsquery AS query
               FROM weighted GROUP BY cfg) v ON v.cfg = c.config
    CROSS JOIN LATERAL (SELECT coalesce(setweight(c.tsv, 'A', v.lexemes), c.tsv) AS tsv OFFSET 0) w
    CROSS JOIN LATERAL (SELECT {bm25.context("c")} AS context OFFSET 0) x
),
frequencies AS MATERIALIZED (
    SELECT l.id, l.len, l.config, l.fields, u.lexeme, cardinality(u.positions) AS tf
    FROM lengths l
    CROSS JOIN LATERAL unnest(l.hits) u
),
scored AS (
    -- Okapi BM25 (bm25.py), summed in a fixed order so that a score is the same on every page, plus
    -- the chunk's context field.
    SELECT f.id, sum({bm25.weight("w.idf", "f.tf", "f.len", "col.avglen")} ORDER BY w.lexeme) + f.fields AS score
    FROM frequencies f
    JOIN weighted w ON w.cfg = f.config AND w.lexeme = f.lexeme
    CROSS JOIN collection col
    GROUP BY f.id, f.fields
)
SELECT id, score, (
    SELECT jsonb_build_object(
        'n', (SELECT n FROM collection),
        'avglen', (SELECT avglen FROM collection),
        'df', (SELECT jsonb_object_agg(cfg::text || ' ' || lexeme, df) FROM counted)
    )
) AS statistics
FROM scored
WHERE $6::float8 IS NULL OR score < $6::float8 OR (score = $6::float8 AND id > $7)
ORDER BY score DESC, id ASC
LIMIT $8
"""


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


_NO_MATCH_HEADLINE_CHARS = 1000
"""ts_headline parses the whole text it is given, and is most of a semantic page's database time
(EXPLAIN at a million chunks: 2.2 ms of the hits query, against 0.5 ms for the HNSW search). A chunk
holding none of the query's words gets its first words as its snippet, so it is given only the
start of its text: the same snippet (checked on 4,046 such chunks of the Python docs) for less."""

_HITS_SQL = f"""
SELECT c.id, c.ordinal, c.page, c.heading_path, c.content, d.uri, d.title, d.metadata, j.namespace, j.name AS job,
       ts_headline(
           c.config,
           translate(
               CASE WHEN tsvector_to_array(c.tsv) && tsvector_to_array(to_tsvector(c.config, $2)) THEN c.content
                    ELSE left(c.content, {_NO_MATCH_HEADLINE_CHARS}) END,
               '{SNIPPET_START}{SNIPPET_STOP}', ''
           ),
           websearch_to_tsquery(c.config, $2),
           '{_HEADLINE_OPTIONS}'
       ) AS snippet
FROM unnest($1::bigint[]) WITH ORDINALITY AS p(id, position)
JOIN headrace.chunks c ON c.id = p.id
JOIN headrace.documents d ON d.id = c.document_id AND d.job_uid = c.job_uid
JOIN headrace.jobs j ON j.uid = c.job_uid
ORDER BY p.position
"""


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


@asynccontextmanager
async def _read_only_transaction(pool: Pool, timeout_ms: int) -> AsyncIterator[Connection]:
    """A pooled connection in a read-only transaction with the search's settings, begun in one round
    trip (BEGIN and the SETs in one simple query): a round trip is a context switch into Postgres,
    and on a busy machine each one costs the search about a millisecond."""
    async with pool.acquire() as conn:
        await conn.execute("BEGIN READ ONLY; " + transaction_settings(timeout_ms))
        try:
            yield conn
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
    (lexicon.rank: a few hundred postings per query word); None ranks every match exactly, always."""
    after = decode_cursor(cursor) if cursor else None
    async with _read_only_transaction(pool, timeout_ms) as conn:
        scoped = await scope(conn, where)
        chosen = choose_mode(mode if (mode is not None or embed is not None) else "keyword", scoped)
        if chosen != "keyword" and embed is None:
            raise SearchRefused(f"mode {chosen} needs a query embedder")
        uids = [j.uid for j in scoped.jobs]
        configs = sorted({j.config for j in scoped.jobs})
        filters = (where.uri_prefix, where.metadata)
        ranked: list[tuple[int, float]]
        statistics: dict[str, Any] | None = None
        keyword_ranking = functools.partial(
            _keyword,
            conn,
            query,
            configs,
            uids,
            filters,
            ranked_matches=ranked_matches,
            statistics=cursor_statistics(cursor),
            use_statistics=scoped.statistics and ranked_matches is not None,
        )
        if chosen == "keyword":
            ranked, statistics = await keyword_ranking(after, limit + 1)
            if not ranked and after is None and query.strip() and not await _has_words(conn, query, configs):
                raise SearchRefused("q has no words to search by keyword: only stop words or punctuation")
        else:
            assert embed is not None
            space = next(iter(scoped.spaces.values()))
            vector = vectors.vector_literal(await embed(space, query))
            space_uids = scoped.jobs_in(space.id)
            await conn.execute(
                f"SET LOCAL hnsw.ef_search = {max(int(ef_search), 1)}; SET LOCAL hnsw.iterative_scan = strict_order"
            )
            if chosen == "semantic":
                rows = await conn.fetch(
                    _semantic_sql(space),
                    vector,
                    space.id,
                    space_uids,
                    *filters,
                    limit + 1,
                    *(after or (None, None)),
                )
                ranked = [(r["id"], float(r["score"])) for r in rows]
            else:
                keyword, statistics = await keyword_ranking(None, candidates)
                rows = await conn.fetch(
                    _semantic_sql(space), vector, space.id, space_uids, *filters, candidates, None, None
                )
                semantic = [(r["id"], float(r["score"])) for r in rows]
                weights = [(keyword, HYBRID_KEYWORD_WEIGHT), (semantic, 1 - HYBRID_KEYWORD_WEIGHT)]
                ranked = _fuse(weights, after, limit + 1)
        page = ranked[:limit]
        rows = await conn.fetch(_HITS_SQL, [chunk_id for chunk_id, _ in page], query) if page else []
    scores = dict(page)
    hits = [
        SearchHit(
            chunk_id=r["id"],
            score=scores[r["id"]],
            snippet=r["snippet"],
            text=r["content"],
            uri=r["uri"],
            title=r["title"],
            ordinal=r["ordinal"],
            page=r["page"],
            heading_path=r["heading_path"],
            namespace=r["namespace"],
            job=r["job"],
            metadata=r["metadata"],
        )
        for r in rows
    ]
    next_cursor = encode_cursor(hits[-1].score, hits[-1].chunk_id, statistics) if hits and len(ranked) > limit else None
    return SearchPage(hits=hits, next_cursor=next_cursor, mode=chosen)


async def _keyword(
    conn: Connection,
    query: str,
    configs: list[str],
    uids: list[uuid.UUID],
    filters: tuple[str | None, dict[str, Any] | None],
    after: tuple[float, int] | None,
    limit: int,
    ranked_matches: int | None,
    statistics: dict[str, Any] | None,
    *,
    use_statistics: bool,
) -> tuple[list[tuple[int, float]], dict[str, Any] | None]:
    """Keyword ranking and the statistics it ranked by: from the jobs' search statistics when they can
    answer (lexicon.rank: a few hundred postings per query word), else by BM25 over the GIN index
    (_KEYWORD_SQL, the exact path), with the same statistics so that every page scores alike."""
    operators = bool(_OPERATORS.search(query))
    fast = (
        await lexicon.rank(
            conn,
            query,
            configs,
            uids,
            filters,
            after,
            limit,
            operators=operators,
            statistics=statistics,
            max_terms=MAX_QUERY_TERMS,
        )
        if use_statistics
        else None
    )
    if fast is not None and fast.complete:
        return fast.hits, fast.statistics
    if fast is not None:
        statistics = fast.statistics
    rows = await conn.fetch(
        _KEYWORD_SQL,
        query,
        configs,
        uids,
        *filters,
        *(after or (None, None)),
        limit,
        ranked_matches,
        operators,
        statistics,
        MAX_QUERY_TERMS,
        lexicon.positive_words(query),
    )
    ranked = [(r["id"], float(r["score"])) for r in rows]
    return ranked, (rows[0]["statistics"] if rows else statistics)


async def _has_words(conn: Connection, query: str, configs: list[str]) -> bool:
    """Whether `query` has a word keyword search can match in any of `configs` (not only stop words)."""
    found = await conn.fetchval(
        "SELECT bool_or(to_tsvector(cfg::regconfig, $1) <> ''::tsvector) FROM unnest($2::text[]) cfg", query, configs
    )
    return bool(found) or not configs


def _fuse(
    rankings: list[tuple[list[tuple[int, float]], float]], after: tuple[float, int] | None, limit: int
) -> list[tuple[int, float]]:
    """A weighted sum of best-first rankings' scores, each ranking's scaled to 0..1 (min-max: its last
    candidate 0, its first 1; all 1 when they are equal), then the keyset page after `after`. Scores,
    not ranks: a keyword list whose best chunk stands far above the rest keeps it first, where rank
    fusion would let a semantic neighbour overtake it."""
    fused: dict[int, float] = {}
    for ranking, weight in rankings:
        if not ranking:
            continue
        best, worst = ranking[0][1], ranking[-1][1]
        for chunk_id, score in ranking:
            scaled = (score - worst) / (best - worst) if best > worst else 1.0
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight * scaled
    # Scores go through a JSON cursor and back: round so a float's repr cannot shift an equal score.
    ordered = sorted(((cid, round(score, 12)) for cid, score in fused.items()), key=lambda h: (-h[1], h[0]))
    if after is not None:
        ordered = [h for h in ordered if h[1] < after[0] or (h[1] == after[0] and h[0] > after[1])]
    return ordered[:limit]
