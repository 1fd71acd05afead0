"""Riding out a Postgres restart or failover: the one retry policy of every database call that may wait.

A managed Postgres fails over, and a self-run one restarts, in well under two minutes. Until it is back,
every connection breaks (admin shutdown, reset, refused, "the database system is starting up"). A worker
or an operator that let such an error escape would crash, and a crashed worker pod counts against its
Job's backoffLimit: one routine failover could fail a run. So a unit of work (one statement, or one
function that opens its own transaction) is retried with exponential backoff while the error says the
connection is the problem, for a little more than two minutes.

Only connection errors are retried. A constraint violation, a bug or a statement that ran past
`command_timeout` raises at once: retrying would only repeat it. Never retry a call made on a
connection inside a transaction: the transaction died with the connection, so retry the whole unit.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import asyncpg
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_delay, wait_exponential
from tenacity.wait import WaitBaseT

log = logging.getLogger(__name__)

OUTAGE_SECONDS = 150.0
"""How long a unit of work keeps retrying: a two-minute outage, plus the last backoff step."""

MAX_BACKOFF_SECONDS = 10.0

_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, and the client's "connection was closed"
    asyncpg.CannotConnectNowError,  # 57P03: the database system is starting up or shutting down
    asyncpg.AdminShutdownError,  # 57P01: terminating connection due to administrator command
    asyncpg.CrashShutdownError,  # 57P02: another server process crashed
    asyncpg.TooManyConnectionsError,  # 53300: every slot taken while clients reconnect at once
    OSError,  # refused, reset, unreachable, no such socket file
)

P = ParamSpec("P")
T = TypeVar("T")


def is_connection_error(error: BaseException) -> bool:
    """Whether the error says the database connection was lost or cannot be made right now."""
    if isinstance(error, TimeoutError):  # an OSError, but a statement timeout is not an outage
        return False
    if isinstance(error, asyncpg.InterfaceError):  # a pooled connection used after the server closed it
        return "connection is closed" in str(error)
    if isinstance(error, asyncpg.InternalClientError):
        # The server ended the session mid-statement (a shutdown) and asyncpg's protocol was left
        # between states (MagicStack/asyncpg#784, sqlalchemy#13241): that connection is dead, a new one works.
        return "cannot switch to state" in str(error)
    return isinstance(error, _CONNECTION_ERRORS)


def _log_retry(state: RetryCallState, *, message: str = "Lost database connection") -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        message,
        extra={
            "call": getattr(state.fn, "__qualname__", str(state.fn)),
            "attempt": state.attempt_number,
            "retry_in": round(state.upcoming_sleep, 1),
            "error": repr(error),
        },
    )


BACKOFF = wait_exponential(multiplier=0.5, max=MAX_BACKOFF_SECONDS)


def retrying(
    *,
    give_up_after: float | None = None,
    is_outage: Callable[[BaseException], bool] = is_connection_error,
    wait: WaitBaseT = BACKOFF,
    message: str = "Lost database connection",
) -> AsyncRetrying:
    """The policy: connection errors only, exponential backoff from 0.5 s up to 10 s, then reraise after
    `give_up_after` seconds (`OUTAGE_SECONDS`, read when the policy is made).

    The worker's client of the ingest service (`worker/remote.py`) keeps the same budget and backoff
    for its own outages (`is_outage`: the service unreachable or answering 502/503/504)."""
    return AsyncRetrying(
        retry=retry_if_exception(is_outage),
        wait=wait,
        stop=stop_after_delay(OUTAGE_SECONDS if give_up_after is None else give_up_after),
        before_sleep=lambda state: _log_retry(state, message=message),
        reraise=True,
    )


async def ride_out(call: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`await call(*args, **kwargs)`, retried under the policy while the database is unreachable."""
    return await retrying()(call, *args, **kwargs)
