"""Migrations: idempotent, safe when many processes start at once, and a stale schema is refused."""

import asyncio

import asyncpg
import pytest

from headrace.store import migrate
from headrace.store.db import create_pool
from tests.worker.test_worker import wait_for


async def test_fresh_database_is_migrated_to_the_expected_version(empty_dsn: str) -> None:
    pool = await create_pool(empty_dsn)
    try:
        assert await migrate.current_version(pool) == 0
        with pytest.raises(migrate.StaleSchema, match="run `headrace migrate`"):
            await migrate.ensure_current(pool)
        applied = await migrate.migrate(pool)
        assert [m.version for m in applied] == [m.version for m in migrate.available_migrations()]
        await migrate.ensure_current(pool)
        tables = {
            r["tablename"] for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'headrace'")
        }
        assert {"jobs", "runs", "tasks", "documents", "chunks", "job_events", "schema_migrations"} <= tables
    finally:
        await pool.close()


async def test_migrating_twice_changes_nothing(empty_dsn: str) -> None:
    pool = await create_pool(empty_dsn)
    try:
        await migrate.migrate(pool)
        assert await migrate.migrate(pool) == []
        assert await pool.fetchval("SELECT count(*) FROM headrace.schema_migrations") == len(
            migrate.available_migrations()
        )
    finally:
        await pool.close()


async def test_concurrent_starters_apply_each_migration_once(empty_dsn: str) -> None:
    pools = [await create_pool(empty_dsn, min_size=1, max_size=1) for _ in range(8)]
    try:
        results = await asyncio.gather(*(migrate.migrate(p) for p in pools))
        assert sum(len(applied) for applied in results) == len(migrate.available_migrations())
        await migrate.ensure_current(pools[0])
    finally:
        await asyncio.gather(*(p.close() for p in pools))


async def test_every_migration_after_the_baseline_declares_its_compatibility() -> None:
    """Expand/contract needs each migration to say which older code still runs on it (its header)."""
    for migration in migrate.available_migrations():
        if migration.version <= BASELINE:
            continue
        assert "-- compatible-from: " in migration.sql, (
            f"{migration.version:04d}_{migration.name}.sql has no `-- compatible-from: N` header: "
            "declare the oldest schema version whose code still runs on it (docs/operations.md)"
        )
        assert migration.compatible_from <= migration.version


BASELINE = 2  # 0001 and 0002 predate compatibility headers: each breaks everything older


async def test_newer_compatible_schema_is_accepted_and_older_refused(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = await create_pool(empty_dsn)
    try:
        await migrate.migrate(pool)
        newest = migrate.expected_version()
        state = await migrate.schema_state(pool)
        assert state.version == newest
        # Code of the previous release (built for the schema before the newest migration) on this schema.
        previous = [m.version for m in migrate.available_migrations()][-2]
        monkeypatch.setattr(migrate, "expected_version", lambda: previous)
        if state.compatible_from <= previous:
            assert (await migrate.ensure_current(pool)).version == newest
        # A migration from the future that breaks older code: refused, naming it and what to do.
        await pool.execute(
            "INSERT INTO headrace.schema_migrations (version, name, compatible_from) VALUES (9998, 'drop_old', 9998)"
        )
        with pytest.raises(migrate.StaleSchema, match=r"9998_drop_old needs code for schema 9998.*Upgrade headrace"):
            await migrate.ensure_current(pool)
        # A future migration that declares older code compatible is accepted.
        await pool.execute("UPDATE headrace.schema_migrations SET compatible_from = $1 WHERE version = 9998", previous)
        assert (await migrate.ensure_current(pool)).version == 9998
        # Code newer than the database: refused until migrated.
        monkeypatch.setattr(migrate, "expected_version", lambda: 9999)
        with pytest.raises(migrate.StaleSchema, match="version 9998, this headrace needs 9999: run `headrace migrate`"):
            await migrate.ensure_current(pool)
    finally:
        await pool.close()


async def test_a_migration_without_header_breaks_every_older_version() -> None:
    plain = migrate.Migration(12, "contract", "ALTER TABLE headrace.jobs DROP COLUMN phase;")
    declared = migrate.Migration(12, "expand", "-- compatible-from: 7\nALTER TABLE headrace.jobs ADD COLUMN x int;")
    assert plain.compatible_from == 12
    assert declared.compatible_from == 7


async def test_a_failing_migration_leaves_nothing_half_applied(empty_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = await create_pool(empty_dsn)
    try:
        await migrate.migrate(pool)
        before = await migrate.current_version(pool)
        broken = migrate.Migration(
            9000, "broken", "-- compatible-from: 2\nCREATE TABLE headrace.half (x int);\nSELECT 1/0;"
        )
        shipped = migrate.available_migrations()
        monkeypatch.setattr(migrate, "available_migrations", lambda: [*shipped, broken])
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate.migrate(pool)
        assert await migrate.current_version(pool) == before
        assert await pool.fetchval("SELECT to_regclass('headrace.half')") is None
        # The lock was released: another starter goes on.
        monkeypatch.setattr(migrate, "available_migrations", lambda: shipped)
        assert await migrate.migrate(pool) == []
    finally:
        await pool.close()


async def test_migrate_command_fails_on_a_newer_schema_it_cannot_run_on(empty_dsn: str) -> None:
    from click.testing import CliRunner

    from headrace.cli import main

    pool = await create_pool(empty_dsn)
    try:
        await migrate.migrate(pool)
        await pool.execute(
            "INSERT INTO headrace.schema_migrations (version, name, compatible_from) VALUES (9998, 'expand', 7)"
        )
        ok = await asyncio.to_thread(CliRunner().invoke, main, ["migrate", "--database-url", empty_dsn])
        assert ok.exit_code == 0 and "schema is at version 9998" in ok.output
        assert "declares compatible" in ok.output
        await pool.execute("UPDATE headrace.schema_migrations SET compatible_from = 9998 WHERE version = 9998")
        refused = await asyncio.to_thread(CliRunner().invoke, main, ["migrate", "--database-url", empty_dsn])
        assert refused.exit_code == 1
        assert "cannot run on it: migration 9998_expand needs code for schema 9998" in refused.output
    finally:
        await pool.close()


async def test_a_migration_a_deadlock_ended_runs_again_and_applies_once(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await create_pool(empty_dsn)
    other = await asyncpg.connect(empty_dsn)
    try:
        await migrate.migrate(pool)
        await pool.execute(
            "CREATE TABLE public.pair (id int PRIMARY KEY, n int); INSERT INTO public.pair VALUES (1, 0), (2, 0)"
        )
        shipped = migrate.available_migrations()
        probe = migrate.Migration(
            shipped[-1].version + 1,
            "deadlock_probe",
            "UPDATE public.pair SET n = n + 1 WHERE id = 1; UPDATE public.pair SET n = n + 1 WHERE id = 2",
        )
        monkeypatch.setattr(migrate, "available_migrations", lambda: [*shipped, probe])
        # The other session locks row 2, the migration row 1 and then waits for row 2, the other session asks for
        # row 1: a cycle. The other session checks for deadlocks only after a minute, so the migration's backend
        # (after its default second) finds the cycle and is its victim.
        await other.execute("SET deadlock_timeout = '60s'")
        transaction = other.transaction()
        await transaction.start()
        await other.execute("UPDATE public.pair SET n = n + 1 WHERE id = 2")
        migrating = asyncio.create_task(migrate.migrate(pool))
        await wait_for(
            pool,
            "SELECT count(*) > 0 FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE public.pair%'",
        )
        await other.execute("UPDATE public.pair SET n = n + 1 WHERE id = 1")  # returns once the migration rolled back
        await transaction.commit()

        assert [m.name for m in await migrating] == ["deadlock_probe"]
        assert [tuple(r) for r in await pool.fetch("SELECT id, n FROM public.pair ORDER BY id")] == [(1, 2), (2, 2)]
        assert await pool.fetchval("SELECT count(*) FROM headrace.schema_migrations WHERE name = 'deadlock_probe'") == 1
        assert "Migration ended by a deadlock; running it again" in caplog.messages
    finally:
        await other.close()
        await pool.close()
