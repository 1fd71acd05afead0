"""Connections to the one Postgres database shared by the operator, the API and the workers."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:  # the same names at run time, where asyncpg's classes are not subscriptable
    Pool = asyncpg.Pool
    Connection = asyncpg.Connection | PoolConnectionProxy


async def _init_connection(conn: Connection) -> None:
    # Decode jsonb to Python values so no caller parses JSON by hand.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    # regconfig travels as its oid: a job's config read back is written into chunks as it came.
    await conn.set_builtin_type_codec("regconfig", schema="pg_catalog", codec_name="oid")


async def _keep_session(conn: Connection) -> None:
    """A released connection's reset for a pool whose users leave no session state (`create_pool`'s
    `reset_sessions=False`): nothing beyond asyncpg's own rollback of an open transaction. asyncpg's default
    sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every release, one more round trip
    per borrowed connection: a third of the operator's round trips per new IngestionJob
    (docs/benchmarks.md, "Reconcile bursts")."""


class PoolExhausted(Exception):
    """No connection of the pool became free within its acquire timeout: the database is saturated or gone."""


class _BoundedPool(asyncpg.Pool):
    """A pool whose every acquire (`pool.fetch(...)` included) waits at most `acquire_timeout` seconds.

    asyncpg's own acquire waits forever by default, so a saturated pool would hold every request
    until its client gave up; a server answering 503 with Retry-After tells callers to come back.
    """

    __slots__ = ("_acquire_timeout",)

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout

    async def _acquire(self, timeout: float | None) -> Any:  # noqa: ASYNC109 - asyncpg's own signature
        try:
            return await super()._acquire(self._acquire_timeout if timeout is None else timeout)  # type: ignore[misc]
        except TimeoutError as exc:
            raise PoolExhausted(f"no database connection became free within {self._acquire_timeout:g}s") from exc


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    acquire_timeout: float | None = None,
    reset_sessions: bool = True,
) -> Pool:
    """A pool whose connections speak jsonb as Python values.

    With `acquire_timeout`, waiting for a free connection longer than that raises PoolExhausted.
    `reset_sessions=False` skips asyncpg's reset query on every release (`_keep_session`), for a process
    whose code sets nothing per session: the operator's (only `migrate`'s advisory lock, which it releases
    or closes the connection) and the ingest service's (the store's statements, transaction-scoped
    `SET LOCAL` and `set_config(..., true)` at most). The search does not qualify: a connection it used can
    come back with `jit = off` for the session, which the reset undoes. asyncpg itself sets it: the first
    time a connection meets a type it must introspect, it runs `set_config('jit', 'off', false)` around the
    introspection and restores the setting only when it found it on, and inside a search's transaction
    (`SET LOCAL jit = off`) it finds it off. A session-wide `jit = off` at connect would end that, but
    PgBouncer refuses startup parameters it does not know, and a session `SET` under transaction pooling
    reaches other clients.
    """
    reset = None if reset_sessions else _keep_session
    if acquire_timeout is None:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, init=_init_connection, reset=reset, command_timeout=60
        )
        assert pool is not None
        return pool
    bounded = _BoundedPool(
        dsn,
        acquire_timeout=acquire_timeout,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        init=_init_connection,
        reset=reset,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        command_timeout=60,
    )
    await bounded
    return cast("Pool", bounded)


CLOSE_TIMEOUT_SECONDS = 5.0
"""How long closing a pool waits for its connections to be released before it drops them."""


async def close_pool(pool: Pool, *, timeout: float = CLOSE_TIMEOUT_SECONDS) -> None:  # noqa: ASYNC109 - a bound, not a caller's deadline
    """Close the pool, and drop (terminate) its connections if they are not all released within `timeout`.

    asyncpg's `Pool.close()` waits for every connection to be released, with no bound: one a cancelled
    task never gave back holds the process after its work is done (asyncpg says so only after 60 s),
    past a pod's termination grace period. Its docs advise bounding it; the process is exiting, and
    whatever such a connection was doing was already given up.
    """
    try:
        async with asyncio.timeout(timeout):
            await pool.close()
    except TimeoutError:
        log.warning("Dropped database connections still in use at close", extra={"seconds": timeout})
        pool.terminate()


@asynccontextmanager
async def open_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> AsyncIterator[Pool]:
    """A pool for the length of a `with` block."""
    pool = await create_pool(dsn, min_size=min_size, max_size=max_size)
    try:
        yield pool
    finally:
        await close_pool(pool)
