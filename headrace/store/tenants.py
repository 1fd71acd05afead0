"""Tenant roles: one Postgres login role per Kubernetes namespace, confined by row-level security.

The operator (on the owner connection) creates a namespace's role the first time a job runs there, gives
it a fresh random password, and maps it to the namespace's UID in `headrace.tenants`; the policies of
migration 0005 then show that role only the rows of jobs registered with that namespace UID. The role is
keyed by the UID, not the name: a namespace deleted and re-created under the same name gets a new role
that sees nothing of the old one.
"""

import contextlib
import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from headrace.store.db import Connection, Pool

log = logging.getLogger(__name__)

DEFAULT_ROLE_PREFIX = "headrace_"


class MissingPrivilege(RuntimeError):
    """The owner role cannot create roles, so per-namespace credentials are impossible on this Postgres."""


@dataclass(frozen=True)
class TenantCredential:
    """A tenant role and the URL its workers connect with."""

    role: str
    password: str
    rotated_at: datetime

    def url(self, owner_url: str) -> str:
        """The owner's URL (same host, port, database and options) with this role's name and password."""
        parts = urlsplit(owner_url)
        host = parts.netloc.rsplit("@", 1)[-1]
        netloc = f"{quote(self.role, safe='')}:{quote(self.password, safe='')}@{host}"
        return urlunsplit(parts._replace(netloc=netloc))


LOCK_TENANTS = "LOCK TABLE headrace.tenants IN SHARE ROW EXCLUSIVE MODE"
"""One tenant change at a time. A lock on the table, not an advisory lock: any role may take any advisory
lock, so a tenant could hold this one and stall every namespace's credentials; no tenant may lock this
table (they hold no privilege on it), and the lock lets the policies' lookups read it meanwhile."""


def group_role(prefix: str) -> str:
    """The NOLOGIN role every tenant role is a member of; the grants go to it."""
    return f"{prefix}tenant"


ROLE_PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,19}")
"""Short enough for `<prefix>ns_<32 hex digits>` to fit Postgres' 63-byte names; plain enough to need no quoting."""


def check_prefix(prefix: str) -> None:
    """Raise ValueError unless `prefix` is a usable role prefix."""
    if not ROLE_PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(f"tenant role prefix {prefix!r}: 1-20 characters of a-z, 0-9 and _, starting with a letter")


def role_name(prefix: str, namespace_uid: uuid.UUID) -> str:
    """`<prefix>ns_<uid hex>`: unique per namespace incarnation, at most 63 bytes for a short prefix."""
    return f"{prefix}ns_{namespace_uid.hex}"


async def check_privilege(pool: Pool) -> None:
    """Raise MissingPrivilege unless the connected role may create roles (CREATEROLE or superuser)."""
    allowed = await pool.fetchval("SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user")
    if not allowed:
        user = await pool.fetchval("SELECT current_user")
        raise MissingPrivilege(
            f"the database role {user!r} lacks CREATEROLE, which per-namespace worker credentials need: grant it "
            "(ALTER ROLE ... CREATEROLE), or opt in to the shared-credential mode (operator "
            "--tenant-credentials=shared, chart database.tenantCredentials=shared; see docs/security.md)"
        )


async def prepare(pool: Pool, *, prefix: str) -> None:
    """Create the group role if missing and grant it what workers need (idempotent; run at every start, so
    tables added by later migrations get their grants)."""
    group = group_role(prefix)
    async with pool.acquire() as conn, conn.transaction():
        # Two operators starting at once must not both try to create the role.
        await conn.execute(LOCK_TENANTS)
        exists = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", group)
        if not exists:
            await conn.execute(f"CREATE ROLE {_ident(group)} NOLOGIN")
        await conn.execute("SELECT headrace.grant_tenant_access($1)", group)
        await _revoke_temporary(conn)


async def _revoke_temporary(conn: Connection) -> None:
    """Take temporary tables from PUBLIC, hence from tenant roles (which get nothing else from PUBLIC
    that they lack already): a temporary table is disk and catalog churn outside any quota. Only the
    database's owner may; when the installation's user is not, say so and go on."""
    database = await conn.fetchval("SELECT current_database()")
    owns = await conn.fetchval(
        "SELECT pg_has_role(current_user, datdba, 'USAGE') FROM pg_database WHERE datname = $1", database
    )
    if not owns:
        log.warning(
            "Left temporary tables open to every role",
            extra={"database": database, "why": "the installation's user does not own the database"},
        )
        return
    await conn.execute(f"REVOKE TEMPORARY ON DATABASE {_ident(database)} FROM PUBLIC")


async def ensure_credential(
    pool: Pool,
    *,
    namespace: str,
    namespace_uid: uuid.UUID,
    prefix: str,
    rotate_after: timedelta | None,
    force: bool = False,
    now: datetime,
) -> TenantCredential | None:
    """Make the namespace's role exist and log in with a new password when it is new, disabled, `force`d,
    or older than `rotate_after` while none of the namespace's runs is unfinished (a running worker may
    open a new connection with the password it started with). Returns the new credential, or None when
    the current one stands (the operator does not keep passwords: they live only in the Secret)."""
    role = role_name(prefix, namespace_uid)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(LOCK_TENANTS)
        row = await conn.fetchrow("SELECT rotated_at FROM headrace.tenants WHERE role = $1", role)
        login = await conn.fetchval("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", role)
        if row is not None and login and not force:
            due = rotate_after is not None and now - row["rotated_at"] >= rotate_after
            if not due or await _runs_unfinished(conn, namespace_uid):
                return None
        password = secrets.token_urlsafe(32)
        if login is None:
            # No CREATEDB, CREATEROLE, BYPASSRLS: it gets only what the group role was granted.
            await conn.execute(
                f"CREATE ROLE {_ident(role)} LOGIN IN ROLE {_ident(group_role(prefix))} PASSWORD {_literal(password)}"
            )
        else:
            await conn.execute(f"ALTER ROLE {_ident(role)} LOGIN PASSWORD {_literal(password)}")
        # A role of an earlier prefix for this namespace no longer speaks for it.
        await conn.execute("DELETE FROM headrace.tenants WHERE namespace_uid = $1 AND role <> $2", namespace_uid, role)
        await conn.execute(
            """
            INSERT INTO headrace.tenants (role, namespace, namespace_uid, rotated_at) VALUES ($1, $2, $3, $4)
            ON CONFLICT (role) DO UPDATE SET namespace = excluded.namespace, rotated_at = excluded.rotated_at
            """,
            role,
            namespace,
            namespace_uid,
            now,
        )
        return TenantCredential(role=role, password=password, rotated_at=now)


async def disable(pool: Pool, *, namespace_uid: uuid.UUID, prefix: str) -> bool:
    """Stop the namespace's role from logging in once it has no live job (its Secret may have been copied).
    False when the role still serves a live job, or there is none."""
    role = role_name(prefix, namespace_uid)
    async with pool.acquire() as conn, conn.transaction():
        live = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM headrace.jobs WHERE namespace_uid = $1 AND deleted_at IS NULL)",
            namespace_uid,
        )
        exists = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role)
        if live or not exists:
            return False
        await conn.execute(f"ALTER ROLE {_ident(role)} NOLOGIN PASSWORD NULL")
    # Sessions opened before keep going until they end: end them where the owner may (a superuser or a
    # member of the role may; a CREATEROLE owner on Postgres 16+ is neither by default).
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await pool.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
    return True


async def _runs_unfinished(conn: Connection, namespace_uid: uuid.UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM headrace.runs r JOIN headrace.jobs j ON j.uid = r.job_uid "
            "WHERE j.namespace_uid = $1 AND j.deleted_at IS NULL AND r.finished_at IS NULL)",
            namespace_uid,
        )
    )


def _ident(name: str) -> str:
    """A role name as an SQL identifier (ours are [a-z0-9_], but quote anyway)."""
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    """A string as an SQL literal: CREATE/ALTER ROLE take no bind parameters."""
    return "'" + value.replace("'", "''") + "'"
