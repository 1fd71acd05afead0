"""The bound on search work: keyword ranking capped at `ranked_matches`."""

from headrace.store import documents, search
from headrace.store.db import Pool
from tests.conftest import JobFactory
from tests.store.test_search_configs import _doc


async def test_keyword_ranking_reads_at_most_ranked_matches(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job()
    for i in range(6):
        await documents.store_document(pool, job.uid, 1, _doc(f"d{i}.txt", "tide " * (i + 1)))
    exact = await search.search(pool, "tide", limit=10)
    assert [h.uri for h in exact.hits] == [f"d{i}.txt" for i in reversed(range(6))]
    capped = await search.search(pool, "tide", limit=10, ranked_matches=3)
    assert len(capped.hits) == 3 and {h.uri for h in capped.hits} < {h.uri for h in exact.hits}


async def test_with_work_bounded_a_filter_still_finds_a_common_words_later_matches(
    pool: Pool, make_job: JobFactory
) -> None:
    # "tide" is in more chunks than the bound; the ones the filter keeps were stored last.
    job = await make_job()
    for i in range(8):
        await documents.store_document(pool, job.uid, 1, _doc(f"a/{i}.txt", "tide"))
    for i in range(3):
        await documents.store_document(pool, job.uid, 1, _doc(f"b/{i}.txt", "tide, crest, tide"))
    in_b = search.SearchFilter(uri_prefix="b/")
    capped = await search.search(pool, "tide", where=in_b, limit=10, ranked_matches=4)
    assert sorted(h.uri for h in capped.hits) == ["b/0.txt", "b/1.txt", "b/2.txt"]
    rare = await search.search(pool, "crest", where=in_b, limit=10, ranked_matches=4)
    assert sorted(h.uri for h in rare.hits) == ["b/0.txt", "b/1.txt", "b/2.txt"]
