"""The previous release's code against this release's schema (expand/contract), and two releases
migrating one database at once.

The previous release (tests/release.py) is the commit whose `headrace/` is run; tests/e2e/test_upgrade.py
installs its chart and `helm upgrade`s it to this tree's on the real control plane.
"""

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from headrace.store import jobs, migrate, search
from headrace.store.db import Pool, create_pool
from tests.release import unpack_previous_release

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def previous_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack_previous_release(tmp_path_factory.mktemp("previous-release"), "headrace")


def run_previous(code: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, check=False, timeout=120)


async def test_previous_release_ingests_and_searches_on_the_new_schema(
    previous_code: Path, dsn: str, pool: Pool, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("A zephyr crossed the glacier at dawn.")
    (tmp_path / "b.md").write_text("# River\n\nThe zephyr rippled the river by the mill.")
    done = run_previous(previous_code, str(Path(__file__).parent / "previous_release.py"), dsn, str(tmp_path))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["built_for"] < migrate.expected_version()
    assert seen == {**seen, "exit": 0, "succeeded": 2, "finished": True, "hits": ["a.txt", "b.md"]}

    # This schema says that code may run on it, and this release reads what that code wrote.
    state = await migrate.schema_state(pool)
    assert state.compatible_from <= seen["built_for"]
    page = await search.search(pool, "zephyr")
    assert sorted(hit.uri for hit in page.hits) == ["a.txt", "b.md"]
    run = await jobs.run_state(pool, uuid.UUID(seen["uid"]))
    assert run is not None and run.finished and run.progress.succeeded == 2


async def test_two_releases_migrating_at_once_apply_each_migration_once(previous_code: Path, empty_dsn: str) -> None:
    # The previous release's migrate command and this one's, started together, several times over.
    async def previous() -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            run_previous, previous_code, "-m", "headrace", "migrate", "--database-url", empty_dsn
        )

    async def current() -> list[migrate.Migration]:
        pool = await create_pool(empty_dsn, min_size=1, max_size=1)
        try:
            return await migrate.migrate(pool)
        finally:
            await pool.close()

    results = await asyncio.gather(previous(), current(), previous(), current())
    for done in results[::2]:
        assert done.returncode == 0, done.stderr  # type: ignore[union-attr]
    pool = await create_pool(empty_dsn)
    try:
        versions = [r["version"] for r in await pool.fetch("SELECT version FROM headrace.schema_migrations ORDER BY 1")]
        assert versions == [m.version for m in migrate.available_migrations()]
        assert (await migrate.ensure_current(pool)).version == migrate.expected_version()
    finally:
        await pool.close()
    # Started again later, the previous release finds nothing to apply and leaves the newer schema alone.
    again = run_previous(previous_code, "-m", "headrace", "migrate", "--database-url", empty_dsn)
    assert again.returncode == 0 and "Applied 0 migrations" in again.stdout
