"""Sockets on loopback: a free port for a server a test starts, and raw connections against an HTTP service
for the tests of clients that stall (tests/api/test_slow_clients.py, tests/ingest/test_slow_clients.py)."""

import asyncio
import functools
import itertools
import json
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

# Ports a test hands to a server it starts come from below the kernel's ephemeral range, never from a bind
# to port 0: between the pick and the server's own bind, any outgoing connection on the machine may be
# given an ephemeral port, and a server started on it fails with "address already in use" (a CI run lost
# its whole control plane that way, its controller-manager's port taken). Below the range only another
# explicit pick can collide, and each xdist worker picks from a slice of its own.
_LOWEST = 10000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


@functools.cache
def _ports() -> tuple[range, Iterator[int]]:
    """This process's slice of the ports below the ephemeral range (its xdist worker's share), and an
    endless walk over it from a random start, so that a process a test starts (a benchmark, in the same
    worker's slice) does not walk the same ports in the same order."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    size = (_ephemeral_start() - _LOWEST) // workers
    ports = range(_LOWEST + worker * size, _LOWEST + (worker + 1) * size)
    offset = random.randrange(len(ports))
    return ports, (ports[(offset + n) % len(ports)] for n in itertools.count())


def free_port() -> int:
    """A loopback port nothing listens on now, for a server the test is about to start; see `_LOWEST`."""
    ports, walk = _ports()
    for port in itertools.islice(walk, len(ports)):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {ports}")


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


async def answer_to(url: str, request: bytes) -> bytes:
    """Send `request` on a connection of its own and read everything until the service closes it."""
    reader, writer = await connect(url)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close a connection that sent nothing, returning once the service has closed its side too: by then
    it has let the connection go (uvicorn forgets a connection before its socket closes)."""
    writer.write_eof()
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()


def assert_connection_cap_answer(answer: bytes, cap: int, setting: str) -> None:
    """`answer` is the connection cap's: a 503 problem+json naming the cap and its setting, with
    `Retry-After`, and `Connection: close`."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert lines[0].startswith("http/1.1 503 "), answer
    assert {"content-type: application/problem+json", "connection: close", "retry-after: 2"} <= set(lines), answer
    problem = json.loads(body)
    assert problem["status"] == 503 and problem["title"] == "Service Unavailable"
    assert f"cap of {cap} open connections ({setting})" in problem["detail"]
