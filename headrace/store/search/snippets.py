"""Snippets: a page's hits read in one query, each highlighted in Python from its own text when its
snippet is first read (`SearchHit.snippet`: a reranked search's unreturned candidates never are).

Postgres only says which words to mark: the lexemes of the query's positive words
(query.positive_words) in the chunk's text-search config that the chunk holds (its stored tsvector).
The hit's text, read anyway for `text`, is then split into words here, and a word is marked when its
Snowball stem (the algorithm of the config of the same name, as Postgres's built-in configs use) is
one of those lexemes. `ts_headline` did this in SQL by parsing and normalising every word of every
hit: 1.8-2.2 ms of a page's hits query at a million chunks, most of a semantic search's database
time, against 0.2-0.5 ms now (EXPLAIN, docs/benchmarks.md, 2026-12-06). Here a hit holding a query
word costs a regular expression, a cached stem per distinct word and one pass over its matches (about
0.12 ms at load 5), a hit holding none a few microseconds, in the process that searched, so floor and
API do the same work.

A snippet is at most two fragments of at most MAX_WORDS words each, joined by FRAGMENT_DELIMITER, in
text order: the window holding the most distinct query words (then the most matches), opening a few
words before its first match, and a second, disjoint one only when it holds a query word the first
lacks. A hit with no query word (a semantic neighbour: Postgres finds none of the lexemes in its
stored tsvector) gets its opening MIN_WORDS words, read no further. Negated words
(-word) are never marked. For a config Postgres has no Snowball stemmer for (`simple`, or one made by
the user), a word is marked when its lowercase equals a lexeme.

Matches are delimited by two Unicode private-use characters, stripped from the text first, and
`render` escapes the text and only then adds the highlight tags (or none, for plain text): marking
with `<mark>` directly would hand any HTML in a crawled page (`<img onerror=...>`) to every UI that
renders snippets.
"""

import bisect
import functools
import html
import itertools
import re
from collections.abc import Iterable
from typing import Literal

import Stemmer
from asyncpg import Record

from headrace.store.db import Connection

START = "\ue000"
STOP = "\ue001"

Highlight = Literal["html", "none"]

MAX_WORDS = 35
"""The most words of one fragment."""
MIN_WORDS = 15
"""The opening words a hit holding no query word shows."""
MAX_FRAGMENTS = 2
LEAD_WORDS = 5
"""Words of context a fragment shows before its first match."""
FRAGMENT_DELIMITER = " ... "

_WORD = re.compile(r"([^\W_]+)")
"""A word as Postgres's default parser splits text: a run of letters and digits (`file_descriptor`,
`don't` and `line-by-line` are each several words)."""
_ASCII_WORD = re.compile(r"([A-Za-z0-9]+)")
_STEMMERS = frozenset(Stemmer.algorithms())

_HITS_SQL = """
SELECT c.id, c.ordinal, c.page, c.heading_path, c.content, d.uri, d.title, d.metadata, j.namespace, j.name AS job,
       c.config::text AS config,
       -- The query's positive words as the chunk's config normalises them, those the chunk holds (its
       -- stored tsvector, the query's lexemes marked by setweight and kept by ts_filter): the words to
       -- mark. A chunk holding none (a semantic neighbour) needs no look at its words beyond the first.
       tsvector_to_array(ts_filter(setweight(c.tsv, 'A', tsvector_to_array(to_tsvector(c.config, $2))), '{a}'))
           AS lexemes
FROM unnest($1::bigint[]) WITH ORDINALITY AS p(id, position)
JOIN headrace.chunks c ON c.id = p.id
JOIN headrace.documents d ON d.id = c.document_id AND d.job_uid = c.job_uid
JOIN headrace.jobs j ON j.uid = c.job_uid
ORDER BY p.position
"""


async def hits(conn: Connection, chunk_ids: list[int], words: str) -> list[Record]:
    """The chunks `chunk_ids`, in that order, with their documents, jobs, text-search configs and the
    lexemes of `words` (the query's positive words) that each chunk holds: what `snippet` needs."""
    return await conn.fetch(_HITS_SQL, chunk_ids, words) if chunk_ids else []


_STEM_CACHE_WORDS = 200_000
"""Words whose stems a config keeps in memory (about 20 MB at this count); beyond it the cache starts over."""


class _Normaliser:
    """Words as a text-search config of Postgres normalises them: lowercased, then stemmed by its
    Snowball algorithm (none for `simple` and configs without one), each distinct word stemmed once
    per process (PyStemmer's own cache costs 0.4 us a word; a dict lookup a tenth of it)."""

    def __init__(self, config: str) -> None:
        name = config.rsplit(".", 1)[-1].strip('"')  # `pg_catalog.english` and `english` alike
        self.stemmer = Stemmer.Stemmer(name, 0) if name in _STEMMERS else None
        self.stems: dict[str, str] = {}

    def matching(self, words: set[str], wanted: set[str]) -> set[str]:
        """Those of `words` (lowercase) that normalise to one of `wanted`: by their stem, or as
        written (a word holding a digit goes to Postgres's `simple` dictionary, unstemmed)."""
        if self.stemmer is None:
            return words & wanted
        new = words.difference(self.stems)
        if new:
            if len(self.stems) + len(new) > _STEM_CACHE_WORDS:
                self.stems.clear()
            listed = list(new)
            self.stems.update(zip(listed, self.stemmer.stemWords(listed), strict=True))
        stems = self.stems
        return {word for word in words if stems[word] in wanted} | (words & wanted)


@functools.lru_cache(maxsize=64)
def _normaliser(config: str) -> _Normaliser:
    return _Normaliser(config)


def snippet(text: str, lexemes: Iterable[str], config: str) -> str:
    """The snippet of `text` for a query whose words normalise to `lexemes` in `config`: the best
    fragments with matches between START and STOP (see the module's docstring)."""
    if START in text or STOP in text:
        text = text.replace(START, "").replace(STOP, "")
    wanted = set(lexemes)
    if not wanted:
        return _opening(text)
    # Text and words alternate: parts[2i + 1] is word i, parts[2i] what stands before it. ASCII text
    # splits twice as fast without Unicode's letter classes, into the same words.
    parts = (_ASCII_WORD if text.isascii() else _WORD).split(text)
    words = parts[1::2]
    lower = list(map(str.lower, words))
    found = _normaliser(config).matching(set(lower), wanted)
    matches = [i for i, word in enumerate(lower) if word in found]
    if not matches:  # Postgres's stemmer and this one disagree on a word (about 1 in 1,000 words)
        return _opening(text)
    if len(words) <= MAX_WORDS:
        return _show(parts, matches, 0, len(words))
    normaliser = _normaliser(config)
    terms = [lower[i] if lower[i] in wanted else normaliser.stems.get(lower[i], lower[i]) for i in matches]
    first = _best_window(matches, terms, 0, len(words), set())
    assert first is not None  # some match, so some window
    chosen = [first[1]]
    a, b = first[1]
    shown = set(terms[bisect.bisect_left(matches, a) : bisect.bisect_left(matches, b)])
    if shown.issuperset(terms):
        return _show(parts, matches, a, b)
    # A second fragment, before or after the first, only for a query word the first lacks.
    second = max(
        (
            w
            for w in (_best_window(matches, terms, 0, a, shown), _best_window(matches, terms, b, len(words), shown))
            if w
        ),
        default=None,
    )
    if second is not None and second[0][0] > 0 and MAX_FRAGMENTS > 1:
        chosen.append(second[1])
    return FRAGMENT_DELIMITER.join(_show(parts, matches, a, b) for a, b in sorted(chosen))


def _best_window(
    matches: list[int], terms: list[str], low: int, high: int, shown: set[str]
) -> tuple[tuple[int, int, int, int], tuple[int, int]] | None:
    """The best fragment within words [low, high): of those opening LEAD_WORDS before a match (where
    the bounds let them) and at most MAX_WORDS long, the one holding the most query words not in
    `shown`, then the most query words, then the most matches, then the first; with its ranking key.
    One pass over the matches (word indices, ascending; `terms` their lexemes): each window starts
    and ends no earlier than the one before, so two pointers bound the matches inside it."""
    first, stop = bisect.bisect_left(matches, low), bisect.bisect_left(matches, high)
    left = right = first
    inside: dict[str, int] = {}  # the query words in the window, with their counts
    new = 0  # how many of them are not in `shown`
    best: tuple[tuple[int, int, int, int], tuple[int, int]] | None = None
    last = high - MAX_WORDS
    for anchor in range(first, stop):
        start = matches[anchor] - LEAD_WORDS
        start = low if start < low or last < low else (last if last < start else start)
        end = start + MAX_WORDS if start + MAX_WORDS < high else high
        while right < stop and matches[right] < end:
            term = terms[right]
            count = inside.get(term, 0)
            inside[term] = count + 1
            new += not count and term not in shown
            right += 1
        while matches[left] < start:
            term = terms[left]
            inside[term] -= 1
            if not inside[term]:
                del inside[term]
                new -= term not in shown
            left += 1
        key = (new, len(inside), right - left, -start)
        if best is None or key > best[0]:
            best = (key, (start, end))
    return best


def _opening(text: str) -> str:
    """The text's opening MIN_WORDS words as written (all of it, closing punctuation too, when it has
    no more), reading no further into it."""
    found = list(itertools.islice(_WORD.finditer(text), MIN_WORDS + 1))
    if not found:
        return text.strip()
    end = found[MIN_WORDS - 1].end() if len(found) > MIN_WORDS else len(text)
    return text[found[0].start() : end].rstrip()


def _show(parts: list[str], matches: list[int], a: int, b: int) -> str:
    """Words [a, b) of the text split into `parts` as written, the `matches` among them between START
    and STOP; through the end of the text (its closing punctuation) when word b - 1 is its last word."""
    marked = set(matches)
    out = []
    for i in range(a, b):
        if i > a:
            out.append(parts[2 * i])
        out += (START, parts[2 * i + 1], STOP) if i in marked else (parts[2 * i + 1],)
    if 2 * b + 1 == len(parts):
        out.append(parts[-1])
    return "".join(out).rstrip()


def render(raw: str, highlight: Highlight = "html") -> str:
    """`html`: the text HTML-escaped, matches wrapped in `<mark></mark>`; `none`: plain text, unmarked."""
    if highlight == "none":
        return raw.replace(START, "").replace(STOP, "")
    return html.escape(raw, quote=True).replace(START, "<mark>").replace(STOP, "</mark>")
