"""A newcomer's first session, scripted: the demo, a search for a program, bad input, the API over their own
data and a LangChain retriever on it, then Ctrl-C. Nothing is left running afterwards."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from headrace.langchain import HeadraceRetriever
from tests.api.test_cli import _free_port
from tests.cli.test_errors import headrace
from tests.cli.test_interrupts import assert_gone, one_line, postmaster, start, wait_until

pytestmark = pytest.mark.slow


def test_a_newcomers_first_session_leaves_nothing_running(data_dir: Path, tmp_path: Path) -> None:
    where = ("--data-dir", str(data_dir))
    demo = headrace("demo", "--no-serve", *where, cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert "Traceback" not in demo.stderr

    found = headrace("search", '"hacker ethic"', "-o", "json", "-l", "3", *where, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["hits"]
    assert hits and {(hit["namespace"], hit["job"]) for hit in hits} == {("default", "demo")}

    empty = headrace("search", "", *where, cwd=tmp_path)
    assert empty.returncode == 2 and "Traceback" not in empty.stderr and "the query is empty" in empty.stderr

    port = _free_port()
    api = start("api", "--local", "--port", str(port), *where, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, api, "the API answering")
    server = postmaster(data_dir)
    assert server is not None
    retriever = HeadraceRetriever(base_url=base, k=3)  # loopback, no authentication, as the demo serves
    docs = retriever.invoke("what is the hacker ethic")
    assert docs and all(doc.metadata["job"] == "demo" for doc in docs)
    assert any("hacker" in doc.page_content.lower() for doc in docs)

    before = psutil.Process(api.pid).children(recursive=True)
    api.send_signal(signal.SIGINT)
    _, stderr = api.communicate(timeout=60)
    assert api.returncode == 130
    one_line(stderr, "Interrupted (SIGINT).")
    assert_gone([*before, server])
    leftovers = [
        p.info["cmdline"]
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and str(data_dir) in " ".join(p.info["cmdline"])
    ]
    assert not leftovers, leftovers
    status = subprocess.run(
        [sys.executable, "-m", "headrace", "local", "status", *where], capture_output=True, text=True, check=True
    )
    assert status.stdout.startswith("Stopped")
