"""Running a job's worker in-process and reading back what it stored."""

from pathlib import Path

from headrace.model.run import RunState
from headrace.store import jobs, runs
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord
from headrace.worker.loop import EXIT_DRAINED, Worker
from headrace.worker.store import DirectStore


async def run_once(pool: Pool, job: JobRecord, *, secrets_dir: Path, reason: str = "test") -> RunState:
    """Start a run and drive it to the end with one in-process worker."""
    run = await runs.start_run(pool, job, reason=reason)
    worker = Worker(DirectStore(pool, job.uid), volume_root=Path("/"), secrets_dir=secrets_dir, poll_seconds=0.05)
    assert await worker.run() == EXIT_DRAINED
    state = await jobs.run_state(pool, job.uid, run)
    assert state is not None and state.finished
    return state


def counts(state: RunState) -> tuple[int, int, int, int, int]:
    s = state.summary
    return s.added, s.updated, s.unchanged, s.deleted, s.failed


async def documents(pool: Pool, job: JobRecord) -> dict[str, dict[str, object]]:
    rows = await pool.fetch(
        "SELECT uri, state, error, outcome, format, source_version, chunk_count FROM headrace.documents "
        "WHERE job_uid = $1",
        job.uid,
    )
    return {r["uri"]: dict(r) for r in rows}


def write_secret(folder: Path, name: str, values: dict[str, str]) -> None:
    """Lay a Secret out as Kubernetes mounts it: one file per key."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    for key, value in values.items():
        (folder / name / key).write_text(value + "\n")
