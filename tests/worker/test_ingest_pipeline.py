"""The pipelined ingest under a stalled stage: buffers stay bounded (counted, not timed), and it resumes."""

import asyncio
import functools
import sys
from pathlib import Path
from typing import Any

import pytest

from headrace.store import runs
from headrace.store.db import Pool
from headrace.worker import loop
from headrace.worker.loop import EXIT_DRAINED, EXIT_STOPPED, Worker
from headrace.worker.sandbox import Sandbox
from headrace.worker.store import DirectStore
from headrace.worker.tasks import STAGE_BUFFER, STORE_GROUP_DOCUMENTS
from tests.conftest import JobFactory, volume_spec
from tests.worker.test_worker import BIG_CORPUS, documents, wait_for, write

HUNG_SANDBOX = [
    sys.executable,
    "-c",
    "import json, struct, sys, time\n"
    "body = json.dumps({'type': 'ready'}).encode()\n"
    "sys.stdout.buffer.write(struct.pack('>I', len(body)) + body); sys.stdout.buffer.flush()\n"
    "time.sleep(3600)\n",
]


class Fetches:
    """Counts the objects the worker read from its (real) source."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real_open = loop.open_source

        def counting_open(*args: Any, **kwargs: Any) -> Any:
            source = real_open(*args, **kwargs)
            fetch = source.fetch

            async def counted(*a: Any, **k: Any) -> Any:
                self.count += 1
                return await fetch(*a, **k)

            source.fetch = counted  # type: ignore[method-assign]
            return source

        monkeypatch.setattr(loop, "open_source", counting_open)


class Buffers:
    """The ingest task's stage buffers (the only `asyncio.Queue`s Headrace makes), watched: what the stage
    after each has taken from it, and whether the stage before waits to put into it. The pipeline stands
    still for good once the stalled stage has taken its item and every buffer before it is full with its
    producer waiting: nothing can move then, so that is the event the tests wait for, not a time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[_Watched] = []
        monkeypatch.setattr(asyncio, "Queue", functools.partial(_Watched, made=self.made))

    async def standing_still(self, *, stalled: int) -> None:
        """Wait until the stage that takes from buffer `stalled` holds its item and every buffer up to it
        is full with its producer waiting; the deadline is a failure, not a threshold."""

        def still() -> bool:
            before = self.made[: stalled + 1]
            return len(before) == stalled + 1 and before[-1].taken >= 1 and all(q.full() and q.waiting for q in before)

        async with asyncio.timeout(120):
            while not still():  # noqa: ASYNC110 - the stages signal nothing a test could await
                await asyncio.sleep(0.02)


class _Watched(asyncio.Queue[Any]):
    """An `asyncio.Queue` that counts what was taken from it and the puts waiting for room."""

    def __init__(self, maxsize: int = 0, *, made: list["_Watched"]) -> None:
        super().__init__(maxsize)
        self.taken = 0
        self.waiting = 0
        made.append(self)

    async def put(self, item: Any) -> None:
        waits = int(self.full())
        self.waiting += waits
        try:
            await super().put(item)
        finally:
            self.waiting -= waits

    async def get(self) -> Any:
        item = await super().get()
        self.taken += 1
        return item


async def _started(pool: Pool, make_job: JobFactory, root: Path) -> Any:
    write(root, BIG_CORPUS)
    # One task of 300 documents. The embed stage runs and buffers as ever; without a model it is quick, so
    # the drain after the held stage lets go stays short on a busy machine.
    job = await make_job(volume_spec(workers={"batchSize": 300}, embedding={"provider": "none"}))
    await runs.start_run(pool, job, reason="test")
    return job


async def test_a_hung_extraction_stops_reading_after_the_buffer_is_full(
    pool: Pool, make_job: JobFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetches, buffers = Fetches(monkeypatch), Buffers(monkeypatch)
    monkeypatch.setattr(loop, "Sandbox", lambda **_: Sandbox(command=HUNG_SANDBOX))
    job = await _started(pool, make_job, tmp_path)
    worker = Worker(DirectStore(pool, job.uid), volume_root=tmp_path, poll_seconds=0.05, grace_seconds=0)
    running = asyncio.create_task(worker.run())
    await wait_for(pool, "SELECT count(*) = 1 FROM headrace.tasks WHERE job_uid = $1 AND kind = 'ingest'", job.uid)
    # One object in the hung sandbox, STAGE_BUFFER waiting for it, one read and waiting to be queued.
    await buffers.standing_still(stalled=0)  # the fetched objects' buffer: the sandbox took one and hung
    assert fetches.count == 1 + STAGE_BUFFER + 1
    worker.stop()
    assert await asyncio.wait_for(running, 60) == EXIT_STOPPED


async def test_a_slow_database_stops_extraction_and_reading_after_the_buffers_are_full(
    pool: Pool, make_job: JobFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetches, buffers = Fetches(monkeypatch), Buffers(monkeypatch)
    job = await _started(pool, make_job, tmp_path)
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("LOCK TABLE headrace.chunks IN SHARE MODE")  # every write to chunks waits
        worker = Worker(DirectStore(pool, job.uid), volume_root=tmp_path, poll_seconds=0.05)
        running = asyncio.create_task(worker.run())
        await wait_for(
            pool,
            "SELECT count(*) = 1 FROM headrace.tasks WHERE job_uid = $1 AND state = 'leased' AND kind = 'ingest'",
            job.uid,
        )
        # One group being stored (blocked), one waiting and one full, waiting to be handed on; then
        # STAGE_BUFFER embedded and one waiting, STAGE_BUFFER extracted and one waiting, STAGE_BUFFER
        # fetched and one read waiting. The first two groups close on chunk counts, so they hold
        # between one document and STORE_GROUP_DOCUMENTS each: the count stops in that range.
        held = 3 * (STAGE_BUFFER + 1)
        least, most = 2 + STORE_GROUP_DOCUMENTS + held, 3 * STORE_GROUP_DOCUMENTS + held
        await buffers.standing_still(stalled=3)  # the groups' buffer: the store took one and waits for the lock
        assert least <= fetches.count <= most < 300
        assert await pool.fetchval("SELECT count(*) FROM headrace.chunks") == 0
    assert await asyncio.wait_for(running, 240) == EXIT_DRAINED  # the lock is gone: it goes on to the end
    docs = await documents(pool, job)
    assert len(docs) == 300 and all(d["state"] == "ingested" and d["chunk_count"] == d["chunks"] for d in docs.values())
