"""A newcomer's first session, scripted, from a fresh `git clone` of this repository: `make demo`, a run
interrupted with Ctrl-C, bad input, a search for a program, and a LangChain retriever on the demo's API; then
Ctrl-C on `make demo`, as a terminal sends it. Nothing is left running afterwards.

The clone's code runs with this checkout's virtualenv (its python, and PYTHONPATH pointing at the clone),
so nothing is installed again: `make demo BIN=<this .venv>/bin READY=` skips the Makefile's venv step and
runs the clone's `headrace demo`. A clone holds what is committed: uncommitted changes are not tested."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.cli.test_interrupts import assert_gone, long_job, one_line, postmaster, wait_until
from tests.sockets import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

RETRIEVE = """
import json, sys
from headrace.langchain import HeadraceRetriever
docs = HeadraceRetriever(base_url=sys.argv[1], k=3).invoke("what is the hacker ethic")
print(json.dumps([{"job": d.metadata["job"], "text": d.page_content} for d in docs]))
"""


@pytest.fixture
def clone() -> Iterator[Path]:
    """A fresh clone, outside pytest's 0700 basetemp (the embedded Postgres may run as another user)."""
    home = Path(tempfile.mkdtemp(prefix="headrace-newcomer-"))
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(home / "headrace")], check=True)
    yield home / "headrace"
    shutil.rmtree(home, ignore_errors=True)


def test_a_newcomers_first_session_from_a_fresh_clone_leaves_nothing_running(clone: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    clean = {k: v for k, v in os.environ.items() if k not in ("HEADRACE_DATABASE_URL", "DATABASE_URL")}
    env = {**clean, "PYTHONPATH": str(clone), "COLUMNS": "200", "HEADRACE_LISTEN_PORT": str(port)}

    def headrace(*args: str, cwd: Path = clone) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "headrace", *args]
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)

    # make demo: its own session, so that Ctrl-C can reach make and headrace alike, as a terminal's does.
    demo = subprocess.Popen(
        ["make", "--no-print-directory", "demo", f"BIN={VENV_BIN}", "READY="],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:

        def serving() -> bool:
            try:
                return httpx.get(f"{base}/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(serving, demo, "the demo serving its API")
        server = postmaster(clone / ".headrace")
        assert server is not None
        where = subprocess.run(
            [sys.executable, "-c", "import headrace; print(headrace.__file__)"],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
        )
        assert Path(where.stdout.strip()) == clone / "headrace" / "__init__.py"  # the clone's code, not ours

        # Their own job, interrupted: workers stop, the API shows the job Interrupted, the demo's Postgres stays.
        (clone / "mine").mkdir()
        manifest = long_job(clone / "mine")
        run = subprocess.Popen(
            [sys.executable, "-m", "headrace", "run", "-f", str(manifest)],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def ingesting() -> bool:
            job = httpx.get(f"{base}/v1/namespaces/qa/ingestionjobs/long")
            return job.status_code == 200 and job.json()["progress"]["succeeded"] > 0

        wait_until(ingesting, run, "the run ingesting")
        workers = psutil.Process(run.pid).children(recursive=True)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 130, stderr
        one_line(
            stderr,
            "Interrupted (SIGINT): stopped 2 workers, which handed their tasks back; "
            "run 1 of qa/long is Interrupted (RunInterrupted).",
        )
        assert_gone(workers)
        job = httpx.get(f"{base}/v1/namespaces/qa/ingestionjobs/long").json()
        assert (job["phase"], job["reason"]) == ("Interrupted", "RunInterrupted")
        assert server.is_running()

        # Bad input: one line each, no traceback.
        for args, says in [
            (("search", ""), "the query is empty"),
            (("search", "x", "--database-url", "not-a-url"), "the database URL is not valid"),
            (("run", "-f", "nosuch.yaml"), "does not exist"),
        ]:
            bad = headrace(*args)
            assert bad.returncode != 0 and "Traceback" not in bad.stderr and says in bad.stderr, (args, bad.stderr)

        found = headrace("search", '"hacker ethic"', "-o", "json", "-l", "3")
        assert found.returncode == 0, found.stderr
        hits = json.loads(found.stdout)["hits"]
        assert hits and {(hit["namespace"], hit["job"]) for hit in hits} == {("default", "demo")}

        retrieved = subprocess.run(
            [sys.executable, "-c", RETRIEVE, base], cwd=clone, env=env, capture_output=True, text=True, timeout=60
        )
        assert retrieved.returncode == 0, retrieved.stderr
        docs = json.loads(retrieved.stdout)
        assert docs and all(doc["job"] == "demo" for doc in docs)
        assert any("hacker" in doc["text"].lower() for doc in docs)

        # Ctrl-C on `make demo`, to make and headrace alike.
        everything = [*psutil.Process(demo.pid).children(recursive=True), server]
        os.killpg(demo.pid, signal.SIGINT)
        stdout, stderr = demo.communicate(timeout=60)
        assert f"Ingesting the sample corpus ({clone}/headrace/samples/demo/corpus)" in stdout  # the clone's
        assert "Traceback" not in stderr
        assert "Interrupted (SIGINT)." in stderr.splitlines(), stderr
        assert_gone(everything)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    leftovers = [
        p.info["cmdline"] for p in psutil.process_iter(["cmdline"]) if str(clone) in " ".join(p.info["cmdline"] or [])
    ]
    assert not leftovers, leftovers
    status = headrace("local", "status")
    assert status.stdout.startswith("Stopped"), status.stdout
