"""The probes of issue 21's "Why" that the schema can refuse, tried with a real tenant role.

A tenant's worker role may run any SQL. Of what it could do to others, these are refused now: temporary
tables, un-finishing a run to hold its namespace's password rotation off, and stalling the operator's
tenant and embedding-space changes by holding the locks they take. What only taking SQL away from
workers can close (LOCK TABLE on the tables it writes, the migration's advisory lock, connection
slots, `SET statement_timeout`, large objects, `pg_roles`) is listed in docs/security.md, "What a
tenant role can still do", and has no test here that would pass while it is open.
"""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from headrace.store import jobs, tenants, vectors
from headrace.store.db import Pool
from tests.security.test_tenant_isolation import Tenant, prefix, two_tenants

__all__ = ["prefix", "two_tenants"]

pytestmark = pytest.mark.postgres


@pytest.fixture
async def impatient(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """The owner's pool, giving up on any lock it cannot have at once: a wait would be a tenant's doing."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, server_settings={"lock_timeout": "2s"})
    assert pool is not None
    yield pool
    await pool.close()


async def test_a_tenant_role_gets_no_temporary_tables(pool: Pool, two_tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = two_tenants
    conn = await asyncpg.connect(a.url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="temporary"):
            await conn.execute("CREATE TEMPORARY TABLE hoard (x text)")
    finally:
        await conn.close()
    # The owner keeps them.
    async with pool.acquire() as owner, owner.transaction():
        await owner.execute("CREATE TEMPORARY TABLE scratch (x int) ON COMMIT DROP")


async def test_a_tenant_cannot_reopen_a_finished_run(
    pool: Pool, two_tenants: tuple[Tenant, Tenant], prefix: str
) -> None:
    """Re-opening its own finished run would hold its namespace's password rotation off for ever."""
    a, _ = two_tenants
    run = await jobs.start_run(pool, a.job, reason="test")
    conn = await asyncpg.connect(a.url)
    try:
        # Finishing its run is the worker's to do, and still works.
        assert (
            await conn.execute(
                "UPDATE headrace.runs SET finished_at = now() WHERE job_uid = $1 AND run = $2", a.job.uid, run
            )
            == "UPDATE 1"
        )
        finished = await pool.fetchval("SELECT finished_at FROM headrace.runs WHERE job_uid = $1", a.job.uid)
        for value in ("NULL", "now() + interval '1 day'"):
            with pytest.raises(asyncpg.CheckViolationError, match="a finished run stays finished"):
                await conn.execute(f"UPDATE headrace.runs SET finished_at = {value} WHERE job_uid = $1", a.job.uid)
    finally:
        await conn.close()
    assert await pool.fetchval("SELECT finished_at FROM headrace.runs WHERE job_uid = $1", a.job.uid) == finished
    namespace_uid = a.job.namespace_uid
    assert namespace_uid is not None
    # So the rotation that waits for the namespace's runs to finish is not held off.
    rotated = await tenants.ensure_credential(
        pool,
        namespace=a.namespace,
        namespace_uid=namespace_uid,
        prefix=prefix,
        rotate_after=timedelta(0),
        now=datetime.now(UTC),
    )
    assert rotated is not None


async def test_a_tenant_holding_the_operators_locks_stalls_nobody(
    two_tenants: tuple[Tenant, Tenant], prefix: str, impatient: asyncpg.Pool
) -> None:
    a, _ = two_tenants
    conn = await asyncpg.connect(a.url)
    try:
        hold = conn.transaction()
        await hold.start()
        # What the operator serialised its tenant and embedding-space changes with until now.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('headrace.tenants'))")
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('headrace.embedding_spaces'))")
        await conn.fetch("SELECT * FROM headrace.embedding_spaces")
        # The locks it takes now are not the tenant's to take.
        for statement in (
            "LOCK TABLE headrace.tenants IN SHARE ROW EXCLUSIVE MODE",
            "LOCK TABLE headrace.embedding_spaces IN SHARE ROW EXCLUSIVE MODE",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():  # a savepoint: the locks held stay
                    await conn.execute(statement)
        # Meanwhile the operator gives a new namespace its role and a new model its space, without waiting.
        credential = await tenants.ensure_credential(
            impatient,
            namespace="team-c",
            namespace_uid=uuid.uuid4(),
            prefix=prefix,
            rotate_after=None,
            now=datetime.now(UTC),
        )
        assert credential is not None
        space = await vectors.ensure_space(impatient, "another-model", 16)
        assert space.dimensions == 16
        await hold.rollback()
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "table", ["jobs", "runs", "tenants", "embedding_spaces", "search_statistics", "lexemes", "schema_migrations"]
)
async def test_a_tenant_cannot_lock_the_tables_it_does_not_write(
    two_tenants: tuple[Tenant, Tenant], table: str
) -> None:
    """Tables it reads at most: an exclusive lock on one would stop every namespace's readers or the
    operator. (The tables it writes, chunks among them, it can still lock: docs/security.md.)"""
    a, _ = two_tenants
    conn = await asyncpg.connect(a.url)
    try:
        for mode in ("ACCESS EXCLUSIVE", "EXCLUSIVE", "SHARE"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute(f"LOCK TABLE headrace.{table} IN {mode} MODE")
    finally:
        await conn.close()
