"""Clients that stall: the real ingest service under uvicorn on a port, real sockets, real Postgres.

A client that sends a request's headers and half its body is answered 408 and cut off once the body
deadline passes; one that never finishes its headers is cut off once the head deadline passes; past
`ingest_max_connections` a request is answered a problem+json 503. A worker's own requests succeed meanwhile."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from headrace.ingest.app import create_app
from headrace.ingest.server import server
from headrace.store import jobs, runs
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord
from headrace.worker.remote import RemoteStore
from tests.conftest import volume_spec
from tests.ingest.service import Identities, settings
from tests.sockets import (
    answer_to,
    assert_body_deadline_answer,
    assert_connection_cap_answer,
    connect,
    free_port,
    hang_up,
)

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

Serve = Callable[..., AbstractAsyncContextManager[str]]


@pytest.fixture
async def job(pool: Pool) -> JobRecord:
    spec = volume_spec(".")
    record = await jobs.register_job(pool, uid=uuid.uuid4(), namespace="team-a", name="docs", generation=1, spec=spec)
    await runs.start_run(pool, record, reason="test")
    return record


@pytest.fixture
def identities(tmp_path: Path) -> Identities:
    return Identities(tmp_path / "identities.json")


@pytest.fixture
def serve(pool: Pool, dsn: str, identities: Identities) -> Serve:
    @asynccontextmanager
    async def serving(**limits: object) -> AsyncIterator[str]:
        configured = settings(dsn, ingest_host="127.0.0.1", ingest_port=free_port(), **limits)
        uvicorn_server = server(create_app(configured, pool, identities), configured)
        task = asyncio.create_task(uvicorn_server.serve())
        try:
            while not uvicorn_server.started:
                assert not task.done(), "the ingest service did not start"
                await asyncio.sleep(0.02)
            yield f"http://127.0.0.1:{configured.ingest_port}"
        finally:
            uvicorn_server.should_exit = True
            await task

    return serving


@asynccontextmanager
async def worker(url: str, job: JobRecord, identities: Identities, tmp_path: Path) -> AsyncIterator[RemoteStore]:
    token = tmp_path / "token"
    token.write_text(identities.issue(job))
    store = RemoteStore(url, job.uid, token_file=token)
    try:
        yield store
    finally:
        await store.aclose()


def half_a_request(job: JobRecord, token: str) -> bytes:
    return (
        f"POST /v1/jobs/{job.uid}/runs/1/documents HTTP/1.1\r\nHost: ingest\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        'Content-Length: 100000\r\n\r\n{"documents": ['
    ).encode()


async def test_a_body_that_stalls_is_answered_408_and_its_connection_closed(
    serve: Serve, job: JobRecord, identities: Identities, tmp_path: Path
) -> None:
    async with serve(ingest_body_timeout_seconds=1.5) as url:
        reader, writer = await connect(url)
        started = time.monotonic()
        writer.write(half_a_request(job, identities.issue(job)))
        await writer.drain()
        async with worker(url, job, identities, tmp_path) as store:  # a worker is served meanwhile
            assert (await store.get_job()) is not None
            assert not await store.is_drained()
        answer = await reader.read()  # everything until the service closes the connection
        waited = time.monotonic() - started
        writer.close()
    assert_body_deadline_answer(answer, 1.5)
    assert waited >= 1.5


async def test_a_request_head_that_never_ends_is_cut_off(
    serve: Serve, job: JobRecord, identities: Identities, tmp_path: Path
) -> None:
    async with serve(ingest_header_timeout_seconds=1.0) as url:
        started = time.monotonic()  # before the server starts either head deadline
        silent_reader, silent = await connect(url)  # sends nothing at all
        trickle_reader, trickle = await connect(url)  # sends a header line, then stalls
        trickle.write(f"GET /v1/jobs/{job.uid} HTTP/1.1\r\nHost: ingest\r\n".encode())
        await trickle.drain()
        async with worker(url, job, identities, tmp_path) as store:
            assert (await store.get_job()) is not None
        assert await silent_reader.read() == b""  # closed without an answer
        assert await trickle_reader.read() == b""
        waited = time.monotonic() - started
        silent.close()
        trickle.close()
    assert waited >= 1.0


async def test_past_the_connection_cap_a_request_is_answered_503_problem_json_until_one_closes(
    serve: Serve, job: JobRecord, identities: Identities, tmp_path: Path
) -> None:
    async with serve(ingest_max_connections=3) as url:
        held = [await connect(url) for _ in range(3)]  # the cap: three connections, sending nothing
        request = (
            f"GET /v1/jobs/{job.uid}/drained HTTP/1.1\r\nHost: ingest\r\n"
            f"Authorization: Bearer {identities.issue(job)}\r\n\r\n"
        )
        answer = await answer_to(url, request.encode())
        assert_connection_cap_answer(answer, 3, "HEADRACE_INGEST_MAX_CONNECTIONS")
        await hang_up(*held.pop())
        async with worker(url, job, identities, tmp_path) as store:  # one connection is free again
            assert (await store.get_job()) is not None
        for reader, writer in held:
            await hang_up(reader, writer)
