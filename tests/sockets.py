"""Raw sockets against an HTTP service on loopback, for the tests of clients that stall
(tests/api/test_slow_clients.py, tests/ingest/test_slow_clients.py)."""

import asyncio


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection to `url` (http://host:port)."""
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


def assert_body_deadline_answer(answer: bytes, seconds: float) -> None:
    """`answer` (all a connection got before it was closed) is the body deadline's: a 408 problem+json
    saying how long the body had, and `Connection: close`."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"content-type: application/problem+json" in head.lower() and b"connection: close" in head.lower()
    assert f"did not arrive within {seconds:g} s".encode() in body
