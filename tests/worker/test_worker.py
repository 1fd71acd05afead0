"""The worker end to end against a real Postgres: discover, ingest, skip, replace, fail, crash, stop."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import psutil
import pytest

from headrace.store import jobs, queue, runs, search
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord
from headrace.worker.loop import EXIT_DRAINED, EXIT_STOPPED, Worker
from headrace.worker.store import DirectStore
from tests.conftest import JobFactory, expire_leases, volume_spec


def write(folder: Path, files: dict[str, bytes | str]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)


async def run_worker(pool: Pool, job: JobRecord, root: Path, **options: float) -> int:
    worker = Worker(DirectStore(pool, job.uid), volume_root=root, poll_seconds=0.05, **options)  # type: ignore[arg-type]
    return await worker.run()


async def documents(pool: Pool, job: JobRecord) -> dict[str, dict[str, object]]:
    rows = await pool.fetch(
        "SELECT uri, state, error, outcome, chunk_count, "
        "(SELECT count(*) FROM headrace.chunks c WHERE c.document_id = d.id) AS chunks "
        "FROM headrace.documents d WHERE job_uid = $1",
        job.uid,
    )
    return {r["uri"]: dict(r) for r in rows}


HOSTILE = {
    "good/notes.txt": "Plain notes about lighthouses and their keepers.",
    "good/guide.md": "# Lighthouse guide\n\nKeep the lamp trimmed.",
    "good/page.html": "<html><head><script>evil()</script></head><body><p>Foghorns at dusk.</p></body></html>",
    "bad/empty.txt": b"",
    "bad/binary.txt": b"\x00\x01\x02\x03" * 500,
    "bad/huge.txt": b"a" * 5000,
    "bad/scripts-only.html": "<html><body><script>x()</script><style>p{}</style></body></html>",
    "odd/latin1.txt": "Phare de Brest, côte bretonne, été.".encode("latin-1"),
    "odd/deep.html": "<div>" * 300 + "deep lighthouse" + "</div>" * 300,
    "odd/unclosed.html": "<html><body><p>never <b>closed lighthouse",
}


async def test_every_document_ends_ingested_or_failed_with_a_reason(
    pool: Pool, make_job: JobFactory, tmp_path: Path
) -> None:
    write(tmp_path, HOSTILE)
    job = await make_job(volume_spec(limits={"maxDocumentBytes": 4096}, workers={"batchSize": 3}))
    run = await runs.start_run(pool, job, reason="test")
    assert await run_worker(pool, job, tmp_path) == EXIT_DRAINED

    docs = await documents(pool, job)
    assert set(docs) == set(HOSTILE)
    failed = {uri: d["error"] for uri, d in docs.items() if d["state"] == "failed"}
    assert set(failed) == {uri for uri in HOSTILE if uri.startswith("bad/")}
    assert "empty document" in failed["bad/empty.txt"]  # type: ignore[operator]
    assert "binary content" in failed["bad/binary.txt"]  # type: ignore[operator]
    assert "limits.maxDocumentBytes (4096)" in failed["bad/huge.txt"]  # type: ignore[operator]
    assert all(d["chunk_count"] == d["chunks"] > 0 for d in docs.values() if d["state"] == "ingested")

    state = await jobs.run_state(pool, job.uid, run)
    assert state is not None and state.finished
    assert (state.progress.total, state.progress.succeeded, state.progress.failed) == (10, 6, 4)
    assert state.progress.percent == 100
    hits = (await search.search(pool, "lighthouse", where=search.SearchFilter(job_uid=job.uid), limit=10)).hits
    assert {h.uri for h in hits} >= {"good/notes.txt", "good/guide.md", "odd/deep.html", "odd/unclosed.html"}


async def test_second_run_skips_unchanged_and_replaces_changed(
    pool: Pool, make_job: JobFactory, tmp_path: Path
) -> None:
    write(tmp_path, {f"doc{i}.txt": f"Document {i} about tides." for i in range(5)})
    job = await make_job(volume_spec(sync="mirror"))
    await runs.start_run(pool, job, reason="first")
    await run_worker(pool, job, tmp_path)

    write(tmp_path, {"doc0.txt": "Document 0 now speaks of currents.", "new.txt": "A new document."})
    (tmp_path / "doc4.txt").unlink()
    os.utime(tmp_path / "doc1.txt")  # touched, same bytes: still unchanged
    second = await runs.start_run(pool, job, reason="second")
    await run_worker(pool, job, tmp_path)

    state = await jobs.run_state(pool, job.uid, second)
    assert state is not None
    summary = state.summary
    assert (summary.added, summary.updated, summary.unchanged, summary.deleted, summary.failed) == (1, 1, 3, 1, 0)
    where = search.SearchFilter(job_uid=job.uid)
    assert [h.uri for h in (await search.search(pool, "currents", where=where)).hits] == ["doc0.txt"]
    assert (await search.search(pool, "tides", where=where)).hits[0].uri != "doc0.txt"
    assert "doc4.txt" not in await documents(pool, job)


async def test_a_redelivered_task_stores_each_document_once(pool: Pool, make_job: JobFactory, tmp_path: Path) -> None:
    write(tmp_path, {f"d{i}.md": f"# Doc {i}\n\n" + "words " * 400 for i in range(4)})
    job = await make_job(volume_spec(workers={"batchSize": 10}, chunking={"targetSize": 500, "overlap": 50}))
    run = await runs.start_run(pool, job, reason="test")
    worker = Worker(DirectStore(pool, job.uid), volume_root=tmp_path)
    # Process the ingest task twice, as after a lost ack, then let the worker drain the queue.
    from headrace.worker.sources import open_source
    from headrace.worker.tasks import Context, discover, ingest

    ctx = Context(DirectStore(pool, job.uid), job, open_source(job.spec.source, volume_root=tmp_path))
    (disc,) = await queue.lease(pool, job.uid, worker="t", lease_seconds=30)
    await discover(ctx, disc)
    await queue.ack(pool, disc)
    (task,) = await queue.lease(pool, job.uid, worker="t", lease_seconds=30)
    await ingest(ctx, task)
    assert await expire_leases(pool, job.uid) == 1
    assert await worker.run() == EXIT_DRAINED  # re-leases the expired task and ingests it again

    docs = await documents(pool, job)
    assert len(docs) == 4
    assert {d["outcome"] for d in docs.values()} == {"added"}
    assert all(d["chunk_count"] == d["chunks"] for d in docs.values())
    state = await jobs.run_state(pool, job.uid, run)
    assert state is not None and state.summary.added == 4


def _spawn(
    dsn: str, job: JobRecord, root: Path, *extra: str, stderr: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "headrace",
            "--log-level",
            "WARNING",
            "worker",
            "--job",
            str(job.uid),
            "--volume-root",
            str(root),
            *extra,
        ],
        env={**os.environ, "HEADRACE_DATABASE_URL": dsn},
        stderr=stderr,
    )


async def wait_for(pool: Pool, sql: str, *args: object) -> None:
    """Poll until the query is true; the test's own timeout bounds the wait."""
    while not await pool.fetchval(sql, *args):  # noqa: ASYNC110 - the database has no event to await
        await asyncio.sleep(0.02)


async def kill_mid_task(pool: Pool, dsn: str, job: JobRecord, root: Path, *, lease_seconds: float) -> None:
    """Start a worker, SIGKILL it once it has stored a few documents of its task, and reap it."""
    doomed = _spawn(dsn, job, root, "--lease-seconds", str(lease_seconds))
    try:
        await wait_for(pool, "SELECT count(*) >= 5 FROM headrace.documents WHERE job_uid = $1", job.uid)
        doomed.send_signal(signal.SIGKILL)
    finally:
        doomed.wait()


BIG_CORPUS = {
    f"part{i:03}.txt": "\n\n".join(f"Section {i}.{j} on tidal power. " * 30 for j in range(40)) for i in range(300)
}


async def test_worker_killed_mid_task_loses_nothing_and_duplicates_nothing(
    pool: Pool, dsn: str, make_job: JobFactory, tmp_path: Path
) -> None:
    write(tmp_path, BIG_CORPUS)
    job = await make_job(volume_spec(workers={"batchSize": 300}))
    run = await runs.start_run(pool, job, reason="test")
    await kill_mid_task(pool, dsn, job, tmp_path, lease_seconds=2)
    stored = await pool.fetchval("SELECT count(*) FROM headrace.documents WHERE job_uid = $1", job.uid)
    assert 5 <= stored < 300, "the worker was not killed mid-task"

    survivor = _spawn(dsn, job, tmp_path)
    assert await asyncio.to_thread(survivor.wait, 120) == EXIT_DRAINED

    docs = await documents(pool, job)
    assert len(docs) == 300
    assert all(d["state"] == "ingested" and d["chunk_count"] == d["chunks"] for d in docs.values())
    attempts = await pool.fetchval(
        "SELECT attempts FROM headrace.tasks WHERE job_uid = $1 AND kind = 'ingest'", job.uid
    )
    assert attempts == 2
    state = await jobs.run_state(pool, job.uid, run)
    assert state is not None and state.finished and state.summary.added == 300


async def test_a_task_that_kills_its_worker_every_time_fails_its_documents_with_the_reason(
    pool: Pool, dsn: str, make_job: JobFactory, tmp_path: Path
) -> None:
    write(tmp_path, BIG_CORPUS)
    job = await make_job(volume_spec(workers={"batchSize": 300}, retries={"maxAttempts": 1}))
    run = await runs.start_run(pool, job, reason="test")
    await kill_mid_task(pool, dsn, job, tmp_path, lease_seconds=30)
    assert await expire_leases(pool, job.uid) == 1  # the dead worker's lease runs out
    assert await run_worker(pool, job, tmp_path) == EXIT_DRAINED

    state = await jobs.run_state(pool, job.uid, run)
    assert state is not None and state.finished
    assert state.progress.succeeded + state.progress.failed == 300 and state.progress.failed > 0
    reason = await pool.fetchval(
        "SELECT error FROM headrace.documents WHERE job_uid = $1 AND state = 'failed' LIMIT 1", job.uid
    )
    assert "gave up after 1 attempts" in reason and "died or hung" in reason


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, EXIT_STOPPED), (signal.SIGINT, 130)])
async def test_sigterm_or_ctrl_c_hands_the_task_back_stops_the_sandbox_and_exits_128_plus_the_signal(
    pool: Pool, dsn: str, make_job: JobFactory, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    """143 on SIGTERM is what the worker Job's podFailurePolicy ignores; Ctrl-C gives 130, as `headrace run`."""
    write(tmp_path, BIG_CORPUS)
    job = await make_job(volume_spec(workers={"batchSize": 300}))
    await runs.start_run(pool, job, reason="test")
    worker = _spawn(dsn, job, tmp_path, "--grace-seconds", "0")
    try:
        await wait_for(pool, "SELECT count(*) >= 5 FROM headrace.documents WHERE job_uid = $1", job.uid)
        sandboxes = psutil.Process(worker.pid).children(recursive=True)
        assert sandboxes, "the worker extracts in a child process"
        worker.send_signal(sig)
        assert await asyncio.to_thread(worker.wait, 60) == code
    finally:
        worker.kill()
    _, alive = psutil.wait_procs(sandboxes, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    task = await pool.fetchrow(
        "SELECT state, attempts FROM headrace.tasks WHERE job_uid = $1 AND kind = 'ingest'", job.uid
    )
    assert dict(task) == {"state": "pending", "attempts": 0}


async def test_a_source_folder_that_is_not_there_fails_the_run_at_once_naming_it(
    pool: Pool, make_job: JobFactory, tmp_path: Path
) -> None:
    job = await make_job(volume_spec("nosuchdir", retries={"maxAttempts": 5}))
    run = await runs.start_run(pool, job, reason="test")
    assert await run_worker(pool, job, tmp_path) == EXIT_DRAINED
    # One attempt, not five: a folder that is not there will not appear on a retry.
    task = await pool.fetchrow("SELECT state, attempts, last_error FROM headrace.tasks WHERE job_uid = $1", job.uid)
    assert (task["state"], task["attempts"]) == ("dead", 1)
    assert f"nosuchdir does not exist (looked for at {tmp_path / 'nosuchdir'})" in task["last_error"]
    state = await jobs.run_state(pool, job.uid, run)
    assert state is not None and state.finished and state.error is not None
    assert state.error.startswith("discovery failed: source.volume.path: nosuchdir does not exist (")  # no class name
