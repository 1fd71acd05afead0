"""Query parsing: how a keyword query is read before any chunk is.

A query is words in Postgres's websearch syntax. Plain words match any of them; a query that uses
the syntax (a quoted phrase, -word, or) matches as written. Its words are normalised by each
searched text-search config in SQL (`to_tsvector`), as the chunks were; here are the parts read
in Python: whether the syntax is used, and which words can hold a match.
"""

import re

from headrace.store.db import Connection

MAX_QUERY_TERMS = 32
"""Keyword ranking weighs a query's first 32 distinct words: each costs a document-frequency count."""

_OPERATORS = re.compile(r'"|(?:^|\s)-\w|(?:^|\s)or(?:\s|$)', re.IGNORECASE)
"""Websearch syntax (a quoted phrase, -word, or): a keyword query that uses it matches as written."""

_NEGATED = re.compile(r'(?:^|\s)-(?:"[^"]*"?|\w\S*)|(?:^|\s)or(?=\s|$)', re.IGNORECASE)
"""-word and -"a phrase", as _OPERATORS reads them: an option such as --force is a word to find."""


def uses_operators(query: str) -> bool:
    """Whether `query` is in websearch syntax ("a phrase", -word, or), so that it matches as written."""
    return bool(_OPERATORS.search(query))


def positive_words(query: str) -> str:
    """The query without its negated words (-word, -"a phrase") and `or`s: the words whose postings
    can hold a match."""
    return _NEGATED.sub(" ", query)


async def has_words(conn: Connection, query: str, configs: list[str]) -> bool:
    """Whether `query` has a word keyword search can match in any of `configs` (not only stop words)."""
    found = await conn.fetchval(
        "SELECT bool_or(to_tsvector(cfg::regconfig, $1) <> ''::tsvector) FROM unnest($2::text[]) cfg", query, configs
    )
    return bool(found) or not configs
