"""Keyword search from the search statistics (headrace/store/search/statistics.py): the same hits as
the exact path when every list is complete, the best chunk when lists are truncated, chunks stored or
deleted since the build, and when the statistics are due."""

import pytest

from headrace.store import cursors, documents, runs, search
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord
from headrace.store.search import query as parsing
from headrace.store.search import statistics as search_statistics
from tests.conftest import JobFactory, volume_spec
from tests.store.test_search_configs import _doc

BOUND = 10_000  # the API's default: bounded keyword ranking, which reads the statistics
ENGLISH = volume_spec(textSearchConfig="english")
WORDS = ["kettle", "lantern", "compass", "harbour", "meadow", "anchor", "copper", "thistle"]


def _text(i: int) -> str:
    # Chunks of different lengths holding different words, some more than once.
    held = [w for j, w in enumerate(WORDS) if (i * (j + 3)) % (j + 2) == 0 or i % 7 == j]
    return " ".join(held + held[: i % 3] + ["filler"] * (i % 5)) or "nothing here"


async def _corpus(pool: Pool, make_job: JobFactory, count: int = 60) -> JobRecord:
    job = await make_job(ENGLISH)  # the lexemes named below are english's stems
    for i in range(count):
        await documents.store_document(pool, job.uid, 1, _doc(f"d{i:03}.txt", _text(i)))
    return job


async def _exact_hits(pool: Pool, query: str, statistics: dict[str, object], limit: int) -> list[tuple[int, float]]:
    """Exact ranking of every match (keyword.EXACT_SQL over the GIN index) by the given statistics,
    which a cursor above every score carries."""
    cursor = cursors.encode_search(1e300, 0, statistics)
    page = await search.search(pool, query, mode="keyword", limit=limit, cursor=cursor, ranked_matches=None)
    return [(h.chunk_id, h.score) for h in page.hits]


async def _fast(pool: Pool, job: JobRecord, query: str, limit: int) -> search_statistics.Ranked:
    async with pool.acquire() as conn:
        config = await conn.fetchval("SELECT text_search_config::text FROM headrace.jobs WHERE uid = $1", job.uid)
        ranked = await search_statistics.rank(
            conn,
            query,
            [config],
            [job.uid],
            (None, None),
            None,
            limit,
            operators=parsing.uses_operators(query),
            statistics=None,
            max_terms=parsing.MAX_QUERY_TERMS,
        )
    assert ranked is not None, "the statistics path answered"
    return ranked


@pytest.mark.parametrize(
    "query",
    [
        "kettle",
        "kettle lantern compass",
        "harbour anchor thistle copper",
        '"kettle lantern"',
        "meadow -copper",
        "kettle --lantern",  # an option (--force) is a word to find, not a negation
    ],
)
async def test_with_complete_lists_the_statistics_rank_as_the_exact_path(
    pool: Pool, make_job: JobFactory, query: str
) -> None:
    job = await _corpus(pool, make_job)
    built = await search_statistics.build(pool, job.uid)
    assert built is not None and built.chunks == 60
    fast = await _fast(pool, job, query, 10)
    assert fast.complete and fast.statistics is not None
    assert fast.hits, "the query matches"
    # Exact ranking of every match, by the same N, average length and document frequencies.
    assert fast.hits == await _exact_hits(pool, query, fast.statistics, 10)


@pytest.mark.parametrize("query", ["kettle", "kettle lantern compass", "harbour anchor thistle copper filler"])
async def test_a_query_scores_the_same_before_and_after_a_statistics_build(
    pool: Pool, make_job: JobFactory, query: str
) -> None:
    job = await _corpus(pool, make_job)
    # Before: no statistics, so every search ranks on the exact path, by the job's own collection.
    before = await search.search(pool, query, mode="keyword", limit=10, ranked_matches=None)
    bounded_before = await search.search(pool, query, mode="keyword", limit=10, ranked_matches=BOUND)
    assert before.hits, "the query matches"
    await search_statistics.build(pool, job.uid)
    # After: the bounded search reads the statistics; the unbounded one still ranks every match exactly.
    fast = await _fast(pool, job, query, 10)
    assert fast.complete
    after = await search.search(pool, query, mode="keyword", limit=10, ranked_matches=BOUND)
    exact_after = await search.search(pool, query, mode="keyword", limit=10, ranked_matches=None)
    expected = [(h.chunk_id, h.score) for h in before.hits]
    assert fast.hits == expected
    assert [(h.chunk_id, h.score) for h in after.hits] == expected
    assert [(h.chunk_id, h.score) for h in exact_after.hits] == expected
    assert [(h.chunk_id, h.score) for h in bounded_before.hits] == expected


async def test_the_collection_length_follows_chunks_written_and_deleted(pool: Pool, make_job: JobFactory) -> None:
    job = await _corpus(pool, make_job, count=12)
    truth = "SELECT count(*), sum(length(tsv)) FROM headrace.chunks WHERE job_uid = $1"
    kept = "SELECT sum(chunk_count), sum(lexemes) FROM headrace.documents WHERE job_uid = $1"
    assert tuple(await pool.fetchrow(truth, job.uid)) == tuple(await pool.fetchrow(kept, job.uid))
    # A document rewritten with other text, and one deleted with its chunks.
    await documents.store_document(pool, job.uid, 2, _doc("d001.txt", "lantern lantern meadow copper anchor"))
    await pool.execute("DELETE FROM headrace.documents WHERE job_uid = $1 AND uri = 'd002.txt'", job.uid)
    assert tuple(await pool.fetchrow(truth, job.uid)) == tuple(await pool.fetchrow(kept, job.uid))


async def test_with_truncated_lists_the_best_chunk_still_ranks_first(pool: Pool, make_job: JobFactory) -> None:
    job = await _corpus(pool, make_job)
    # The one chunk holding both words often, among many holding one of them.
    await documents.store_document(pool, job.uid, 1, _doc("best.txt", "kettle kettle kettle compass compass"))
    await search_statistics.build(pool, job.uid, cap=3)
    assert await pool.fetchval(
        "SELECT bool_and(cardinality(ids) = 3) FROM headrace.lexemes WHERE lexeme IN ('kettl', 'compass')"
    )
    page = await search.search(pool, "kettle compass", mode="keyword", ranked_matches=BOUND, limit=5)
    assert page.hits[0].uri == "best.txt"
    # A chunk whose words are in one truncated list only is still scored exactly.
    fast = await _fast(pool, job, "kettle compass", 5)
    assert fast.statistics is not None
    exact = dict(await _exact_hits(pool, "kettle compass", fast.statistics, 100))
    assert all(score == exact[chunk_id] for chunk_id, score in fast.hits)


async def test_chunks_stored_after_the_build_are_found_at_once(pool: Pool, make_job: JobFactory) -> None:
    job = await _corpus(pool, make_job)
    await search_statistics.build(pool, job.uid)
    await documents.store_document(pool, job.uid, 2, _doc("new.txt", "a zeppelin over the harbour harbour harbour"))
    fast = await _fast(pool, job, "zeppelin", 10)
    assert fast.complete and len(fast.hits) == 1
    page = await search.search(pool, "zeppelin harbour", mode="keyword", ranked_matches=BOUND, limit=3)
    assert page.hits[0].uri == "new.txt"
    # Counted in N and in the words' document frequencies, as the exact path counts them.
    assert fast.statistics is not None and fast.statistics["n"] == 61
    assert fast.statistics["df"] == {"english zeppelin": 1}


async def test_too_many_new_chunks_take_the_exact_path(
    pool: Pool, make_job: JobFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await _corpus(pool, make_job, count=10)
    await search_statistics.build(pool, job.uid)
    monkeypatch.setattr(search_statistics, "DELTA_LIMIT", 2)
    for i in range(3):
        await documents.store_document(pool, job.uid, 2, _doc(f"new{i}.txt", f"zeppelin number {i}"))
    async with pool.acquire() as conn:
        ranked = await search_statistics.rank(
            conn, "zeppelin", ["english"], [job.uid], (None, None), None, 10,
            operators=False, statistics=None, max_terms=parsing.MAX_QUERY_TERMS,
        )  # fmt: skip
    assert ranked is None
    assert len((await search.search(pool, "zeppelin", mode="keyword", ranked_matches=BOUND)).hits) == 3


async def test_deleted_chunks_drop_out_at_once_and_from_the_next_build(pool: Pool, make_job: JobFactory) -> None:
    job = await _corpus(pool, make_job)
    await documents.store_document(pool, job.uid, 1, _doc("gone.txt", "kettle kettle kettle"))
    await search_statistics.build(pool, job.uid)
    gone = await pool.fetchval("SELECT c.id FROM headrace.chunks c JOIN headrace.documents d ON d.id = c.document_id "
                               "WHERE d.uri = 'gone.txt'")  # fmt: skip
    assert (await search.search(pool, "kettle", mode="keyword", ranked_matches=BOUND)).hits[0].chunk_id == gone
    await pool.execute("DELETE FROM headrace.documents WHERE uri = 'gone.txt'")
    assert gone not in {
        h.chunk_id for h in (await search.search(pool, "kettle", mode="keyword", ranked_matches=BOUND, limit=100)).hits
    }
    df = await pool.fetchval("SELECT df FROM headrace.lexemes WHERE lexeme = 'kettl'")
    await search_statistics.build(pool, job.uid)
    assert await pool.fetchval("SELECT df FROM headrace.lexemes WHERE lexeme = 'kettl'") == df - 1
    assert not await pool.fetchval("SELECT $1 = ANY(ids) FROM headrace.lexemes WHERE lexeme = 'kettl'", gone)


@pytest.mark.parametrize("cap", [search_statistics.CAP, 4])
async def test_pages_from_the_statistics_return_each_hit_once(pool: Pool, make_job: JobFactory, cap: int) -> None:
    job = await _corpus(pool, make_job)
    # With truncated lists, pages go on on the exact path once the lists run out, at the scores so far.
    await search_statistics.build(pool, job.uid, cap=cap)
    query = "kettle lantern compass"
    matching = await pool.fetchval(
        "SELECT count(*) FROM headrace.chunks WHERE tsv @@ to_tsquery('english', 'kettle | lantern | compass')"
    )
    seen: list[tuple[int, float]] = []
    cursor = None
    while True:
        page = await search.search(pool, query, mode="keyword", ranked_matches=BOUND, limit=7, cursor=cursor)
        seen += [(h.chunk_id, h.score) for h in page.hits]
        if (cursor := page.next_cursor) is None:
            break
    ids = [chunk_id for chunk_id, _ in seen]
    assert len(ids) == len(set(ids)), "no hit twice"
    assert [score for _, score in seen] == sorted((score for _, score in seen), reverse=True)
    if cap == search_statistics.CAP:
        assert len(ids) == matching
    else:  # the champion lists' approximation: a chunk in no list may be passed over on the first page
        assert len(ids) >= 7 * 3


async def test_filters_apply_to_the_statistics_path(pool: Pool, make_job: JobFactory) -> None:
    job = await _corpus(pool, make_job)
    await search_statistics.build(pool, job.uid)
    hits = (
        await search.search(
            pool, "kettle", mode="keyword", ranked_matches=BOUND, where=search.SearchFilter(uri_prefix="d01")
        )
    ).hits
    assert hits and all(h.uri.startswith("d01") for h in hits)


async def test_statistics_are_due_after_a_finished_run_and_not_during_one(pool: Pool, make_job: JobFactory) -> None:
    job = await _corpus(pool, make_job, count=5)
    assert not await search_statistics.stale(pool, job.uid), "no run has finished: nothing to build"
    run = await runs.start_run(pool, job, reason="test")
    assert not await search_statistics.stale(pool, job.uid)
    await pool.execute("UPDATE headrace.runs SET finished_at = now() WHERE job_uid = $1 AND run = $2", job.uid, run)
    assert await search_statistics.stale(pool, job.uid)
    built = await search_statistics.refresh(pool, job.uid)
    assert built is not None and built.chunks == 5
    assert not await search_statistics.stale(pool, job.uid)
    assert await search_statistics.refresh(pool, job.uid) is None
    again = await runs.start_run(pool, job, reason="again")
    assert not await search_statistics.stale(pool, job.uid), "a run in progress: not yet"
    # A run that changed no chunk: the statistics become its own without a rebuild.
    await pool.execute("UPDATE headrace.runs SET finished_at = now() WHERE job_uid = $1 AND run = $2", job.uid, again)
    before = await pool.fetchrow(
        "SELECT run, build_seconds FROM headrace.search_statistics WHERE job_uid = $1", job.uid
    )
    assert await search_statistics.refresh(pool, job.uid) is not None
    after = await pool.fetchrow("SELECT run, build_seconds FROM headrace.search_statistics WHERE job_uid = $1", job.uid)
    assert (before["run"], after["run"]) == (run, again) and after["build_seconds"] == before["build_seconds"]
    assert not await search_statistics.stale(pool, job.uid)


async def test_one_build_of_a_job_at_a_time(pool: Pool, make_job: JobFactory) -> None:
    job = await _corpus(pool, make_job, count=5)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2::uuid::text))", search_statistics._LOCK_CLASS, job.uid
        )
        assert await search_statistics.build(pool, job.uid) is None
    assert await search_statistics.build(pool, job.uid) is not None
    empty = await make_job(name="empty")
    built = await search_statistics.build(pool, empty.uid)
    assert built is not None and (built.chunks, built.lexemes) == (0, 0)


async def test_a_phrase_outside_the_truncated_lists_is_found_from_a_sample(pool: Pool, make_job: JobFactory) -> None:
    job = await make_job(ENGLISH)  # the lexemes named below are english's stems
    texts = {f"kettle{i}.txt": "kettle kettle kettle on the stove" for i in range(6)}
    texts |= {f"copper{i}.txt": "copper copper copper wire" for i in range(6)}
    texts |= {f"phrase{i}.txt": f"a copper kettle number {i} on a long shelf of old things" for i in range(5)}
    for uri, text in texts.items():
        await documents.store_document(pool, job.uid, 1, _doc(uri, text))
    await search_statistics.build(pool, job.uid, cap=2)  # each word's list holds two of its six heavy chunks
    fast = await _fast(pool, job, '"copper kettle"', 10)
    assert fast.complete and fast.statistics is not None
    assert len(fast.hits) == 5
    assert fast.hits == await _exact_hits(pool, '"copper kettle"', fast.statistics, 10)
