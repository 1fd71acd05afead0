"""Migrations: idempotent, safe when many processes start at once, and a stale schema is refused."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from headrace.store import migrate
from headrace.store.db import create_pool
from tests.conftest import with_database


@pytest.fixture
async def empty_dsn(postgres_server: str) -> AsyncIterator[str]:
    name = f"empty_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(postgres_server)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    yield with_database(postgres_server, name)
    conn = await asyncpg.connect(postgres_server)
    await conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
    await conn.close()


async def test_fresh_database_is_migrated_to_the_expected_version(empty_dsn: str) -> None:
    pool = await create_pool(empty_dsn)
    try:
        assert await migrate.current_version(pool) == 0
        with pytest.raises(migrate.StaleSchema, match="run `headrace migrate`"):
            await migrate.ensure_current(pool)
        applied = await migrate.migrate(pool)
        assert [m.version for m in applied] == [m.version for m in migrate.available_migrations()]
        await migrate.ensure_current(pool)
        tables = {
            r["tablename"] for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'headrace'")
        }
        assert {"jobs", "runs", "tasks", "documents", "chunks", "job_events", "schema_migrations"} <= tables
    finally:
        await pool.close()


async def test_migrating_twice_changes_nothing(empty_dsn: str) -> None:
    pool = await create_pool(empty_dsn)
    try:
        await migrate.migrate(pool)
        assert await migrate.migrate(pool) == []
        assert await pool.fetchval("SELECT count(*) FROM headrace.schema_migrations") == len(
            migrate.available_migrations()
        )
    finally:
        await pool.close()


async def test_concurrent_starters_apply_each_migration_once(empty_dsn: str) -> None:
    pools = [await create_pool(empty_dsn, min_size=1, max_size=1) for _ in range(8)]
    try:
        results = await asyncio.gather(*(migrate.migrate(p) for p in pools))
        assert sum(len(applied) for applied in results) == len(migrate.available_migrations())
        await migrate.ensure_current(pools[0])
    finally:
        await asyncio.gather(*(p.close() for p in pools))
