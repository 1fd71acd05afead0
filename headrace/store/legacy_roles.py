"""Removing the per-namespace Postgres roles that releases before the ingest service made.

Those releases gave each namespace's workers a login role of their own (`<prefix>ns_<namespace uid>`,
a member of the group role `<prefix>tenant`), listed in `headrace.tenants`, and wrote its URL into a
Secret in the namespace. Workers now hold no database credential (they call the ingest service), so
the operator drops those roles when it starts: every copy of those URLs stops opening Postgres (migration
0016 already took every privilege they held on the schema, with the row-level security they lived under). The
rows of `headrace.tenants` stay until the operator has deleted the namespace's Secret
(`legacy_secrets`, `forget`), so an operator that restarts in between still knows where to look.

Idempotent and cheap once done: with no role left, `drop_roles` reads one empty table and returns.
"""

import contextlib
import logging
import uuid
from dataclasses import dataclass

import asyncpg

from headrace.store.db import Connection, Pool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LegacySecret:
    """A namespace that may still hold the worker Secret of an earlier release, and the role it named."""

    namespace: str
    namespace_uid: uuid.UUID
    role: str


LOCK_TENANTS = "LOCK TABLE headrace.tenants IN SHARE ROW EXCLUSIVE MODE"
"""One operator at a time: two starting together (an upgrade's old and new pod) must not race."""


async def drop_roles(pool: Pool) -> list[str]:
    """Drop every tenant login role of `headrace.tenants` and their group roles; returns the roles
    dropped. A role Postgres refuses to drop is logged with the reason and left for an admin."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(LOCK_TENANTS)
        listed = [row["role"] for row in await conn.fetch("SELECT role FROM headrace.tenants ORDER BY role")]
        logins = [
            row["rolname"]
            for row in await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])", listed)
        ]
        groups = await _groups(conn, logins)
    dropped = []
    for role in logins:
        if await _drop(pool, role, group=False):
            dropped.append(role)
    for role in groups:
        if await _drop(pool, role, group=True):
            dropped.append(role)
    if dropped:
        log.info("Dropped database roles", extra={"roles": dropped, "why": "workers call the ingest service now"})
    return dropped


async def _groups(conn: Connection, logins: list[str]) -> list[str]:
    """The group roles of earlier releases: those the tenant roles belong to. One with no member left holds
    nothing of ours (migration 0016 revoked every privilege the tenant roles had) and is left alone."""
    rows = await conn.fetch(
        """
        SELECT DISTINCT g.rolname AS name FROM pg_auth_members m
        JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid
        WHERE r.rolname = ANY($1::text[])
        ORDER BY 1
        """,
        logins,
    )
    return [row["name"] for row in rows]


async def _drop(pool: Pool, role: str, *, group: bool) -> bool:
    """Take the role's login, end its sessions where the owner may, revoke what it was granted in our
    schema, and drop it. False (logged) when Postgres refuses."""
    name = _ident(role)
    try:
        async with pool.acquire() as conn, conn.transaction():
            if not group:
                await conn.execute(f"ALTER ROLE {name} NOLOGIN PASSWORD NULL")
            else:
                for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
                    await conn.execute(f"REVOKE ALL ON ALL {kind} IN SCHEMA headrace FROM {name}")
                await conn.execute(f"REVOKE ALL ON SCHEMA headrace FROM {name}")
        if not group:
            # Sessions opened before keep going until they end: end them where the owner may (a superuser,
            # or a member of the role; a CREATEROLE owner on Postgres 16+ is neither by default). Those left
            # lose every privilege with the role.
            with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
                await pool.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
        await pool.execute(f"DROP ROLE IF EXISTS {name}")
    except asyncpg.PostgresError as exc:
        log.warning(
            "Left a database role",
            extra={"role": role, "error": str(exc), "fix": f"an admin runs: DROP OWNED BY {name}; DROP ROLE {name}"},
        )
        return False
    return True


async def legacy_secrets(pool: Pool) -> dict[uuid.UUID, LegacySecret]:
    """The namespaces (by UID) whose worker Secret of an earlier release may still exist. Those with no
    live job are forgotten: their IngestionJobs owned the Secret, so the garbage collector deleted it
    with the last of them."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "DELETE FROM headrace.tenants t WHERE NOT EXISTS (SELECT 1 FROM headrace.jobs j "
            "WHERE j.namespace_uid = t.namespace_uid AND j.deleted_at IS NULL)"
        )
        rows = await conn.fetch("SELECT role, namespace, namespace_uid FROM headrace.tenants")
    return {
        row["namespace_uid"]: LegacySecret(
            namespace=row["namespace"], namespace_uid=row["namespace_uid"], role=row["role"]
        )
        for row in rows
    }


async def forget(pool: Pool, namespace_uid: uuid.UUID) -> None:
    """The namespace's Secret is gone: nothing of the earlier release is left to remove there."""
    await pool.execute("DELETE FROM headrace.tenants WHERE namespace_uid = $1", namespace_uid)


def _ident(name: str) -> str:
    """A role name as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'
