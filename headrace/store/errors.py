"""The database's errors by what they mean to a caller, so that nothing outside the store imports asyncpg.

The CLI turns them into one line with the fix (`cli_errors.py`), the API into a 400 or 504 (search),
the ingest service into a 503 (`store.outage` decides whether an error is a lost connection).
"""

import asyncpg

InvalidDatabaseUrl = asyncpg.exceptions.ClientConfigurationError
"""The database URL cannot be parsed or names an unknown option."""

CREDENTIALS_REFUSED: tuple[type[Exception], ...] = (
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
)
"""The server refused the user or password."""

NoSuchDatabase = asyncpg.InvalidCatalogNameError
"""The server has no database of the URL's name."""

NO_SCHEMA: tuple[type[Exception], ...] = (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError)
"""The database holds no Headrace schema (or not this table of it) yet."""

CannotConnectNow = asyncpg.CannotConnectNowError
"""The server is starting up or shutting down."""

DataError = asyncpg.exceptions.DataError
"""Postgres refused a value a statement was given (out of range, malformed)."""

QueryCanceledError = asyncpg.exceptions.QueryCanceledError
"""A statement ran past its `statement_timeout`, or was cancelled."""

DeadlockDetected = asyncpg.exceptions.DeadlockDetectedError
"""Postgres ended this transaction to break a cycle of lock waits; it rolled back whole."""

MAYBE_CONNECTION_LOST: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
"""Every type `store.outage.is_connection_error` may find to be a lost connection (it looks closer at some)."""
