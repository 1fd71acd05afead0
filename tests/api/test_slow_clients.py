"""Clients of the search API that stall: the real API under uvicorn on a port, real sockets, real Postgres.

Tenants call the search API and may run any code. A client that never finishes its request's headers is
cut off once the head deadline passes; one that sends headers and half a body is answered 408 and cut
off once the body deadline passes; past `max_connections` a request is answered a problem+json 503. Other callers are
served meanwhile. (tests/ingest/test_slow_clients.py holds the ingest service to the same bounds.)"""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from headrace.api.app import create_app
from headrace.api.server import server
from headrace.api.settings import ApiSettings
from tests.sockets import answer_to, assert_body_deadline_answer, assert_connection_cap_answer, connect, hang_up

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


@asynccontextmanager
async def serving(dsn: str, **limits: object) -> AsyncIterator[str]:
    """The API on a free loopback port (authentication off, as loopback allows), until the block ends."""
    settings = ApiSettings(database_url=dsn, listen_host="127.0.0.1", auth_mode="none", **limits)
    uvicorn_server = server(create_app(settings), settings, port=0)
    task = asyncio.create_task(uvicorn_server.serve())
    try:
        while not uvicorn_server.started:
            assert not task.done(), "the API did not start"
            await asyncio.sleep(0.02)
        port = uvicorn_server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        uvicorn_server.should_exit = True
        await task


async def answered(url: str) -> int:
    async with httpx.AsyncClient(base_url=url) as client:
        return (await client.get("/healthz")).status_code


async def test_a_search_body_that_stalls_is_answered_408_and_its_connection_closed(dsn: str) -> None:
    async with serving(dsn, body_timeout_seconds=1.5) as url:
        reader, writer = await connect(url)
        started = time.monotonic()
        writer.write(
            b"POST /v1/search HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"q": "sourdough'
        )
        await writer.drain()
        assert await answered(url) == 200  # others are served meanwhile
        answer = await reader.read()  # everything until the API closes the connection
        waited = time.monotonic() - started
        writer.close()
    assert_body_deadline_answer(answer, 1.5)
    assert waited >= 1.5


async def test_a_request_head_that_never_ends_is_cut_off(dsn: str) -> None:
    async with serving(dsn, header_timeout_seconds=1.0) as url:
        started = time.monotonic()  # before the server starts either head deadline
        silent_reader, silent = await connect(url)  # sends nothing at all
        trickle_reader, trickle = await connect(url)  # sends a header line, then stalls
        trickle.write(b"GET /v1/search?q=bread HTTP/1.1\r\nHost: api\r\n")
        await trickle.drain()
        assert await answered(url) == 200
        assert await silent_reader.read() == b""  # closed without an answer
        assert await trickle_reader.read() == b""
        waited = time.monotonic() - started
        silent.close()
        trickle.close()
    assert waited >= 1.0


async def test_past_the_connection_cap_a_request_is_answered_503_problem_json_until_one_closes(dsn: str) -> None:
    async with serving(dsn, max_connections=3) as url:
        held = [await connect(url) for _ in range(3)]  # the cap: three connections, sending nothing
        answer = await answer_to(url, b"GET /v1/search?q=bread HTTP/1.1\r\nHost: api\r\n\r\n")
        assert_connection_cap_answer(answer, 3, "HEADRACE_MAX_CONNECTIONS")
        await hang_up(*held.pop())
        assert await answered(url) == 200  # a fourth connection again, now the third
        for reader, writer in held:
            await hang_up(reader, writer)
