"""The plans of a search over rows no ANALYZE has seen yet (a run just ended, finished or interrupted, before
autovacuum): the semantic SQL walks the space's HNSW index once the run's writer has analyzed them."""

from typing import Any

from headrace.model import search_defaults
from headrace.store import search
from headrace.store.db import Pool
from headrace.store.search import semantic
from headrace.store.search.scope import scope
from headrace.store.vectors import vector_literal
from tests.conftest import ingest_demo_corpus


async def _semantic_plan(pool: Pool) -> str:
    """The semantic SQL's plan as a search runs it: every job searched, with the search's settings."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            f"{search.transaction_settings(search_defaults.TIMEOUT_MS)}; {semantic.settings(search_defaults.EF_SEARCH)}"
        )
        where = await scope(conn, namespaces=None, job=None, job_uid=None)
        (space,) = where.spaces.values()
        args: list[Any] = [
            vector_literal([0.1] * space.dimensions),
            space.id,
            where.jobs_in(space.id),
            None,
            None,
            search_defaults.CANDIDATES,
        ]
        rows = await conn.fetch("EXPLAIN " + semantic._semantic_sql(space), *args, None, None)
    return "\n".join(r[0] for r in rows)


async def test_after_a_run_the_semantic_search_walks_the_hnsw_index_not_every_vector(pool: Pool) -> None:
    # Autovacuum off for the test's tables: the state between a run's last write and autovacuum's ANALYZE.
    for table in search.PLANNED_TABLES:
        await pool.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    await ingest_demo_corpus(pool)
    # Unanalyzed, Postgres guesses that the job filter keeps a few of the space's vectors, and sorts
    # the exact distance of every one of them (a Sort under the Limit) instead of walking the index.
    assert "embeddings_hnsw" not in await _semantic_plan(pool)

    await search.analyze(pool)  # what `headrace run` does as a run ends, finished or interrupted

    plan = await _semantic_plan(pool)
    assert "Index Scan using embeddings_hnsw" in plan, plan
