"""The operator's statistics loop (headrace/operator/statistics.py), one pass at a time, on real Postgres as
the chart runs it: connected as the role that ran the migrations, so owning the tables it analyzes."""

from collections.abc import AsyncIterator

import asyncpg
import pytest

from headrace.operator.statistics import build_due_statistics
from headrace.store import migrate, search
from headrace.store.db import Pool, create_pool
from tests.conftest import ingest_demo_corpus, owned_database

pytestmark = pytest.mark.postgres


@pytest.fixture
async def owner_pool(postgres_server: str) -> AsyncIterator[Pool]:
    """A pool as the chart's operator connects: as the owner, no superuser, who ran the migrations (the
    migration hook and the operator read the same `DATABASE_URL`) after an admin created pgvector."""
    async with owned_database(postgres_server) as (dsn, admin_dsn):
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute("CREATE EXTENSION vector")
        finally:
            await admin.close()
        pool = await create_pool(dsn)
        try:
            await migrate.migrate(pool)
            yield pool
        finally:
            await pool.close()


async def _analyzed(pool: Pool) -> dict[str, int]:
    """How many times each table a search is planned on was analyzed by an ANALYZE statement (autovacuum's
    count apart): a role that does not own a table gets a warning from its ANALYZE, and no count."""
    rows = await pool.fetch(
        "SELECT schemaname || '.' || relname AS name, analyze_count FROM pg_stat_user_tables "
        "WHERE schemaname || '.' || relname = ANY($1::text[])",
        list(search.PLANNED_TABLES),
    )
    return {r["name"]: r["analyze_count"] for r in rows}


async def test_a_pass_that_built_statistics_analyzes_the_searched_tables_once(owner_pool: Pool) -> None:
    pool = owner_pool
    never = dict.fromkeys(search.PLANNED_TABLES, 0)
    assert await _analyzed(pool) == never
    assert await build_due_statistics(pool) == 0
    assert await _analyzed(pool) == never, "nothing was due: nothing to analyze"

    job = await ingest_demo_corpus(pool)  # a finished run, whose chunks and vectors no ANALYZE has seen
    assert await pool.fetchval("SELECT count(*) FROM headrace.embeddings WHERE job_uid = $1", job.uid) > 0
    assert await build_due_statistics(pool) == 1
    once = dict.fromkeys(search.PLANNED_TABLES, 1)
    assert await _analyzed(pool) == once, "the pass that built the job's statistics analyzed what its run wrote"

    assert await build_due_statistics(pool) == 0
    assert await _analyzed(pool) == once, "the statistics were current: nothing to analyze"
