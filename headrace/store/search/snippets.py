"""Snippets: a page's hits read with a `ts_headline` each, and rendered for their reader.

ts_headline copies the document's text as it is, so marking matches with `<mark>` in SQL would hand
any HTML in a crawled page (`<img onerror=...>`) to every UI that renders snippets. Instead matches
are delimited by two Unicode private-use characters, stripped from the text first, and `render`
escapes the text and only then adds the highlight tags (or none, for plain text).

Only the page's rows get a snippet: it is most of a page's database time.
"""

import html
from typing import Literal

from asyncpg import Record

from headrace.store.db import Connection

START = "\ue000"
STOP = "\ue001"

Highlight = Literal["html", "none"]

HEADLINE_OPTIONS = f"StartSel={START}, StopSel={STOP}, MaxWords=35, MinWords=15, MaxFragments=2"

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
               '{START}{STOP}', ''
           ),
           websearch_to_tsquery(c.config, $2),
           '{HEADLINE_OPTIONS}'
       ) AS snippet
FROM unnest($1::bigint[]) WITH ORDINALITY AS p(id, position)
JOIN headrace.chunks c ON c.id = p.id
JOIN headrace.documents d ON d.id = c.document_id AND d.job_uid = c.job_uid
JOIN headrace.jobs j ON j.uid = c.job_uid
ORDER BY p.position
"""


async def hits(conn: Connection, chunk_ids: list[int], query: str) -> list[Record]:
    """The chunks `chunk_ids`, in that order, with their documents, jobs and snippets for `query`."""
    return await conn.fetch(_HITS_SQL, chunk_ids, query) if chunk_ids else []


def render(raw: str, highlight: Highlight = "html") -> str:
    """`html`: the text HTML-escaped, matches wrapped in `<mark></mark>`; `none`: plain text, unmarked."""
    if highlight == "none":
        return raw.replace(START, "").replace(STOP, "")
    return html.escape(raw, quote=True).replace(START, "<mark>").replace(STOP, "</mark>")
