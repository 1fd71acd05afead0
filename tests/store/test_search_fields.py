"""Keyword ranking by where a chunk stands (headrace/store/search/bm25.py, "Fields"): a query word in the
chunk's document title or heading path lifts it above a chunk whose text alone holds the word, on the
exact path and from the search statistics alike, and for chunks stored before migration 0015."""

import pytest

from headrace.store import documents, search
from headrace.store.db import Pool
from headrace.store.documents import ChunkRecord, DocumentRecord
from headrace.store.search import statistics as search_statistics
from tests.conftest import JobFactory

BOUND = 10_000  # the API's default: bounded keyword ranking, which reads the statistics
TEXT = "Set the variable before you start the daemon, then restart it."
OTHER = [f"The daemon writes line {i} of its log before it rotates the file." for i in range(8)]


def _doc(uri: str, title: str, *chunks: tuple[str, str | None]) -> DocumentRecord:
    return DocumentRecord(
        uri=uri,
        title=title,
        content_hash=uri,
        fingerprint="f",
        format="html",
        bytes=1,
        chunks=[ChunkRecord(i, text, heading_path=heading) for i, (text, heading) in enumerate(chunks)],
    )


async def _search(pool: Pool, query: str, path: str) -> list[search.SearchHit]:
    ranked = None if path == "exact" else BOUND
    return (await search.search(pool, query, mode="keyword", ranked_matches=ranked)).hits


async def _corpus(pool: Pool, make_job: JobFactory, *docs: DocumentRecord, build: bool) -> None:
    job = await make_job()
    for doc in (*docs, *(_doc(f"log{i}.html", "Logging", (t, "Logging")) for i, t in enumerate(OTHER))):
        await documents.store_document(pool, job.uid, 1, doc)
    if build:
        assert await search_statistics.build(pool, job.uid) is not None


@pytest.mark.parametrize("path", ["exact", "statistics"])
async def test_a_heading_match_outranks_a_text_only_match_of_equal_bm25(
    pool: Pool, make_job: JobFactory, path: str
) -> None:
    # The same text in both; only one stands under a heading naming the query's word.
    await _corpus(
        pool,
        make_job,
        _doc("a.html", "Manual", (TEXT, "Manual > Logging")),
        _doc("b.html", "Manual", (TEXT, "Manual > Proxy variable")),
        build=path == "statistics",
    )
    hits = await _search(pool, "proxy variable", path)
    assert [h.uri for h in hits[:2]] == ["b.html", "a.html"]
    assert hits[0].score > hits[1].score


@pytest.mark.parametrize("path", ["exact", "statistics"])
async def test_a_title_match_outranks_a_text_only_match_of_equal_bm25(
    pool: Pool, make_job: JobFactory, path: str
) -> None:
    await _corpus(
        pool,
        make_job,
        _doc("a.html", "Logging", (TEXT, None)),
        _doc("b.html", "Environment variables", (TEXT, None)),
        build=path == "statistics",
    )
    hits = await _search(pool, "daemon variable", path)
    assert [h.uri for h in hits[:2]] == ["b.html", "a.html"]
    assert hits[0].score > hits[1].score


async def test_a_field_word_alone_does_not_make_a_match(pool: Pool, make_job: JobFactory) -> None:
    # Fields re-weigh the chunks the text matched: a title naming the word finds nothing by itself.
    await _corpus(pool, make_job, _doc("a.html", "Lighthouse keeping", (TEXT, "Lighthouse keeping")), build=False)
    assert await _search(pool, "lighthouse", "exact") == []


async def test_a_negated_word_in_a_title_adds_nothing(pool: Pool, make_job: JobFactory) -> None:
    await _corpus(
        pool,
        make_job,
        _doc("a.html", "Proxy settings", (TEXT, None)),
        _doc("b.html", "Settings", (TEXT, None)),
        build=False,
    )
    hits = await _search(pool, "variable -proxy", "exact")
    assert {h.uri for h in hits} == {"a.html", "b.html"}
    assert hits[0].score == hits[1].score


async def test_a_chunk_stored_before_its_context_was_kept_ranks_the_same(pool: Pool, make_job: JobFactory) -> None:
    await _corpus(
        pool,
        make_job,
        _doc("a.html", "Manual", (TEXT, "Manual > Logging")),
        _doc("b.html", "Proxy variable", (TEXT, "Proxy variable > Setting it")),
        build=False,
    )
    before = [(h.chunk_id, h.score) for h in await _search(pool, "proxy variable", "exact")]
    # As a chunk written by a release before migration 0015 leaves it.
    assert await pool.fetchval("SELECT count(*) FROM headrace.chunks WHERE context_tsv IS NOT NULL") > 0
    await pool.execute("UPDATE headrace.chunks SET context_tsv = NULL")
    assert [(h.chunk_id, h.score) for h in await _search(pool, "proxy variable", "exact")] == before
    assert before[0][1] > before[1][1]


async def test_the_statistics_score_fields_as_the_exact_path_does(pool: Pool, make_job: JobFactory) -> None:
    await _corpus(
        pool,
        make_job,
        _doc("a.html", "Daemon variables", (TEXT, "Daemon variables > Proxy")),
        _doc("b.html", "Manual", (TEXT, "Manual > Logging"), ("The proxy variable names the daemon's proxy.", None)),
        build=True,
    )
    exact = [(h.chunk_id, h.score) for h in await _search(pool, "daemon proxy variable", "exact")]
    assert [(h.chunk_id, h.score) for h in await _search(pool, "daemon proxy variable", "statistics")] == exact
    assert len(exact) == 10 and exact[0][1] > exact[1][1] > exact[2][1]
