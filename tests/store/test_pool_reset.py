"""A pool made with `reset_sessions=False` (the ingest service's) still hands out no open transaction."""

import logging

import pytest

from headrace.store.db import close_pool, create_pool


@pytest.mark.parametrize("acquire_timeout", [None, 5.0])
async def test_a_transaction_left_open_is_rolled_back_on_release(
    dsn: str, acquire_timeout: float | None, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=1, acquire_timeout=acquire_timeout, reset_sessions=False)
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TEMPORARY TABLE IF NOT EXISTS left_open (x int)")
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            with caplog.at_level(logging.ERROR):  # asyncpg reports a transaction it had to roll back
                await conn.execute("BEGIN; INSERT INTO left_open VALUES (1)")
        async with pool.acquire() as conn:  # the same connection: the pool holds one
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM left_open") == 0
    finally:
        await close_pool(pool)
