"""Closing a pool never holds a process that is done: a connection nobody gave back is dropped."""

import asyncio
import logging

import asyncpg
import pytest

from headrace.store.db import close_pool, create_pool


async def _backend_gone(dsn: str, pid: int) -> bool:
    """Whether the server process of that connection goes away; a minute bounds the wait, as a failure."""
    conn = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(60):
            while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        return True
    except TimeoutError:
        return False
    finally:
        await conn.close()


async def test_a_connection_never_released_is_dropped_at_close(dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=2)
    leaked = await pool.acquire()  # e.g. held by a task cancelled mid-statement, never given back
    pid = await leaked.fetchval("SELECT pg_backend_pid()")

    with caplog.at_level(logging.WARNING, logger="headrace.store.db"):
        await asyncio.wait_for(close_pool(pool, timeout=0.5), 30)

    assert await _backend_gone(dsn, pid)
    assert "Dropped database connections still in use at close" in caplog.text


async def test_asyncpg_alone_waits_for_the_release(dsn: str) -> None:
    """Why close_pool bounds the wait: Pool.close() returns only once every connection is back."""
    pool = await create_pool(dsn, min_size=1, max_size=2)
    held = await pool.acquire()
    closing = asyncio.ensure_future(pool.close())
    # Counted, not timed: while close waits, the held connection makes as many round trips through the
    # same loop and server as close would need to close both connections, and many more.
    for _ in range(50):
        assert await held.fetchval("SELECT 1") == 1
    assert pool.is_closing() and not closing.done()
    await pool.release(held)
    await asyncio.wait_for(closing, 30)


async def test_a_pool_whose_connections_are_free_closes_gracefully(dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    pool = await create_pool(dsn, min_size=2, max_size=2)
    pid = await pool.fetchval("SELECT pg_backend_pid()")

    with caplog.at_level(logging.WARNING, logger="headrace.store.db"):
        await close_pool(pool, timeout=30)

    assert await _backend_gone(dsn, pid)
    assert "Dropped" not in caplog.text
