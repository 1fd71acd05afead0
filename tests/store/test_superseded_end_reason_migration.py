"""Migration 0013 on a database that already holds runs superseded the old way (an error, no end reason):
they get RunSuperseded, and no other run is touched."""

import uuid

import pytest

from headrace.store import jobs, migrate, runs
from headrace.store.db import create_pool
from tests.conftest import volume_spec

pytestmark = pytest.mark.postgres


async def test_superseded_runs_of_before_get_their_end_reason(empty_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = migrate.available_migrations()
    pool = await create_pool(empty_dsn)
    try:
        monkeypatch.setattr(migrate, "available_migrations", lambda: [m for m in shipped if m.version < 13])
        await migrate.migrate(pool)
        job = await jobs.register_job(
            pool, uid=uuid.uuid4(), namespace="team-a", name="docs", generation=1, spec=volume_spec(".")
        )
        for _ in range(3):
            await runs.start_run(pool, job, reason="test")
        # As the code before 0013 closed them: the error alone. Run 3 then fails otherwise; run 4 is open.
        await pool.execute("UPDATE headrace.runs SET end_reason = NULL WHERE job_uid = $1", job.uid)
        assert await runs.close_run(pool, job.uid, 3, reason="BackoffLimitExceeded", message="the Job failed")
        await pool.execute(
            "UPDATE headrace.runs SET error = NULL, end_reason = NULL WHERE job_uid = $1 AND run = 2", job.uid
        )
        await runs.start_run(pool, job, reason="test")
        await pool.execute("UPDATE headrace.runs SET end_reason = NULL WHERE job_uid = $1 AND run = 3", job.uid)

        monkeypatch.setattr(migrate, "available_migrations", lambda: shipped)
        await migrate.migrate(pool)
        rows = await pool.fetch("SELECT run, end_reason FROM headrace.runs WHERE job_uid = $1 ORDER BY run", job.uid)
        assert [(r["run"], r["end_reason"]) for r in rows] == [
            (1, "RunSuperseded"),
            (2, None),  # finished without an error: read as RunSucceeded
            (3, None),  # failed before 0004 recorded why: read as RunFailed
            (4, None),  # still running
        ]
    finally:
        await pool.close()
