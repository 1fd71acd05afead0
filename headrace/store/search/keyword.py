"""Keyword candidates and their ranking by BM25 (bm25.py): the statistics path or the exact path.

A query is ranked on one of three paths, each there for a reason:
- **the search statistics** (statistics.rank), when a bounded search's jobs have current ones: a few
  hundred postings per word instead of every match, which is what keeps common words fast at a
  million chunks. A query in websearch syntax ("a phrase", -word, or) adds a sample of its matches
  from the GIN index, because the lists hold words, not phrases.
- **the exact path** (EXACT_SQL over the GIN index), every match ranked, when asked for
  (`ranked_matches=None`), or when the statistics cannot answer: a job has none yet (its first run),
  too many chunks were stored since the build, or a truncated list ran out before a page was full
  (then it ranks by the statistics' N and document frequencies, so the pages agree).
- **the bounded exact path** (the same SQL with `ranked_matches`): as the exact path, but the matches
  ranked and the document frequencies counted stop at the bound, rarest words first; only for jobs
  without current statistics, because counting every match of a common word is what the bound avoids.
All three rank by the same collection statistics (bm25.py), so a query scores the same before and
after a statistics build.
"""

import uuid
from typing import Any

from headrace.store.db import Connection
from headrace.store.search import bm25, query
from headrace.store.search import statistics as search_statistics

EXACT_SQL = rf"""
WITH pinned AS (
    -- The statistics a first page ranked by, carried in its cursor (NULL on a first page).
    SELECT $11::jsonb AS s
),
terms AS (
    -- The query's distinct words (its first MAX_QUERY_TERMS; $13: not those negated with -word,
    -- query.positive_words), normalised by each searched
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


async def rank(
    conn: Connection,
    text: str,
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
    """Keyword ranking of `text` and the statistics it ranked by: from the jobs' search statistics
    when they can answer (statistics.rank: a few hundred postings per query word), else by BM25 over
    the GIN index (EXACT_SQL, the exact path), with the same statistics so that every page scores alike."""
    operators = query.uses_operators(text)
    fast = (
        await search_statistics.rank(
            conn,
            text,
            configs,
            uids,
            filters,
            after,
            limit,
            operators=operators,
            statistics=statistics,
            max_terms=query.MAX_QUERY_TERMS,
        )
        if use_statistics
        else None
    )
    if fast is not None and fast.complete:
        return fast.hits, fast.statistics
    if fast is not None:
        statistics = fast.statistics
    rows = await conn.fetch(
        EXACT_SQL,
        text,
        configs,
        uids,
        *filters,
        *(after or (None, None)),
        limit,
        ranked_matches,
        operators,
        statistics,
        query.MAX_QUERY_TERMS,
        query.positive_words(text),
    )
    ranked = [(r["id"], float(r["score"])) for r in rows]
    return ranked, (rows[0]["statistics"] if rows else statistics)
