"""Migration 0016: no row-level security is left of the per-namespace roles (a fresh database has no policy,
no table under RLS and no tenant function, and a vectors table made later gets none), and a database of
schema 15 that still has such a role, with a worker of that release connected, upgrades: the worker's
session reads nothing from then on, and the data is all there."""

import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from headrace.store import migrate, search
from headrace.store.db import Pool, create_pool
from tests.conftest import ingest_demo_corpus

pytestmark = pytest.mark.postgres

LAST_WITH_ROLES = 15
"""The newest schema with `headrace.grant_tenant_access`, as the releases that made roles used it."""


async def row_security(pool: Pool) -> dict[str, list[str]]:
    """What is left of row-level security in the schema: policies, tables with RLS on, tenant functions."""
    policies = await pool.fetch("SELECT tablename || '.' || policyname AS name FROM pg_policies ORDER BY 1")
    tables = await pool.fetch(
        "SELECT relname AS name FROM pg_class WHERE relnamespace = 'headrace'::regnamespace AND relrowsecurity"
    )
    functions = await pool.fetch(
        "SELECT proname AS name FROM pg_proc WHERE pronamespace = 'headrace'::regnamespace "
        "AND (proname LIKE 'tenant%' OR proname LIKE '%tenant_access') ORDER BY 1"
    )
    return {
        "policies": [r["name"] for r in policies],
        "tables": [r["name"] for r in tables],
        "functions": [r["name"] for r in functions],
    }


NONE_LEFT = {"policies": [], "tables": [], "functions": []}


async def test_a_fresh_database_has_no_row_level_security(pool: Pool) -> None:
    assert await pool.fetchval("SELECT to_regclass('headrace.embeddings') IS NOT NULL"), (
        "the test Postgres has pgvector"
    )
    assert await row_security(pool) == NONE_LEFT


async def test_a_vectors_table_made_after_the_migrations_gets_no_row_level_security(pool: Pool) -> None:
    # As when an admin adds pgvector after the migrations: every migrate then makes the table.
    await pool.execute("DROP TABLE headrace.embeddings")
    async with pool.acquire() as conn:
        assert await migrate.ensure_vectors(conn)
    assert await pool.fetchval("SELECT to_regclass('headrace.embeddings') IS NOT NULL")
    assert await row_security(pool) == NONE_LEFT


async def test_a_database_with_a_tenant_role_upgrades_and_the_role_reads_nothing(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = migrate.available_migrations()
    role = f"t{uuid.uuid4().hex[:8]}_ns"
    group = f"{role}_group"
    pool = await create_pool(empty_dsn)
    worker = None
    try:
        with monkeypatch.context() as patched:
            patched.setattr(
                migrate, "available_migrations", lambda: [m for m in shipped if m.version <= LAST_WITH_ROLES]
            )
            await migrate.migrate(pool)
        job = await ingest_demo_corpus(pool)
        before = sorted(hit.uri for hit in (await search.search(pool, "river")).hits)
        assert before
        # The role as those releases made it: a group granted through grant_tenant_access, and a login
        # member listed in headrace.tenants for the job's namespace.
        namespace_uid = uuid.uuid4()
        await pool.execute("UPDATE headrace.jobs SET namespace_uid = $1 WHERE uid = $2", namespace_uid, job.uid)
        await pool.execute(f'CREATE ROLE "{group}" NOLOGIN')
        await pool.execute("SELECT headrace.grant_tenant_access($1)", group)
        await pool.execute(f"""CREATE ROLE "{role}" LOGIN IN ROLE "{group}" PASSWORD 'legacy'""")
        await pool.execute(
            "INSERT INTO headrace.tenants (role, namespace, namespace_uid) VALUES ($1, 'default', $2)",
            role,
            namespace_uid,
        )
        parts = urlsplit(empty_dsn)
        worker = await asyncpg.connect(
            urlunsplit(parts._replace(netloc=f"{role}:legacy@{parts.netloc.rsplit('@', 1)[-1]}"))
        )
        assert await worker.fetchval("SELECT count(*) FROM headrace.chunks") > 0  # its namespace's, under RLS
        assert (await row_security(pool))["policies"]

        await migrate.migrate(pool)

        assert await row_security(pool) == NONE_LEFT
        # The worker's session, still open, is refused everything rather than shown every namespace.
        for table in ("jobs", "chunks", "documents", "tasks", "tenants"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await worker.fetchval(f"SELECT count(*) FROM headrace.{table}")
        # The owner's data is untouched, and the role is still listed for the operator to drop.
        assert sorted(hit.uri for hit in (await search.search(pool, "river")).hits) == before
        assert await pool.fetchval("SELECT role FROM headrace.tenants") == role
    finally:
        if worker is not None:
            await worker.close(timeout=5)
        await pool.close()
        # Roles belong to the whole server, which every test database shares.
        admin = await asyncpg.connect(empty_dsn)
        try:
            for name in (role, group):
                if await admin.fetchval("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", name):
                    await admin.execute(f'DROP OWNED BY "{name}"; DROP ROLE "{name}"')
        finally:
            await admin.close()
