"""The bounds on search work: keyword ranking capped at `ranked_matches`; hybrid's keyword half takes any word."""

from headrace.embedding.builtin import embed_sync
from headrace.store import documents, search, vectors
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


async def test_hybrid_keyword_half_matches_any_word(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job()
    texts = {"bread.txt": "Sourdough bread needs a starter.", "car.txt": "The engine needs new spark plugs."}
    space = await vectors.ensure_space(pool, "wordllama-l2-supercat", 256)
    for uri, text in texts.items():
        await documents.store_document(pool, job.uid, 1, _doc(uri, text), space=space, embeddings=embed_sync([text]))

    async def embed(space: vectors.Space, text: str) -> list[float]:
        return embed_sync([text])[0]

    assert (await search.search(pool, "sourdough engine", mode="keyword")).hits == []  # every word must match
    hybrid = await search.search(pool, "sourdough engine", mode="hybrid", embed=embed, candidates=2)
    # A chunk ranked by one half scores at most 1/(60 + 1); both chunks score more, so the keyword
    # half ranked both, though neither holds both words.
    assert {h.uri for h in hybrid.hits} == set(texts)
    assert all(h.score > 1 / (search.RRF_K + 1) for h in hybrid.hits), [h.score for h in hybrid.hits]
