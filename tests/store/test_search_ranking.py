"""Keyword ranking as BM25: any query word matches, rarer words weigh more, pages stay exact."""

import pytest

from headrace.store import cursors, documents, search
from headrace.store.db import Pool
from tests.conftest import JobFactory
from tests.store.test_search_configs import _doc

# Twelve chunks about a river; two that also name rarer things.
RIVER = [f"The river flows past mill number {i} on its way down the valley." for i in range(12)]


async def _store(pool: Pool, make_job: JobFactory, texts: dict[str, str]) -> None:
    job = await make_job()
    for uri, text in texts.items():
        await documents.store_document(pool, job.uid, 1, _doc(uri, text))


async def test_a_chunk_missing_some_query_words_is_still_found_by_its_rare_ones(
    pool: Pool, make_job: JobFactory
) -> None:
    await _store(
        pool,
        make_job,
        {f"river{i}.txt": t for i, t in enumerate(RIVER)} | {"heron.txt": "A grey heron stands in the shallows."},
    )
    # No chunk holds every word of the question; the one holding its rare word comes first.
    hits = (await search.search(pool, "where does the heron fish in the river at dusk", mode="keyword")).hits
    assert hits[0].uri == "heron.txt"
    assert len(hits) == 10 and {h.uri for h in hits[1:]} <= {f"river{i}.txt" for i in range(12)}


async def test_a_rare_word_outranks_a_common_one_and_every_word_ranks_best(pool: Pool, make_job: JobFactory) -> None:
    await _store(
        pool,
        make_job,
        {f"river{i}.txt": t for i, t in enumerate(RIVER)}
        | {"heron.txt": "A grey heron stands in the shallows.", "both.txt": "A heron fishes where the river bends."},
    )
    hits = (await search.search(pool, "river heron", mode="keyword", limit=5)).hits
    assert [h.uri for h in hits[:2]] == ["both.txt", "heron.txt"]
    assert hits[0].score > hits[1].score > hits[2].score


async def test_paging_or_ranked_hits_returns_each_hit_once(pool: Pool, make_job: JobFactory) -> None:
    # Chunks matching one, two or three of the words, some with equal scores.
    words = ["kettle", "lantern", "compass"]
    texts = {f"d{i:02}.txt": " ".join(w for j, w in enumerate(words) if (i >> j) & 1 or i % 3 == j) for i in range(24)}
    await _store(pool, make_job, texts)
    everything = (await search.search(pool, "kettle lantern compass", mode="keyword", limit=100)).hits
    assert len(everything) == 24
    seen, cursor = [], None
    while True:
        page = await search.search(pool, "kettle lantern compass", mode="keyword", limit=5, cursor=cursor)
        seen += [h.chunk_id for h in page.hits]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == [h.chunk_id for h in everything]


async def test_websearch_syntax_still_matches_as_written(pool: Pool, make_job: JobFactory) -> None:
    await _store(
        pool, make_job, {"heron.txt": "A grey heron in the shallows.", "both.txt": "A heron where the river bends."}
    )
    assert [h.uri for h in (await search.search(pool, "heron -river", mode="keyword")).hits] == ["heron.txt"]
    assert [h.uri for h in (await search.search(pool, '"river bends"', mode="keyword")).hits] == ["both.txt"]


@pytest.mark.parametrize("query", ["the of and", "?!", "to be or not to be"])
async def test_a_query_of_stop_words_is_refused_in_keyword_mode(pool: Pool, make_job: JobFactory, query: str) -> None:
    await _store(pool, make_job, {"a.txt": "To be or not to be."})
    with pytest.raises(search.SearchRefused, match="stop words"):
        await search.search(pool, query, mode="keyword")


async def test_a_forged_cursor_is_refused(pool: Pool, make_job: JobFactory) -> None:
    for forged in ["bm90IGpzb24", cursors.encode_search(1.0, 1)[:-2] + "xx", "WzEsIDIsIDMsIDRd"]:
        with pytest.raises(cursors.InvalidCursor):
            await search.search(pool, "heron", mode="keyword", cursor=forged)


async def test_word_rarity_is_counted_in_the_searched_namespaces_only(pool: Pool, make_job: JobFactory) -> None:
    # In namespace a, "river" is the rare word; in b (a security boundary) it is everywhere.
    a = await make_job(name="docs", namespace="a")
    b = await make_job(name="docs", namespace="b")
    for i in range(4):
        await documents.store_document(pool, a.uid, 1, _doc(f"heron{i}.txt", "A heron waits."))
    await documents.store_document(pool, a.uid, 1, _doc("river.txt", "A river runs."))
    for i in range(20):
        await documents.store_document(pool, b.uid, 1, _doc(f"b{i}.txt", "The river, the river."))
    only_a = search.SearchFilter(namespaces=["a"])
    hits = (await search.search(pool, "heron river", mode="keyword", where=only_a)).hits
    assert hits[0].uri == "river.txt" and {h.namespace for h in hits} == {"a"}


async def test_with_work_bounded_a_chunk_holding_every_common_word_still_ranks_first(
    pool: Pool, make_job: JobFactory
) -> None:
    # Both words are in more chunks than the bound; the one chunk holding both is stored last.
    texts = {f"a{i}.txt": "alpha" for i in range(10)} | {f"b{i}.txt": "beta" for i in range(10)}
    await _store(pool, make_job, texts | {"both.txt": "alpha beta"})
    hits = (await search.search(pool, "alpha beta", mode="keyword", ranked_matches=5)).hits
    assert hits[0].uri == "both.txt" and len(hits) <= 5
