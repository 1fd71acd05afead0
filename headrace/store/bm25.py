"""Okapi BM25, defined once: its parameters, its term weight, its IDF and its collection statistics.

Every keyword path ranks with these SQL expressions: the exact path over the GIN index
(search._KEYWORD_SQL), the search statistics (lexicon.STATISTICS_SQL), their bounds, and the order of
the statistics' postings lists (lexicon._POSTINGS_SQL). So a chunk scores the same whichever path
ranked it, and a query scores the same before and after a statistics build.

The collection statistics are those of the searched jobs' chunks, whoever may read them:
- N, the number of chunks;
- the average length, a length being a chunk's count of distinct lexemes (`length(tsv)`, which a
  tsvector knows without reading its positions);
- a word's document frequency, the number of those chunks holding it.

N and the total length are sums over the jobs' documents, one row each (`chunk_count` and
`lexemes`, which the chunks' triggers keep: migration 0011), so no search reads every chunk for them.
A statistics build stores the same sums; between builds the statistics path adds the chunks stored
since to N (lexicon.py).
"""

K1 = 1.2
"""Term-frequency saturation: Robertson and Zaragoza's usual value (bm25s's default is 1.5)."""
B = 0.75
"""Length normalisation: 0 ignores a chunk's length, 1 divides by it in full."""


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
