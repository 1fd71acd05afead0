"""Ports for the servers tests start: never one the kernel may hand an outgoing connection meanwhile, and
never the same for two xdist workers."""

import socket
import subprocess
import sys
from pathlib import Path

from tests.sockets import _ephemeral_start, free_port

ROOT = Path(__file__).resolve().parents[1]


def _ports_of(worker: str, count: int) -> set[int]:
    """`count` ports picked by a fresh process as xdist worker `worker` of two."""
    script = f"from tests.sockets import free_port; print(*(free_port() for _ in range({count})))"
    env = {"PYTEST_XDIST_WORKER": worker, "PYTEST_XDIST_WORKER_COUNT": "2", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return {int(port) for port in out.stdout.split()}


def test_a_picked_port_is_outside_the_ephemeral_range_and_bindable() -> None:
    port = free_port()
    assert 1024 < port < _ephemeral_start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_two_workers_never_pick_the_same_port() -> None:
    first, second = _ports_of("gw0", 200), _ports_of("gw1", 200)
    assert len(first) == len(second) == 200
    assert max(first) < min(second)
