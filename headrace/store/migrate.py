"""Versioned SQL migrations, applied in order under an advisory lock so concurrent starters are safe."""

import logging
import re
from dataclasses import dataclass
from importlib import resources

from headrace.store.db import Connection, Pool

log = logging.getLogger(__name__)

# Any constant shared by every headrace process; "headrace" in ASCII.
_ADVISORY_LOCK_KEY = 0x68656164726163


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


class StaleSchema(RuntimeError):
    """The database schema is not the version this code was built for."""


def available_migrations() -> list[Migration]:
    """The migrations shipped in the package, in version order."""
    folder = resources.files("headrace.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def expected_version() -> int:
    """The schema version this code needs."""
    return available_migrations()[-1].version


async def current_version(pool: Pool) -> int:
    """The schema version the database is at; 0 when it was never migrated."""
    async with pool.acquire() as conn:
        exists = await conn.fetchval("SELECT to_regclass('headrace.schema_migrations') IS NOT NULL")
        if not exists:
            return 0
        return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM headrace.schema_migrations"))


async def migrate(pool: Pool) -> list[Migration]:
    """Apply every migration the database lacks, each in its own transaction. Returns those applied."""
    applied = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_KEY)
        try:
            await conn.execute(
                """
                CREATE SCHEMA IF NOT EXISTS headrace;
                CREATE TABLE IF NOT EXISTS headrace.schema_migrations (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                );
                """
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM headrace.schema_migrations")}
            for migration in available_migrations():
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO headrace.schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                log.info("Applied migration", extra={"version": migration.version, "migration": migration.name})
                applied.append(migration)
            await ensure_vectors(conn)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_KEY)
    return applied


async def ensure_vectors(conn: Connection) -> bool:
    """Create what needs pgvector if the extension is there now (an admin may have added it after the
    migration that first looked); whether vectors can be stored."""
    if not await conn.fetchval("SELECT to_regprocedure('headrace.ensure_vectors()') IS NOT NULL"):
        return False
    return bool(await conn.fetchval("SELECT headrace.ensure_vectors()"))


async def ensure_current(pool: Pool) -> None:
    """Raise StaleSchema unless the database is at exactly the version this code expects."""
    have, want = await current_version(pool), expected_version()
    if have != want:
        raise StaleSchema(f"database schema is at version {have}, this headrace needs {want}: run `headrace migrate`")
