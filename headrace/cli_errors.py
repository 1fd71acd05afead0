"""Errors as a person at a terminal reads them: one line saying what went wrong and, where there is one, the fix.

Every `headrace` command runs inside `Group.invoke` below. An error a user can cause (a database that is not
there, a refused password, an index not built yet, an interrupt) becomes one line on stderr and a non-zero
exit; anything else is a bug and says so, in one line too. `headrace --debug ...` shows the traceback
instead. This is the one place that maps exception types to messages: commands raise, they do not print.
"""

import signal
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click

from headrace.signals import Interrupted
from headrace.store import errors as db

EXIT_FAILED = 1
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as a shell reports Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143

DATABASE_URL_KEY = "headrace.database_url"
"""Where a command notes the database URL it connects to (`remember_database`), so errors can name it."""


def remember_database(url: str) -> None:
    """Note the database the current command uses, for the messages below."""
    context = click.get_current_context(silent=True)
    if context is not None:
        context.find_root().meta[DATABASE_URL_KEY] = url


def _database_place() -> str:
    """host:port/database of the current command's database, without credentials."""
    context = click.get_current_context(silent=True)
    url = context.find_root().meta.get(DATABASE_URL_KEY) if context is not None else None
    if not url:
        return "the database"
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the database"
    socket = parse_qs(parts.query).get("host")  # a Unix socket's folder, as the embedded server's URL has
    return f"the database at {parts.hostname or (socket[0] if socket else 'localhost')}{port}{parts.path}"


_FIX_URL = "check --database-url or HEADRACE_DATABASE_URL"


def describe(error: BaseException) -> str | None:
    """One line for an error a user can cause, with the fix where there is one; None for anything else."""
    if isinstance(error, Interrupted):
        return f"Interrupted ({error.args[0]}){': ' + error.done if error.done else ''}."
    if isinstance(error, KeyboardInterrupt):
        return "Interrupted (SIGINT)."
    if isinstance(error, db.InvalidDatabaseUrl):
        return f"the database URL is not valid: {error} ({_FIX_URL}; e.g. postgresql://user:password@host:5432/db)"
    if isinstance(error, db.CREDENTIALS_REFUSED):
        return f"{_database_place()} refused the credentials: {error} ({_FIX_URL})"
    if isinstance(error, db.NoSuchDatabase):
        return f"{_database_place()} does not exist: {error} ({_FIX_URL})"
    if isinstance(error, db.NO_SCHEMA):
        return (
            f"{_database_place()} holds no Headrace index yet ({error}): ingest something first with "
            "`headrace run -f job.yaml` or `headrace demo`, or apply the schema with `headrace migrate`"
        )
    if isinstance(error, db.CannotConnectNow):
        return f"{_database_place()} is starting up or shutting down: try again in a moment"
    if isinstance(error, TimeoutError):
        return f"{_database_place()} did not answer in time: is it running and reachable? ({_FIX_URL})"
    if isinstance(error, OSError) and _is_connect_error(error):
        return f"cannot reach {_database_place()}: {error.strerror or error} (is it running? {_FIX_URL})"
    from headrace.embedding import EmbeddingError
    from headrace.local import LocalModeUnavailable
    from headrace.store.db import PoolExhausted
    from headrace.store.migrate import StaleSchema
    from headrace.store.search import SearchTimedOut
    from headrace.worker.remote import IngestUnreachable

    if isinstance(error, SearchTimedOut):
        return f"{error}: narrow it to fewer jobs or documents with --namespace, --job or --prefix"

    if isinstance(error, EmbeddingError | PoolExhausted | StaleSchema | LocalModeUnavailable | IngestUnreachable):
        return str(error)
    return None


def _is_connect_error(error: OSError) -> bool:
    """A connection that could not be made: refused, unreachable, unknown host, no socket file."""
    import errno
    import socket

    if isinstance(error, socket.gaierror | ConnectionError):
        return True
    return error.errno in (errno.ENOENT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT) or (
        error.errno is None and "connect" in str(error).lower()  # asyncpg's "Multiple exceptions: ..."
    )


class Group(click.Group):
    """The `headrace` command group: every subcommand's errors pass through `describe`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (Exception, KeyboardInterrupt) as error:
            if ctx.meta.get("headrace.debug"):
                raise
            if isinstance(error, Interrupted):
                code = error.exit_code
            elif isinstance(error, KeyboardInterrupt):
                code = EXIT_INTERRUPTED
            else:
                code = EXIT_FAILED
            line = describe(error)
            if line is None:
                name = type(error).__name__
                line = f"unexpected error: {name}: {error} (this is a bug; `headrace --debug ...` shows where)"
            click.echo(line if isinstance(error, KeyboardInterrupt | Interrupted) else f"Error: {line}", err=True)
            sys.stdout.flush()
            ctx.exit(code)
