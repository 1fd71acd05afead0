"""Snippets: highlighted in Python from the hit's text, marking the words Postgres's config matches."""

import re
from pathlib import Path

import pytest

from headrace.embedding.builtin import BuiltinEmbedder
from headrace.store import search, vectors
from headrace.store.db import Pool
from headrace.store.search import snippets
from headrace.store.search.snippets import START, STOP
from tests.api.conftest import ingest

pytestmark = pytest.mark.postgres

TEXT = (
    "Reading files line-by-line: the reader reads each line of a file_descriptor, and Files opened "
    "with open() are read lazily. Queries about UTF8 and utf-8 encodings, the encoder's errors and "
    "Python3's io module: an iterator iterates, iterating once. Running runners ran; happily, happiness."
)


def marked(snippet: str) -> list[str]:
    return re.findall(f"{START}(.*?){STOP}", snippet)


async def lexemes(pool: Pool, config: str, words: str) -> list[str]:
    return list(await pool.fetchval("SELECT tsvector_to_array(to_tsvector($1::text::regconfig, $2))", config, words))


@pytest.mark.parametrize("config", ["english", "simple", "german"])
async def test_a_word_is_marked_exactly_where_postgres_matches_it(pool: Pool, config: str) -> None:
    # Every word of the text as a query of its own: the snippet marks the words whose normal form in
    # Postgres's config (to_tsvector of the word alone) shares a lexeme with the query, and no other.
    words = sorted({w for w in re.findall(r"[^\W_]+", TEXT)})
    normal = {w: set(await lexemes(pool, config, w)) for w in words}
    for query in words:
        wanted = normal[query]
        expected = sorted(w for w in re.findall(r"[^\W_]+", TEXT) if normal[w] & wanted)
        got = marked(snippets.snippet(TEXT, wanted, config))
        assert sorted(got) == expected, (config, query)


def test_the_fragments_show_the_most_query_words_in_text_order() -> None:
    filler = " ".join(f"Harbour note {i}: the tug moored beside the grain barge." for i in range(30))
    text = f"The keeper woke. {filler} At last the lighthouse keeper lit the lamp. {filler} A lamp again."
    got = snippets.snippet(text, ["lighthous", "keeper", "lamp"], "english")
    # One window holds all three words; no other adds a word it lacks, so there is one fragment.
    assert snippets.FRAGMENT_DELIMITER not in got
    assert marked(got) == ["lighthouse", "keeper", "lamp"]
    assert len(re.findall(r"[^\W_]+", got)) <= snippets.MAX_WORDS
    # It opens LEAD_WORDS before its first match.
    assert snippets.render(got, "none").startswith("grain barge. At last the lighthouse")

    # Two words far apart: two fragments, each around its word, in the order of the text.
    two = snippets.snippet(text, ["woke", "lighthous"], "english")
    first, second = two.split(snippets.FRAGMENT_DELIMITER)
    assert marked(first) == ["woke"] and first.startswith("The keeper")
    assert marked(second) == ["lighthouse"]


def test_a_hit_without_query_words_shows_its_opening_words() -> None:
    text = "One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen."
    assert snippets.snippet(text, ["lighthous"], "english") == text[: text.index(" sixteen")]
    assert snippets.snippet("A short text.", [], "english") == "A short text."


def test_the_text_cannot_forge_a_mark() -> None:
    text = f"{START}forged{STOP} and a real lamp"
    assert snippets.snippet(text, ["lamp"], "english") == f"forged and a real {START}lamp{STOP}"


async def _embed(space: vectors.Space, text: str) -> list[float]:
    return (await BuiltinEmbedder().embed([text]))[0]


async def test_snippets_of_a_search_mark_its_positive_words_anywhere_in_a_chunk(pool: Pool, tmp_path: Path) -> None:
    filler = " ".join(f"Harbour note {i}: the tug moored beside the grain barge at slack water." for i in range(20))
    files = {"late.txt": filler + " At last the lighthouse keeper lit the lamp.", "none.txt": filler}
    await ingest(pool, tmp_path, namespace="team-a", name="harbour", files=files)
    page = await search.search(pool, "lighthouse keepers -harbour", mode="semantic", embed=_embed)
    found = {h.uri: h.snippet for h in page.hits}
    assert set(found) == set(files)
    # The only match is far into the chunk; the negated word is in every chunk and marked in none.
    assert marked(found["late.txt"]) == ["lighthouse", "keeper"]
    assert (
        " ".join(found["none.txt"].split())
        == "Harbour note 0: the tug moored beside the grain barge at slack water. Harbour note"
    )
