"""Search statistics: per job, every lexeme's document frequency and its best postings.

Keyword search ranks by BM25, which needs each query word's document frequency and, for each
candidate chunk, the word's frequency in it and the chunk's length. Counting them from the GIN index at
query time costs in proportion to the number of matches: a bitmap of every match of a common word,
then a read of thousands of tsvectors. These statistics are that work done once per run: per job and
lexeme, its document frequency and its postings capped at `cap`, best first by the lexeme's BM25 term
weight (the "champion list", Manning et al., Introduction to Information Retrieval 7.1.3); complete when
the lexeme is in at most `cap` chunks. A search then reads one row per query word (`rank`, the
statistics path of keyword.py).

The statistics describe the job as it was at its last finished run. Chunks stored later (ids above the
watermark, the "delta") are matched directly by search while they are few; deleted ones drop out when
a list is joined to the chunks. They are rebuilt when a run finishes: by the operator (`refresh`, one
build at a time per job across replicas) and at the end of `headrace run`. Whether a job's
statistics are current (`current`) is decided here only: the operator's builds and the metrics read it.
"""

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from headrace.store.db import Connection, Pool
from headrace.store.search import bm25, query

log = logging.getLogger(__name__)

CAP = 1024
"""R, the longest postings list kept: a query word reads at most this many postings per job. Measured
against 256 (docs/benchmarks.md, 2026-11-30 09:09 runs): hybrid search from the statistics keeps
0.773 MRR@10 / 0.882 Recall@10 on the paraphrased known-item queries against 0.759 / 0.853 at 256
(0.776 / 0.887 ranking every match), for 1.2-1.7x the keyword latency at a million chunks and 1.7x
the table's size."""

BUILD_TIMEOUT_SECONDS = 3600.0
"""A build reads every chunk of the job once (about a minute per 250,000 chunks on one core)."""

BUILD_WORK_MEM = "512MB"
"""The build's sort and hash memory, for its one transaction (docs/operations.md, "Search statistics")."""

_LOCK_CLASS = 0x6C6578  # "lex": the advisory-lock class of builds, keyed by the job within it
_LOCK_SQL = "SELECT pg_try_advisory_xact_lock($1, hashtext($2::uuid::text))"

_POSTINGS_SQL = f"""
INSERT INTO headrace.lexemes (job_uid, config, lexeme, df, ids, tfs, lens)
SELECT $1, g.config, g.lexeme, g.df, b.ids, b.tfs, b.lens
FROM (
    -- Every posting of the job, grouped by lexeme in a hash table (no sort of every posting): a
    -- lexeme's frequency in a chunk is its count of positions and a chunk's length its count of
    -- distinct lexemes, as search counts them; the tsvector is read once for both.
    SELECT c.config, u.lexeme, count(*)::int AS df, array_agg(c.id) AS ids, array_agg(u.tf) AS tfs,
           array_agg(u.len) AS lens
    FROM headrace.chunks c
    CROSS JOIN LATERAL (
        SELECT t.lexeme, cardinality(t.positions)::int AS tf, (count(*) OVER ())::int AS len FROM unnest(c.tsv) t
    ) u
    WHERE c.job_uid = $1
    GROUP BY c.config, u.lexeme
) g
CROSS JOIN LATERAL (
    -- The lexeme's best `cap` postings by BM25's term weight (bm25.py) at the job's average length: a
    -- top-N sort of each lexeme's postings, ties by chunk id.
    SELECT array_agg(p.id) AS ids, array_agg(p.tf) AS tfs, array_agg(p.len) AS lens
    FROM (
        SELECT p.id, p.tf, p.len FROM unnest(g.ids, g.tfs, g.lens) AS p(id, tf, len)
        ORDER BY {bm25.term_weight("p.tf", "p.len", "$2::float8")} DESC, p.id
        LIMIT $3
    ) p
) b
"""


@dataclass(frozen=True)
class Built:
    """What one build wrote."""

    job_uid: uuid.UUID
    chunks: int
    lexemes: int
    seconds: float


async def build(pool: Pool, job_uid: uuid.UUID, *, cap: int = CAP) -> Built | None:
    """Replace the job's statistics with ones of its chunks now, in one transaction (searches see the
    old ones or the new, never a mix). None when another process is building this job's right now."""
    started = time.perf_counter()
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        if not await conn.fetchval(_LOCK_SQL, _LOCK_CLASS, job_uid):
            return None
        # The grouping holds every posting of the job in memory (about 40 bytes each: 770 MB for 250,000
        # chunks of 78 lexemes); beyond work_mem x hash_mem_multiplier (2) it spills to disk, slower.
        await conn.execute(f"SET LOCAL work_mem = '{BUILD_WORK_MEM}'; SET LOCAL jit = off")
        # The same chunks as at the last build (a run that changed nothing: chunk ids only grow, so the
        # same count and highest id are the same set): the statistics only become the last run's.
        unchanged = await conn.fetchrow(
            """
            UPDATE headrace.search_statistics s
            SET run = (SELECT coalesce(max(run), 0) FROM headrace.runs WHERE job_uid = $1 AND finished_at IS NOT NULL),
                built_at = now()
            FROM (SELECT count(*) AS chunks, coalesce(max(id), 0) AS watermark
                  FROM headrace.chunks WHERE job_uid = $1) c
            WHERE s.job_uid = $1 AND s.chunks = c.chunks AND s.watermark = c.watermark AND s.cap = $2
            RETURNING s.chunks, (SELECT count(*) FROM headrace.lexemes WHERE job_uid = $1) AS lexemes
            """,
            job_uid,
            cap,
        )
        if unchanged is not None:
            built = Built(job_uid, int(unchanged["chunks"]), int(unchanged["lexemes"]), time.perf_counter() - started)
            log.info("Kept search statistics", extra={"job_uid": str(job_uid), "chunks": built.chunks})
            return built
        # The collection statistics as search computes them (bm25.py), and the highest chunk id covered.
        totals = await conn.fetchrow(
            f"""
            SELECT t.chunks, t.total_length AS total, {bm25.average_length("t.total_length", "t.chunks")} AS avglen,
                   (SELECT coalesce(max(id), 0) FROM headrace.chunks WHERE job_uid = $1) AS watermark,
                   (SELECT coalesce(max(run), 0) FROM headrace.runs
                    WHERE job_uid = $1 AND finished_at IS NOT NULL) AS run
            FROM ({bm25.collection("ARRAY[$1::uuid]")}) t
            """,
            job_uid,
        )
        assert totals is not None
        await conn.execute("DELETE FROM headrace.lexemes WHERE job_uid = $1", job_uid)
        status = await conn.execute(_POSTINGS_SQL, job_uid, totals["avglen"], cap, timeout=BUILD_TIMEOUT_SECONDS)
        seconds = time.perf_counter() - started
        await conn.execute(
            """
            INSERT INTO headrace.search_statistics AS s
                (job_uid, chunks, total_length, watermark, cap, run, built_at, build_seconds)
            VALUES ($1, $2, $3, $4, $5, $6, now(), $7)
            ON CONFLICT (job_uid) DO UPDATE
            SET chunks = excluded.chunks, total_length = excluded.total_length, watermark = excluded.watermark,
                cap = excluded.cap, run = excluded.run, built_at = excluded.built_at,
                build_seconds = excluded.build_seconds
            """,
            job_uid,
            totals["chunks"],
            totals["total"],
            totals["watermark"],
            cap,
            totals["run"],
            seconds,
        )
    built = Built(job_uid, int(totals["chunks"]), int(status.split()[-1]), seconds)
    log.info(
        "Built search statistics",
        extra={"job_uid": str(job_uid), "chunks": built.chunks, "lexemes": built.lexemes, "seconds": round(seconds, 1)},
    )
    return built


def current(job: str) -> str:
    """Whether the statistics of the job aliased `job` (a `headrace.jobs` row) cover its last finished
    run, as SQL: false when it has none, or no run has finished."""
    return f"""coalesce(
        (SELECT s.run FROM headrace.search_statistics s WHERE s.job_uid = {job}.uid)
        >= (SELECT max(r.run) FROM headrace.runs r WHERE r.job_uid = {job}.uid AND r.finished_at IS NOT NULL),
        false)"""


_STALE = f"""
    -- No run in progress (a run's chunks are still changing), a run finished, and statistics not
    -- current: missing or older than the last finished run.
    NOT EXISTS (SELECT FROM headrace.runs r WHERE r.job_uid = j.uid AND r.finished_at IS NULL)
    AND EXISTS (SELECT FROM headrace.runs r WHERE r.job_uid = j.uid AND r.finished_at IS NOT NULL)
    AND NOT {current("j")}
"""


async def stale(conn: Pool | Connection, job_uid: uuid.UUID) -> bool:
    """Whether the job's statistics are due: it has no run in progress, and they are missing or older
    than its last finished run."""
    return bool(await conn.fetchval(f"SELECT {_STALE} FROM headrace.jobs j WHERE j.uid = $1", job_uid))


async def due(pool: Pool) -> list[uuid.UUID]:
    """The live jobs whose statistics are due (see `stale`)."""
    rows = await pool.fetch(f"SELECT j.uid FROM headrace.jobs j WHERE j.deleted_at IS NULL AND {_STALE} ORDER BY j.uid")
    return [r["uid"] for r in rows]


async def refresh(pool: Pool, job_uid: uuid.UUID, *, cap: int = CAP) -> Built | None:
    """Build the job's statistics when they are due (level-triggered: a build cut short by a restart
    is simply due again). None when they were current or another process is building them."""
    if not await stale(pool, job_uid):
        return None
    return await build(pool, job_uid, cap=cap)


DELTA_LIMIT = 2000
"""The most chunks stored since a job's statistics were built (per search) that search matches directly;
beyond it, a search of that job takes the exact path (keyword.EXACT_SQL) until the next build."""
RESCORE_EXTRA = 32
"""Candidates beyond the page's hits whose scores are computed exactly from their tsvectors."""

CHECKED = 500
"""How many of the best list candidates a query in websearch syntax is checked against (reading each
one's tsvector) before a sample of its matches is read from the GIN index instead."""
SAMPLE = 100
"""How many of a websearch query's matches (a phrase, -word, or) are read from the GIN index and ranked
when its best list candidates hold too few of them."""

_READY_SQL = """
-- Whether every searched job has statistics, and how many chunks were stored since (counted up to
-- the limit, per job, from the (job_uid, id) index: the delta).
-- When they can answer, the statistics query that follows runs on its generic plan (set here, saving a
-- round trip): planning that query for each search's values costs more than running it, and its plan
-- does not depend on them. It sets the transaction's own mode (`previous`) back as it ends.
SELECT missing, delta, current_setting('plan_cache_mode') AS previous,
       set_config('plan_cache_mode',
                  CASE WHEN missing = 0 AND delta <= $2 THEN 'force_generic_plan'
                       ELSE current_setting('plan_cache_mode') END,
                  true) AS plans
FROM (
    SELECT count(*) FILTER (WHERE s.job_uid IS NULL) AS missing, coalesce(sum(d.n), 0) AS delta
    FROM unnest($1::uuid[]) AS u(uid)
    LEFT JOIN headrace.search_statistics s ON s.job_uid = u.uid
    LEFT JOIN LATERAL (
        SELECT count(*) AS n FROM (
            SELECT FROM headrace.chunks c WHERE c.job_uid = s.job_uid AND c.id > s.watermark LIMIT $2::int + 1
        ) x
    ) d ON true
) ready
"""

SAMPLE_SQL = """
-- The first $6 matches of a query in websearch syntax, through the GIN index (a phrase or an AND
-- skips through a common word's postings by the rarer word's), under the filters.
SELECT coalesce(array_agg(m.id), '{}') FROM (SELECT DISTINCT unnest($2::text[])::regconfig AS cfg) q
CROSS JOIN LATERAL (
    SELECT c.id FROM headrace.chunks c
    JOIN headrace.documents d ON d.id = c.document_id
    WHERE c.tsv @@ websearch_to_tsquery(q.cfg, $1) AND c.config = q.cfg AND c.job_uid = ANY($3::uuid[])
      AND ($4::text IS NULL OR starts_with(d.uri, $4)) AND ($5::jsonb IS NULL OR d.metadata @> $5)
    LIMIT $6 OFFSET 0
) m
"""


def _bm25(tf: str, length: str) -> str:
    """A posting's BM25 weight for the word `w`, in the collection `col` (bm25.py)."""
    return bm25.weight("w.idf", tf, length, "col.avglen")


STATISTICS_SQL = rf"""
WITH pinned AS (
    SELECT $11::jsonb AS s
),
terms AS (
    -- The query's distinct words as keyword.EXACT_SQL takes them, from its positive part ($13: the
    -- words not negated with -word).
    SELECT cfg, lexeme FROM (
        SELECT c.cfg, t.lexeme, row_number() OVER (PARTITION BY c.cfg ORDER BY t.positions[1], t.lexeme) AS nth
        FROM (SELECT DISTINCT unnest($2::text[])::regconfig AS cfg) c
        CROSS JOIN LATERAL unnest(to_tsvector(c.cfg, $13)) AS t
    ) words
    WHERE nth <= $12
),
lists AS MATERIALIZED (
    -- One primary-key lookup per (job, word): its document frequency and its best postings.
    SELECT t.cfg, t.lexeme, l.df, l.ids, l.tfs, l.lens, cardinality(l.ids) < l.df AS truncated
    FROM terms t
    JOIN headrace.lexemes l ON l.job_uid = ANY($3::uuid[]) AND l.config = t.cfg AND l.lexeme = t.lexeme
),
delta AS MATERIALIZED (
    -- The chunks stored since each job's build (at most DELTA_LIMIT, checked before), matched
    -- and counted directly: each word's frequency in them and their lengths.
    SELECT c.id, c.config AS cfg, u.lexeme, cardinality(u.positions) AS tf, length(c.tsv) AS len
    FROM headrace.search_statistics s
    JOIN headrace.chunks c ON c.job_uid = s.job_uid AND c.id > s.watermark
    CROSS JOIN LATERAL unnest(c.tsv) AS u
    WHERE s.job_uid = ANY($3::uuid[]) AND $14::bigint > 0
      AND (c.config, u.lexeme) IN (SELECT cfg, lexeme FROM terms)
),
collection AS (
    -- N and the average length of the searched jobs (the delta counted in N), or those a first page
    -- ranked by, carried in its cursor.
    SELECT coalesce(((SELECT s FROM pinned) ->> 'n')::float8, (sum(s.chunks) + $14::bigint)::float8) AS n,
           coalesce(((SELECT s FROM pinned) ->> 'avglen')::float8,
                    {bm25.average_length("sum(s.total_length)", "sum(s.chunks)")}) AS avglen
    FROM headrace.search_statistics s WHERE s.job_uid = ANY($3::uuid[])
),
counted AS (
    SELECT t.cfg, t.lexeme,
           coalesce(((SELECT s FROM pinned) -> 'df' ->> (t.cfg::text || ' ' || t.lexeme))::bigint,
                    (SELECT coalesce(sum(l.df), 0) FROM lists l WHERE l.cfg = t.cfg AND l.lexeme = t.lexeme)
                    + (SELECT count(*) FROM delta d WHERE d.cfg = t.cfg AND d.lexeme = t.lexeme)) AS df
    FROM terms t
),
weighted AS (
    -- IDF, and the most a chunk missing from the word's truncated list can weigh: its list's last
    -- (worst) posting's weight. A chunk missing from a complete list does not hold the word.
    SELECT w.cfg, w.lexeme, w.df, w.idf, coalesce(b.bound, 0) AS bound
    FROM (SELECT k.*, {bm25.idf("col.n", "k.df")} AS idf FROM counted k, collection col) w
    CROSS JOIN collection col
    LEFT JOIN LATERAL (
        SELECT max({_bm25("l.tfs[cardinality(l.ids)]", "l.lens[cardinality(l.ids)]")}) AS bound
        FROM lists l WHERE l.cfg = w.cfg AND l.lexeme = w.lexeme AND l.truncated
    ) b ON true
),
weights AS (
    -- Each posting's weight for its word (BM25's term weight times IDF), list by list: the word's
    -- IDF and bound are joined to its few lists, not to each of their postings.
    SELECT p.id, {_bm25("p.tf", "p.len")} AS weight, w.bound
    FROM lists l
    JOIN weighted w ON w.cfg = l.cfg AND w.lexeme = l.lexeme
    CROSS JOIN collection col
    CROSS JOIN LATERAL unnest(l.ids, l.tfs, l.lens) AS p(id, tf, len)
    UNION ALL
    SELECT d.id, {_bm25("d.tf", "d.len")}, w.bound
    FROM delta d
    JOIN weighted w ON w.cfg = d.cfg AND w.lexeme = d.lexeme
    CROSS JOIN collection col
),
bounded AS (
    -- Each candidate's score from the lists (a lower bound: exact unless a word's list was truncated),
    -- and an upper bound adding, for each truncated word whose list lacks it, that list's worst weight.
    -- The upper bound adds the most a context field can (bm25.py, "Fields"). Both only choose and skip
    -- candidates (the scores come from `scored`), so they are summed in any order.
    SELECT id, sum(weight) AS lower,
           sum(weight - bound) + (SELECT sum(idf * bound) + sum(idf) * {bm25.TITLE_WEIGHT + bm25.HEADING_WEIGHT!r}
                                  FROM weighted) AS upper
    FROM weights
    GROUP BY id
),
eligible AS MATERIALIZED (
    -- Those the filters keep and that may rank after the cursor (whose score is at least `lower`).
    SELECT b.id, b.upper FROM bounded b
    WHERE $9::int > 0 AND ($6::float8 IS NULL OR b.lower <= $6::float8 + 1e-9 * abs($6::float8))
      AND (($4::text IS NULL AND $5::jsonb IS NULL) OR EXISTS (
          SELECT FROM headrace.chunks c JOIN headrace.documents d ON d.id = c.document_id
          WHERE c.id = b.id AND ($4::text IS NULL OR starts_with(d.uri, $4)) AND ($5::jsonb IS NULL OR d.metadata @> $5)
      ))
),
written AS (
    -- A query in websearch syntax as each config reads it, parsed once.
    SELECT cfg, websearch_to_tsquery(cfg, $1) AS query FROM (SELECT DISTINCT unnest($2::text[])::regconfig AS cfg) c
    WHERE $10
),
sample AS (
    -- A query in websearch syntax whose best list candidates held too few matches: a sample of its
    -- matches (SAMPLE_SQL), ranked beside them.
    SELECT unnest($15::bigint[]) AS id
),
best AS (
    -- The best $9 by upper bound; for a query in websearch syntax, the best $9 it matches as written,
    -- checked in that order until found, among the first CHECKED (the subquery's order feeds the
    -- LIMIT, so checking stops there).
    SELECT e.id FROM (SELECT id, upper FROM eligible ORDER BY upper DESC, id LIMIT {CHECKED}) e
    WHERE NOT $10 OR EXISTS (
        SELECT FROM headrace.chunks c JOIN written q ON q.cfg = c.config WHERE c.id = e.id AND c.tsv @@ q.query
    )
    LIMIT $9
),
candidates AS (
    SELECT id FROM best UNION SELECT id FROM sample
),
scored AS (
    -- The best candidates by their upper bound, scored exactly from their tsvectors (deleted chunks
    -- drop out here), and, for a query in websearch syntax, only those it matches as written. The
    -- query's words are picked out of a tsvector by marking them (setweight) and keeping the marked
    -- (ts_filter): binary searches, not a walk of every lexeme. The context field (bm25.py, "Fields")
    -- adds to the score as on the exact path.
    SELECT c.id, sum({_bm25("cardinality(u.positions)", "f.len")} ORDER BY w.lexeme) + f.fields AS score
    FROM candidates k
    JOIN headrace.chunks c ON c.id = k.id
    LEFT JOIN written q ON q.cfg = c.config
    LEFT JOIN (SELECT cfg, array_agg(lexeme) AS lexemes FROM weighted GROUP BY cfg) v ON v.cfg = c.config
    CROSS JOIN LATERAL (
        SELECT length(c.tsv) AS len, ts_filter(setweight(c.tsv, 'A', v.lexemes), '{{a}}') AS hits,
               {bm25.fields(bm25.context("c"), "c.config", "weighted")} AS fields
        OFFSET 0
    ) f
    CROSS JOIN LATERAL unnest(f.hits) AS u
    JOIN weighted w ON w.cfg = c.config AND w.lexeme = u.lexeme
    CROSS JOIN collection col
    WHERE NOT $10 OR c.tsv @@ q.query
    GROUP BY c.id, f.fields
),
page AS (
    SELECT id, score FROM scored
    WHERE $6::float8 IS NULL OR score < $6::float8 OR (score = $6::float8 AND id > $7)
    ORDER BY score DESC, id ASC
    LIMIT $8
)
SELECT id, score, NULL::bigint AS eligible, NULL::bigint AS sampled, NULL::boolean AS truncated,
       NULL::jsonb AS statistics, NULL::text AS plans
FROM page
UNION ALL
-- Last, what the caller needs to tell a complete answer from one to complete on the exact path.
SELECT NULL, NULL, (SELECT count(*) FROM eligible), cardinality($15::bigint[]),
       (SELECT coalesce(bool_or(truncated), false) FROM lists),
       jsonb_build_object(
           'n', (SELECT n FROM collection),
           'avglen', (SELECT avglen FROM collection),
           'df', (SELECT jsonb_object_agg(cfg::text || ' ' || lexeme, df) FROM counted)
       ),
       -- The transaction's plan_cache_mode as it was before _READY_SQL, for the statements that follow.
       set_config('plan_cache_mode', $16, true)
"""


@dataclass(frozen=True)
class Ranked:
    """One statistics-path ranking: its hits, whether they are the whole answer, the statistics used."""

    hits: list[tuple[int, float]]
    complete: bool
    statistics: dict[str, Any] | None


async def rank(
    conn: Connection,
    text: str,
    configs: list[str],
    uids: list[uuid.UUID],
    filters: tuple[str | None, dict[str, Any] | None],
    after: tuple[float, int] | None,
    limit: int,
    *,
    operators: bool,
    statistics: dict[str, Any] | None,
    max_terms: int,
) -> Ranked | None:
    """The best `limit` chunks after `after` by BM25, from the statistics; None when they cannot answer
    (a searched job has none, or its delta is over DELTA_LIMIT). `complete` is False when the hits
    may be fewer than the exact path would find (truncated lists ran out, or a websearch query
    matched too few of the best candidates): the caller asks the exact path then."""
    if not uids:
        return None
    ready = await conn.fetchrow(_READY_SQL, uids, DELTA_LIMIT)
    assert ready is not None
    if ready["missing"] or ready["delta"] > DELTA_LIMIT:
        return None
    depth = limit + RESCORE_EXTRA
    want = max(SAMPLE, 2 * limit)
    sample: list[int] = []
    while True:
        rows = await conn.fetch(
            STATISTICS_SQL,
            text,
            configs,
            uids,
            *filters,
            *(after or (None, None)),
            limit,
            0 if sample else depth,  # a second pass ranks the sample and the first's hits, no more
            operators,
            statistics,
            max_terms,
            query.positive_words(text),
            int(ready["delta"]),
            sample,
            ready["previous"],
        )
        (summary,) = [r for r in rows if r["id"] is None]
        hits = [(int(r["id"]), float(r["score"])) for r in rows if r["id"] is not None]
        exhausted = summary["eligible"] <= depth and not summary["truncated"]
        if len(hits) >= limit or exhausted:
            return Ranked(hits, True, summary["statistics"])
        if not operators or sample:
            # A sample smaller than asked held every match: nothing more to find. Else the exact path goes on.
            return Ranked(hits, 0 < len(sample) < want, summary["statistics"])
        # A query in websearch syntax matches as written: its best list candidates held too few
        # matches, so rank a sample of its matches from the GIN index beside them.
        sample = list(await conn.fetchval(SAMPLE_SQL, text, configs, uids, *filters, want))
        if not sample:
            return Ranked(hits, True, summary["statistics"])  # it matches nothing more
        sample += [chunk_id for chunk_id, _ in hits if chunk_id not in set(sample)]
