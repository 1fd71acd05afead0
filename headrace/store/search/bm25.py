"""Ranking: Okapi BM25, defined once: its parameters, its term weight, its IDF and its collection statistics.

Every keyword path ranks with these SQL expressions: the exact path over the GIN index
(keyword.EXACT_SQL), the search statistics (statistics.STATISTICS_SQL), their bounds, and the order
of the statistics' postings lists (statistics._POSTINGS_SQL). So a chunk scores the same whichever path
ranked it, and a query scores the same before and after a statistics build.

The collection statistics are those of the searched jobs' chunks, whoever may read them:
- N, the number of chunks;
- the average length, a length being a chunk's count of distinct lexemes (`length(tsv)`, which a
  tsvector knows without reading its positions);
- a word's document frequency, the number of those chunks holding it.

N and the total length are sums over the jobs' documents, one row each (`chunk_count` and
`lexemes`, which the chunks' triggers keep: migration 0011), so no search reads every chunk for them.
A statistics build stores the same sums; between builds the statistics path adds the chunks stored
since to N (statistics.py).

Fields: a chunk is also ranked by where it stands. Each query word in its document's title adds
TITLE_WEIGHT times the word's IDF, and each in its heading path HEADING_WEIGHT times it, to the
chunk's BM25 over its text (a chunk's "context", `chunks.context_tsv`, migration 0015). A short
field's words are present or not, so they add a share of IDF instead of a saturated frequency (BM25F
with the field's term weight at its saturation). The field re-weighs the chunks the text matched; it
makes no chunk a match by itself.
"""

K1 = 1.2
"""Term-frequency saturation: Robertson and Zaragoza's usual value (bm25s's default is 1.5)."""
B = 0.75
"""Length normalisation: 0 ignores a chunk's length, 1 divides by it in full."""


TITLE_WEIGHT = 0.5
"""A query word in the chunk's document title adds this much of its IDF. Chosen with HEADING_WEIGHT
on the development halves of our evaluation sets (docs/benchmarks.md, "Fields"): 0.25 to 1 each
scored within 0.005 MRR@10 of each other in hybrid mode, and all far above none."""
HEADING_WEIGHT = 0.5
"""A query word in the chunk's heading path adds this much of its IDF (see TITLE_WEIGHT)."""


def term_weight(tf: str, length: str, avglen: str) -> str:
    """BM25's saturated term frequency: tf (k1 + 1) / (tf + k1 (1 - b + b len / avglen)), as SQL over
    the three given SQL expressions. Written once, so every path computes the same float."""
    return f"({tf}) * {K1 + 1!r} / (({tf}) + {K1!r} * ({1 - B!r} + {B!r} * ({length}) / ({avglen})))"


def weight(idf: str, tf: str, length: str, avglen: str) -> str:
    """A posting's score for its word: IDF times the term weight."""
    return f"{idf} * {term_weight(tf, length, avglen)}"


def idf(n: str, df: str) -> str:
    """BM25's IDF, ln(1 + (N - df + 0.5) / (df + 0.5)): never negative, however common the word."""
    return f"ln(1 + (({n}) - ({df}) + 0.5) / (({df}) + 0.5))"


COLLECTION_SQL = """
SELECT coalesce(sum(d.chunk_count), 0)::bigint AS chunks, coalesce(sum(d.lexemes), 0)::bigint AS total_length
FROM headrace.documents d WHERE d.job_uid = ANY({uids})
"""
"""N and the total length of the jobs whose uids the SQL expression `{uids}` gives (a uuid[])."""


def collection(uids: str) -> str:
    """COLLECTION_SQL over the jobs `uids` (a SQL expression of type uuid[])."""
    return COLLECTION_SQL.format(uids=uids)


def average_length(total_length: str, chunks: str) -> str:
    """The average length from the sums: at least 1, so that an empty collection divides by 1."""
    return f"greatest(({total_length})::float8 / greatest(({chunks}), 1), 1)::float8"


CONTEXT_SQL = (
    "setweight(to_tsvector({config}, coalesce({title}, '')), 'A') "
    "|| setweight(to_tsvector({config}, coalesce({heading_path}, '')), 'B')"
)
"""A chunk's context field (the lexemes of its document's title, weight A, and of its heading path,
weight B), from SQL expressions of its config, title and heading path: what `chunks.context_tsv` holds."""


def context(chunk: str) -> str:
    """The context field of the chunk aliased `chunk`, as SQL: its `context_tsv`, or, for a chunk
    stored before migration 0015, the same computed from its document's title (looked up only then)
    and its heading path."""
    title = f"(SELECT d.title FROM headrace.documents d WHERE d.id = {chunk}.document_id)"
    computed = CONTEXT_SQL.format(config=f"{chunk}.config", title=title, heading_path=f"{chunk}.heading_path")
    return f"coalesce({chunk}.context_tsv, {computed})"


def field_weight(idf: str, weights: str) -> str:
    """A query word's addition to a chunk's score from its context field, given the word's IDF and
    the weights of its positions there (`unnest(tsvector)`'s `weights`): IDF times TITLE_WEIGHT when
    the title holds it (A), plus HEADING_WEIGHT when the heading path does (B). Every path sums these
    over the query's words ordered by lexeme, so each adds the same float."""
    title, heading = f"('A' = ANY({weights}))::int", f"('B' = ANY({weights}))::int"
    return f"{idf} * ({TITLE_WEIGHT!r} * {title} + {HEADING_WEIGHT!r} * {heading})"


def fields(context: str, config: str, terms: str) -> str:
    """A chunk's whole addition from its context field (the SQL tsvector `context`): field_weight
    summed over the query's words it holds (`terms`: a relation with `cfg`, `lexeme` and `idf`, whose
    words of the chunk's `config` count) in a fixed order, so that every path adds the same float."""
    return (
        f"(SELECT coalesce(sum({field_weight('t.idf', 'u.weights')} ORDER BY t.lexeme), 0)::float8 "
        f"FROM unnest({context}) u JOIN {terms} t ON t.cfg = {config} AND t.lexeme = u.lexeme)"
    )
