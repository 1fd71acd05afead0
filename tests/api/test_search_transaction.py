"""The search transaction: planned with its values every time (so the HNSW index stays in use), no
JIT, settings that end with the transaction, and a statement timeout that reaches the caller as 504."""

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from headrace.api.settings import ApiSettings
from headrace.embedding.builtin import BuiltinEmbedder
from headrace.store import cursors, search, vectors
from headrace.store.db import Pool, create_pool
from headrace.store.search import statistics as search_statistics
from tests.api.conftest import bearer, ingest, serve

ADMIN = bearer("admin-token")
FILES = {f"part-{i:02}.txt": f"Ferry crossing number {i} over the sound, on the {i}th tide." for i in range(12)}


async def _embed(space: vectors.Space, text: str) -> list[float]:
    return (await BuiltinEmbedder().embed([text]))[0]


async def test_repeated_searches_on_one_connection_never_use_a_generic_plan(
    dsn: str, pool: Pool, tmp_path: Path
) -> None:
    # asyncpg prepares each statement once per connection; Postgres may then switch it to a generic
    # plan, which for the semantic SQL scans every vector instead of the HNSW index.
    await ingest(pool, tmp_path, namespace="team-a", name="ferries", files=FILES)
    one = await create_pool(dsn, min_size=1, max_size=1)
    try:
        modes: list[search.Mode] = ["semantic", "hybrid", "keyword"]
        for mode in modes:
            for i in range(12):
                page = await search.search(one, f"ferry crossing {i}", mode=mode, embed=_embed, limit=3)
                assert page.hits, mode
        async with one.acquire() as conn:
            plans = await conn.fetch(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements WHERE custom_plans > 0"
            )
    finally:
        await one.close()
    searched = [p for p in plans if "headrace.chunks" in p["statement"]]
    assert searched and all(p["custom_plans"] >= 12 for p in searched if "embeddings" in p["statement"])
    assert [p["statement"][:60] for p in searched if p["generic_plans"]] == []


async def test_with_search_statistics_only_their_query_runs_on_a_generic_plan(
    dsn: str, pool: Pool, tmp_path: Path
) -> None:
    # The statistics query is planned once (its plan does not depend on the values); the semantic
    # SQL that follows it in a hybrid search is still planned with its values every time.
    job = await ingest(pool, tmp_path, namespace="team-a", name="ferries", files=FILES)
    await search_statistics.build(pool, job.uid)
    one = await create_pool(dsn, min_size=1, max_size=1)
    try:
        for i in range(12):
            page = await search.search(
                one, f"ferry crossing {i}", mode="hybrid", embed=_embed, limit=3, ranked_matches=100
            )
            assert page.hits
        async with one.acquire() as conn:
            plans = await conn.fetch("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
            assert await conn.fetchval("SHOW plan_cache_mode") == "auto"  # nothing of the search stays on it
    finally:
        await one.close()
    (statistics,) = [p for p in plans if "headrace.lexemes" in p["statement"]]
    assert statistics["generic_plans"] >= 11
    (semantic,) = [p for p in plans if "headrace.embeddings e" in p["statement"]]
    assert (semantic["custom_plans"], semantic["generic_plans"]) == (12, 0)


SETTINGS = ("jit", "plan_cache_mode", "statement_timeout")


async def test_settings_hold_in_the_search_transaction_and_end_with_it(dsn: str, pool: Pool, tmp_path: Path) -> None:
    async with pool.acquire() as conn:
        outside = [await conn.fetchval(f"SHOW {name}") for name in SETTINGS]
        async with conn.transaction(readonly=True):
            await conn.execute(search.transaction_settings(1234))
            assert [await conn.fetchval(f"SHOW {name}") for name in SETTINGS] == ["off", "force_custom_plan", "1234ms"]
    await ingest(pool, tmp_path, namespace="team-a", name="ferries", files=FILES)
    one = await create_pool(dsn, min_size=1, max_size=1)
    try:
        assert (await search.search(one, "ferry", mode="hybrid", embed=_embed)).hits
        with pytest.raises(cursors.InvalidCursor):
            await search.search(one, "ferry", cursor="bm90IGEgY3Vyc29y")
        with pytest.raises(search.SearchRefused):  # refused inside the transaction: it must still end
            await search.search(one, "ferry", mode="semantic")
        # The pool hands this connection to other work next: nothing of the searches may stay on it.
        async with one.acquire() as conn:
            assert not conn.is_in_transaction()
            assert [await conn.fetchval(f"SHOW {name}") for name in SETTINGS] == outside
            assert await conn.fetchval("SELECT current_setting('transaction_read_only')") == "off"
    finally:
        await one.close()


@pytest.mark.parametrize("statistics", [False, True], ids=["exact", "statistics"])
async def test_a_search_over_its_timeout_is_a_504(
    settings: Callable[..., ApiSettings], pool: Pool, tmp_path: Path, statistics: bool
) -> None:
    job = await ingest(pool, tmp_path, namespace="team-a", name="ferries", files=FILES)
    if statistics:
        await search_statistics.build(pool, job.uid)
    async with serve(settings(search_timeout_ms=200)) as client:
        assert (await client.get("/v1/search", params={"q": "ferry"}, headers=ADMIN)).status_code == 200
        # Another transaction holds the chunks table: the search waits, and its statement timeout ends it.
        async with pool.acquire() as holder, holder.transaction():
            await holder.execute("LOCK TABLE headrace.chunks IN ACCESS EXCLUSIVE MODE")
            for mode in ("keyword", "semantic", "hybrid"):
                answer = await asyncio.wait_for(
                    client.get("/v1/search", params={"q": "ferry", "mode": mode}, headers=ADMIN), timeout=60
                )
                assert answer.status_code == 504, (mode, answer.text)
                assert answer.headers["content-type"] == "application/problem+json"
                detail = answer.json()["detail"]
                assert detail.startswith("the search took longer than its timeout of 200 ms: narrow it"), detail
        assert (await client.get("/v1/search", params={"q": "ferry"}, headers=ADMIN)).status_code == 200
