"""The pipelined ingest under a stalled stage: buffers stay bounded (counted, not timed), it resumes, and
the two tasks a worker works on at once keep going past each other's stalls within one raw-object budget."""

import asyncio
import functools
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from headrace.model import IngestionJobSpec
from headrace.store import runs
from headrace.store.db import Pool
from headrace.worker import loop
from headrace.worker.loop import EXIT_DRAINED, EXIT_STOPPED, Worker
from headrace.worker.sandbox import Sandbox
from headrace.worker.store import DirectStore
from headrace.worker.tasks import RAW_OBJECTS, STAGE_BUFFER, STORE_GROUP_DOCUMENTS
from tests.conftest import JobFactory, volume_spec
from tests.sources.webserver import Handler, Site, serve
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


class Budgets:
    """The worker's raw-object budget (the `asyncio.Semaphore` its ingest tasks share), watched: whether a
    task waits for room in it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[_WatchedSemaphore] = []
        monkeypatch.setattr(asyncio, "Semaphore", functools.partial(_WatchedSemaphore, made=self.made))

    async def someone_waits(self) -> None:
        async with asyncio.timeout(120):
            while not any(s.waiting for s in self.made):  # noqa: ASYNC110 - nothing to await
                await asyncio.sleep(0.02)


class _WatchedSemaphore(asyncio.Semaphore):
    def __init__(self, value: int = 1, *, made: list["_WatchedSemaphore"]) -> None:
        super().__init__(value)
        self.waiting = 0
        made.append(self)

    async def acquire(self) -> bool:
        waits = int(self.locked())
        self.waiting += waits
        try:
            return await super().acquire()
        finally:
            self.waiting -= waits


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


async def test_two_tasks_at_once_hold_no_more_raw_objects_than_one(
    pool: Pool, make_job: JobFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetches, budgets = Fetches(monkeypatch), Budgets(monkeypatch)
    monkeypatch.setattr(loop, "Sandbox", lambda **_: Sandbox(command=HUNG_SANDBOX))
    write(tmp_path, {f"doc-{i:02}.txt": f"Document {i} about the harbour's tides." for i in range(20)})
    job = await make_job(volume_spec(workers={"batchSize": 10}, embedding={"provider": "none"}))  # two tasks
    await runs.start_run(pool, job, reason="test")
    worker = Worker(DirectStore(pool, job.uid), volume_root=tmp_path, poll_seconds=0.05, grace_seconds=0)
    running = asyncio.create_task(worker.run())
    # The sandbox hangs on the first object it is given. The two tasks read between them until the budget
    # is spent, and then wait for room in it: together no more objects than one task's stages hold.
    await budgets.someone_waits()
    assert fetches.count == RAW_OBJECTS
    leased = "SELECT count(*) FROM headrace.tasks WHERE job_uid = $1 AND kind = 'ingest' AND state = 'leased'"
    assert await pool.fetchval(leased, job.uid) == 2
    worker.stop()
    assert await asyncio.wait_for(running, 60) == EXIT_STOPPED


async def test_while_the_database_is_slow_the_next_task_is_fetched_and_extracted(
    pool: Pool, make_job: JobFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetches = Fetches(monkeypatch)
    write(tmp_path, {f"doc-{i:02}.txt": f"Document {i} about the harbour's tides." for i in range(10)})
    job = await make_job(volume_spec(workers={"batchSize": 5}, embedding={"provider": "none"}))  # two tasks
    await runs.start_run(pool, job, reason="test")
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("LOCK TABLE headrace.chunks IN SHARE MODE")  # every write to chunks waits
        worker = Worker(DirectStore(pool, job.uid), volume_root=tmp_path, poll_seconds=0.05)
        running = asyncio.create_task(worker.run())
        # The first task's documents wait for the database; the worker reads the second task's meanwhile
        # (one task at a time, it read the first five and waited).
        async with asyncio.timeout(120):
            while fetches.count < 10:  # noqa: ASYNC110 - the worker signals nothing a test could await
                await asyncio.sleep(0.02)
        assert await pool.fetchval("SELECT count(*) FROM headrace.chunks") == 0
        # ... not after the first task's write gave up waiting (the pool's command timeout) and failed it.
        failed = "SELECT count(*) FROM headrace.tasks WHERE job_uid = $1 AND last_error IS NOT NULL"
        assert await pool.fetchval(failed, job.uid) == 0
    assert await asyncio.wait_for(running, 120) == EXIT_DRAINED  # the lock is gone: it goes on to the end
    docs = await documents(pool, job)
    assert len(docs) == 10 and all(d["state"] == "ingested" for d in docs.values())


def held_until(release: threading.Event, body: bytes) -> Handler:
    """Answers only once `release` is set: an object its source is slow to serve."""

    def handle(request: BaseHTTPRequestHandler) -> None:
        release.wait(300)
        request.send_response(200)
        request.send_header("Content-Type", "text/plain")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    return handle


async def test_a_task_stalled_at_its_source_holds_back_no_other_task(
    pool: Pool, make_job: JobFactory, tmp_path: Path
) -> None:
    release = threading.Event()
    with serve(Site()) as site:
        site.handlers["/slow.txt"] = held_until(release, b"The slow page, about tides.")
        for name in ("a", "b", "c"):
            site.bodies[f"/{name}.txt"] = (f"Page {name}, about harbours.".encode(), "text/plain")
        urls = [site.url(f"/{name}.txt") for name in ("slow", "a", "b", "c")]  # the slow one's task is queued first
        spec = IngestionJobSpec.model_validate(
            {
                "source": {
                    "http": {
                        "urls": urls,
                        "allowPrivateNetworks": True,
                        "readTimeoutSeconds": 300,
                        "timeoutSeconds": 300,
                    }
                },
                "workers": {"batchSize": 1},
                "embedding": {"provider": "none"},
            }
        )
        job = await make_job(spec)
        await runs.start_run(pool, job, reason="test")
        worker = Worker(DirectStore(pool, job.uid), volume_root=tmp_path, poll_seconds=0.05)
        running = asyncio.create_task(worker.run())
        try:
            # One worker stores the other three documents while the first is still on its way.
            async with asyncio.timeout(120):
                await wait_for(
                    pool,
                    "SELECT count(*) = 3 FROM headrace.documents WHERE job_uid = $1 AND state = 'ingested'",
                    job.uid,
                )
            assert site.statuses("/slow.txt") == [0]  # asked, not yet answered
        finally:
            release.set()
        assert await asyncio.wait_for(running, 120) == EXIT_DRAINED
    docs = await documents(pool, job)
    assert sorted(docs) == sorted(urls) and all(d["state"] == "ingested" for d in docs.values())
