"""A parser exploit in a crawled document, played by a stand-in child: what can it reach from the sandbox?

The stand-in runs the real sandbox entry point (`main`, which confines the child) with `process`
replaced by code that looks for the database URL and tries the network, and reports what it found
as the document's failure reason.
"""

import ctypes
import json
import os
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from headrace.model import Chunking, Limits
from headrace.worker.conversion import Request
from headrace.worker.sandbox import Sandbox, minimal_environment

PR_GET_DUMPABLE = 3
DATABASE_URL = "postgresql://owner:db-PLANTED-pw@postgres.headrace:5432/headrace"

EXPLOIT = textwrap.dedent(
    """
    import json, os, socket, sys
    from headrace.worker import sandbox

    def exploit(request, data):
        found = {"env": dict(os.environ)}
        try:
            with open(f"/proc/{os.getppid()}/environ", "rb") as handle:
                found["parent_environ"] = handle.read().decode(errors="replace")
        except OSError as exc:
            found["parent_environ"] = type(exc).__name__
        for family, address in ((socket.AF_INET, ("127.0.0.1", int(data))), (socket.AF_INET6, ("::1", int(data)))):
            try:
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.settimeout(2)
                    s.connect(address)
                found[family.name] = "connected"
            except OSError as exc:
                found[family.name] = type(exc).__name__
        yield {"type": "begin", "uri": request.uri}
        yield {"type": "failed", "uri": request.uri, "reason": json.dumps(found)}

    sandbox.process = exploit
    sandbox.main()
    """
)


@pytest.fixture
def listener() -> Iterator[int]:
    """A loopback port that accepts connections: standing for Postgres or the cluster's services."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


async def run_exploit(tmp_path: Path, port: int) -> tuple[Sandbox, dict[str, Any]]:
    script = tmp_path / "exploit.py"
    script.write_text(EXPLOIT)
    sandbox = Sandbox(command=[sys.executable, str(script)])
    request = Request(uri="crawled.pdf", limits=Limits(), chunking=Chunking())
    try:
        messages = [m async for m in sandbox.process(request, str(port).encode(), silence_seconds=60)]
    finally:
        await sandbox.close()
    assert messages[-1]["type"] == "failed"
    return sandbox, json.loads(messages[-1]["reason"])


def test_the_environment_is_an_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", DATABASE_URL)
    monkeypatch.setenv("HEADRACE_DATABASE_URL", DATABASE_URL)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-PLANTED")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    env = minimal_environment()
    assert set(env) <= {
        "PATH",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "TMPDIR",
        "PYTHONPATH",
        "TZ",
        "HOME",
        "PYTHONDONTWRITEBYTECODE",
    }
    assert "PLANTED" not in json.dumps(env)


async def test_the_child_gets_no_database_url_and_cannot_read_the_workers(
    tmp_path: Path, listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", DATABASE_URL)
    _, found = await run_exploit(tmp_path, listener)
    assert "DATABASE_URL" not in found["env"]
    assert "db-PLANTED-pw" not in json.dumps(found["env"])
    # The worker (this process) made itself non-dumpable, so its /proc environ is not the child's to read
    # (unless the child holds CAP_SYS_PTRACE, as root on a test machine does; a restricted pod has none).
    assert ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0
    if os.geteuid() != 0:
        assert found["parent_environ"] == "PermissionError"


@pytest.mark.skipif(sys.platform != "linux", reason="the network filter is Linux seccomp")
async def test_the_child_cannot_connect_anywhere(tmp_path: Path, listener: int) -> None:
    # The listener is reachable from here, so a refusal in the child is the filter's doing.
    with socket.create_connection(("127.0.0.1", listener), timeout=2):
        pass
    sandbox, found = await run_exploit(tmp_path, listener)
    if sandbox.network != "blocked":
        pytest.skip(f"this platform does not allow the filter: {sandbox.network}")
    assert found["AF_INET"] == found["AF_INET6"] == "PermissionError"
