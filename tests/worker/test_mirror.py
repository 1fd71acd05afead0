"""`sync: mirror` deletes only what the source no longer has: retried discoveries and superseded runs."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from headrace.store import jobs, queue, runs
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord
from headrace.worker.loop import EXIT_DRAINED, Worker
from headrace.worker.sources import DocumentRef, Fetched, Source, open_source, volume
from headrace.worker.store import DirectStore
from headrace.worker.tasks import Context, discover, ingest
from tests.conftest import JobFactory, expire_leases, volume_spec
from tests.worker.test_worker import documents, write


class Killed(Exception):
    """The worker pod died."""


class DiesAfterFirstPage:
    """A source whose reader is killed once the first page of the listing has been enqueued."""

    def __init__(self, inner: Source) -> None:
        self.inner = inner

    async def pages(self) -> AsyncIterator[list[DocumentRef]]:
        async for page in self.inner.pages():
            yield page
            raise Killed

    async def fetch(self, ref: DocumentRef, *, max_bytes: int, known_version: str | None = None) -> Fetched | None:
        return await self.inner.fetch(ref, max_bytes=max_bytes, known_version=known_version)

    async def close(self) -> None:
        await self.inner.close()


async def run_to_end(pool: Pool, job: JobRecord, root: Path) -> None:
    assert await Worker(DirectStore(pool, job.uid), volume_root=root, poll_seconds=0.05).run() == EXIT_DRAINED


def in_source(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


async def test_discovery_killed_after_a_page_and_retried_on_a_changed_source_deletes_nothing_present(
    pool: Pool, make_job: JobFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(volume, "PAGE_SIZE", 4)
    write(tmp_path, {f"f{i:02}.txt": f"File {i} about headraces." for i in range(12)})
    job = await make_job(volume_spec(sync="mirror", workers={"batchSize": 2}))
    await runs.start_run(pool, job, reason="first")
    await run_to_end(pool, job, tmp_path)

    second = await runs.start_run(pool, job, reason="second")
    job = await jobs.get_job(pool, job.uid) or job
    (task,) = await queue.lease(pool, job.uid, worker="dies", lease_seconds=30)
    dying = Context(
        DirectStore(pool, job.uid), job, DiesAfterFirstPage(open_source(job.spec.source, volume_root=tmp_path))
    )
    with pytest.raises(Killed):
        await discover(dying, task)  # enqueued the first page's two batches, then the pod died
    # The source changes before discovery is retried: every later file shifts one place in the listing.
    (tmp_path / "f00.txt").unlink()
    write(tmp_path, {"f05b.txt": "A new file between f05 and f06."})
    assert await expire_leases(pool, job.uid) == 1  # the dead pod's lease runs out
    await run_to_end(pool, job, tmp_path)

    docs = await documents(pool, job)
    present = in_source(tmp_path)
    ingested = {uri for uri, d in docs.items() if d["state"] == "ingested"}
    assert present <= ingested
    # f00.txt was listed by this run before it went: the run keeps it, the next one deletes it.
    assert ingested - present == {"f00.txt"}
    state = await jobs.run_state(pool, job.uid, second)
    assert state is not None and state.finished and state.error is None
    assert state.summary.added == 1  # f05b.txt


async def test_a_task_of_the_previous_run_released_after_a_new_run_started_deletes_nothing_present(
    pool: Pool, make_job: JobFactory, tmp_path: Path
) -> None:
    write(tmp_path, {f"d{i}.txt": f"Document {i} about tailraces." for i in range(6)})
    job = await make_job(volume_spec(sync="mirror", workers={"batchSize": 2}))
    await runs.start_run(pool, job, reason="first")
    await run_to_end(pool, job, tmp_path)
    source = open_source(job.spec.source, volume_root=tmp_path)

    await runs.start_run(pool, job, reason="second")
    old = Context(DirectStore(pool, job.uid), await jobs.get_job(pool, job.uid) or job, source)
    (disc,) = await queue.lease(pool, job.uid, worker="old", lease_seconds=30)
    await discover(old, disc)
    assert await queue.ack(pool, disc)
    (stale,) = await queue.lease(pool, job.uid, worker="old", lease_seconds=30)  # its worker is slow

    third = await runs.start_run(pool, job, reason="third")
    new = Context(DirectStore(pool, job.uid), await jobs.get_job(pool, job.uid) or job, source)
    while leased := await queue.lease(pool, job.uid, worker="new", lease_seconds=30):
        handler = discover if leased[0].kind == "discover" else ingest
        await handler(new, leased[0])
        assert await queue.ack(pool, leased[0])
    assert stale.run == third - 1

    # The old worker finishes its task after the new run processed every document, then hands it back.
    await ingest(old, stale)
    assert not await queue.ack(pool, stale)  # cancelled when the new run started
    assert not await queue.release(pool, stale)
    await run_to_end(pool, job, tmp_path)  # finishes the run: the mirror sync

    docs = await documents(pool, job)
    assert set(docs) == in_source(tmp_path)
    recorded = await pool.fetch("SELECT DISTINCT run FROM headrace.documents WHERE job_uid = $1", job.uid)
    assert [r["run"] for r in recorded] == [third]  # each document carries the run that processed it
    state = await jobs.run_state(pool, job.uid, third)
    assert state is not None and state.finished and state.summary.deleted == 0 and state.summary.unchanged == 6
    cancelled = await pool.fetchval("SELECT state FROM headrace.tasks WHERE id = $1", stale.id)
    assert cancelled == "cancelled"
