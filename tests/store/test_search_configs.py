"""Search across jobs with different text-search configs: each job's chunks match its own config's query."""

import pytest

from headrace.store import documents, search
from headrace.store.db import Pool
from headrace.store.documents import ChunkRecord, DocumentRecord
from headrace.store.search import snippets
from tests.conftest import JobFactory, volume_spec


def _doc(uri: str, *texts: str) -> DocumentRecord:
    return DocumentRecord(
        uri=uri,
        title=uri,
        content_hash=uri,
        fingerprint="f",
        format="text",
        bytes=1,
        chunks=[ChunkRecord(i, t) for i, t in enumerate(texts)],
    )


async def test_each_job_is_searched_with_its_own_config(pool: Pool, make_job: JobFactory) -> None:
    english = await make_job(volume_spec(textSearchConfig="english"), name="en", namespace="a")
    simple = await make_job(volume_spec(textSearchConfig="simple"), name="plain", namespace="b")
    await documents.store_document(pool, english.uid, 1, _doc("en.txt", "The workers are running quickly.", "Nothing."))
    await documents.store_document(pool, simple.uid, 1, _doc("plain.txt", "The worker is running.", "Workers ran."))

    # english stems "running" to "run"; simple keeps the word as it is.
    hits = (await search.search(pool, "run")).hits
    assert [(h.job, h.uri) for h in hits] == [("en", "en.txt")]
    both = (await search.search(pool, "running")).hits
    assert sorted((h.job, h.ordinal) for h in both) == [("en", 0), ("plain", 0)]
    assert all(snippets.START in h.snippet and snippets.STOP in h.snippet for h in both)

    only_b = (await search.search(pool, "running", where=search.SearchFilter(namespaces=["b"]))).hits
    assert [h.namespace for h in only_b] == ["b"]


async def test_english_unstemmed_keeps_words_as_written_and_drops_english_stop_words(
    pool: Pool, make_job: JobFactory
) -> None:
    job = await make_job(volume_spec(textSearchConfig="english_unstemmed"))  # Headrace's own (migration 0011)
    assert await pool.fetchval("SELECT text_search_config::text FROM headrace.jobs WHERE uid = $1", job.uid) in {
        "english_unstemmed",
        "headrace.english_unstemmed",
    }
    await documents.store_document(pool, job.uid, 1, _doc("a.txt", "Show the files in the working tree.", "One file."))
    # No stemmer: "files" finds the chunk that says "files", not the one that says "file".
    assert [h.ordinal for h in (await search.search(pool, "files")).hits] == [0]
    assert [h.ordinal for h in (await search.search(pool, "file")).hits] == [1]
    # English stop words are still dropped, so a query of stop words only has nothing to search by.
    with pytest.raises(search.SearchRefused):
        await search.search(pool, "the in")


async def test_a_query_that_matches_nothing_returns_an_empty_page(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job()
    await documents.store_document(pool, job.uid, 1, _doc("a.txt", "alpha beta"))
    page = await search.search(pool, "gamma -alpha")
    assert (page.hits, page.next_cursor) == ([], None)
    assert (await search.search(pool, "")).hits == []
