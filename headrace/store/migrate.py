"""Versioned SQL migrations, applied in order under an advisory lock so concurrent starters are safe.

Migrations are expand/contract: a migration that only adds (tables, nullable columns, indexes,
wider constraints) leaves the schema usable by older code, and says so in its header:

    -- compatible-from: 2

meaning "code built for schema version 2 or later keeps working on this schema". A migration that
removes or changes what older code uses (the contract step, a release after the code stopped using
it) declares its own version, or nothing: without a header a migration is taken to break all older
code. `schema_migrations.compatible_from` records the header of each applied migration, so a
process reads the compatibility of the database it meets, not of the migrations it ships.

A process accepts a database at its own version, or at a newer one whose every newer migration
declares it compatible with this process's version; it refuses an older one (run `headrace migrate`)
and a newer incompatible one (upgrade headrace). docs/operations.md, "Upgrades and rollbacks".
"""

import logging
import re
from dataclasses import dataclass
from importlib import resources

from headrace.store.db import Connection, Pool
from headrace.store.errors import DeadlockDetected

log = logging.getLogger(__name__)

# Any constant shared by every headrace process; "headrace" in ASCII.
_ADVISORY_LOCK_KEY = 0x68656164726163

DEADLOCK_ATTEMPTS = 3
"""How often a migration's transaction runs when Postgres keeps choosing it as a deadlock's victim. Seen once
in a test: migration 0016, waiting for an ACCESS EXCLUSIVE lock, was the victim of a backend that held a lock on
the table and waited for a row the migration had changed (which backend was not recorded; autovacuum analyzing
the tables just written fits). The transaction rolled back whole, so running it again is safe."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def compatible_from(self) -> int:
        """The oldest code version (the schema version code was built for) that runs on this schema."""
        match = _COMPATIBLE_FROM.search(self.sql)
        return min(int(match[1]), self.version) if match else self.version


_COMPATIBLE_FROM = re.compile(r"^-- compatible-from: (\d+)\s*$", re.MULTILINE)


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


@dataclass(frozen=True)
class SchemaState:
    """What the database says about its schema."""

    version: int
    """The newest migration applied; 0 when never migrated."""
    compatible_from: int
    """The oldest code version that runs on it: the largest `compatible_from` of its migrations."""
    breaking: str | None
    """The migration that set `compatible_from` ("0007_name"), for messages."""


async def schema_state(pool: Pool) -> SchemaState:
    """The database's schema version and the oldest code it stays compatible with."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT to_regclass('headrace.schema_migrations') IS NOT NULL"):
            return SchemaState(0, 0, None)
        has_column = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'headrace' "
            "AND table_name = 'schema_migrations' AND column_name = 'compatible_from')"
        )
        floor = "coalesce(compatible_from, version)" if has_column else "version"
        rows = await conn.fetch(f"SELECT version, name, {floor} AS compatible_from FROM headrace.schema_migrations")
    if not rows:
        return SchemaState(0, 0, None)
    breaking = max(rows, key=lambda r: (r["compatible_from"], r["version"]))
    return SchemaState(
        version=max(r["version"] for r in rows),
        compatible_from=breaking["compatible_from"],
        breaking=f"{breaking['version']:04d}_{breaking['name']}",
    )


async def current_version(pool: Pool) -> int:
    """The schema version the database is at; 0 when it was never migrated."""
    return (await schema_state(pool)).version


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
                -- The oldest code version each migration keeps working (NULL: its own version). Nullable,
                -- so that code which predates the column still records the migrations it applies.
                ALTER TABLE headrace.schema_migrations ADD COLUMN IF NOT EXISTS compatible_from integer;
                """
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM headrace.schema_migrations")}
            for migration in available_migrations():
                if migration.version in done:
                    continue
                await _apply(conn, migration)
                log.info("Applied migration", extra={"version": migration.version, "migration": migration.name})
                applied.append(migration)
            await ensure_vectors(conn)
        finally:
            try:
                await conn.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_KEY)
            except BaseException:
                # The operator's pool does not reset session state (`db._keep_session`): a connection that
                # may still hold the lock is closed, never handed out again.
                conn.terminate()
                raise
    return applied


async def ensure_vectors(conn: Connection) -> bool:
    """Create what needs pgvector if the extension is there now (an admin may have added it after the
    migration that first looked); whether vectors can be stored."""
    if not await conn.fetchval("SELECT to_regprocedure('headrace.ensure_vectors()') IS NOT NULL"):
        return False
    return bool(await conn.fetchval("SELECT headrace.ensure_vectors()"))


async def ensure_current(pool: Pool) -> SchemaState:
    """Raise StaleSchema unless this code can run on the database's schema: its own version, or a newer
    one that declares itself compatible with it. Returns the state found."""
    state, want = await schema_state(pool), expected_version()
    if state.version < want:
        raise StaleSchema(
            f"database schema is at version {state.version}, this headrace needs {want}: run `headrace migrate` "
            "(the chart's migration hook does at install and upgrade)"
        )
    if state.compatible_from > want:
        raise StaleSchema(
            f"database schema is at version {state.version}, which headrace built for schema {want} cannot use: "
            f"migration {state.breaking} needs code for schema {state.compatible_from} or later. "
            "Upgrade headrace, or restore the backup taken before that migration (docs/operations.md, "
            "Upgrades and rollbacks)"
        )
    if state.version > want:
        log.warning(
            "Running on a newer schema",
            extra={"schema": state.version, "built_for": want, "compatible_from": state.compatible_from},
        )
    return state


async def _apply(conn: Connection, migration: Migration) -> None:
    """Run `migration` and record it, in one transaction: again when it was a deadlock's victim (DEADLOCK_ATTEMPTS)."""
    for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
        try:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO headrace.schema_migrations (version, name, compatible_from) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.compatible_from,
                )
            return
        except DeadlockDetected:
            if attempt == DEADLOCK_ATTEMPTS:
                raise
            log.warning("Migration ended by a deadlock; running it again", extra={"migration": migration.name})
