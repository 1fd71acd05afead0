"""The docs work as written: the object names they mention exist in the rendered chart, and the
`headrace` and `curl` commands of the README and getting-started that can run locally do."""

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from headrace.store.db import Pool
from tests.api.conftest import ingest
from tests.chart.conftest import CHART, EVERYTHING, parse, tool
from tests.docs.blocks import ROOT, block, commands, run
from tests.sockets import free_port

PAGES = [ROOT / "README.md", CHART / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# An object name: `headrace-...`, not followed by a dot and a word (a file such as headrace-restore.sql).
NAME = re.compile(r"\bheadrace-[a-z0-9-]*[a-z0-9]\b(?!\.\w)")
# Names in the docs that are not chart objects, each with why.
NOT_OBJECTS = {
    "headrace-batch": "a benchmark variant (docs/benchmarks.md)",
    "headrace-worker-database": "the Secret releases with per-namespace roles wrote, which the operator deletes",
}


def rendered_names() -> set[str]:
    """Names of every object the chart makes as release `headrace` in namespace `headrace`, the
    names the docs assume: with default values, the dev Postgres, and every optional part on."""
    names: set[str] = set()
    for args in ([], ["--set", "postgresql.enabled=true"], ["--values", str(EVERYTHING)]):
        done = subprocess.run(
            [str(tool("helm")), "template", "headrace", str(CHART), "--namespace", "headrace", *args],
            capture_output=True,
            text=True,
            check=True,
        )
        objects = parse(done.stdout)
        names |= {o["metadata"]["name"] for o in objects}
    return names


def test_every_object_name_the_docs_mention_is_one_the_chart_creates() -> None:
    names = rendered_names()
    wrong = []
    for page in PAGES:
        for line_number, line in enumerate(page.read_text().splitlines(), 1):
            for found in NAME.findall(line):
                if found not in names and found not in NOT_OBJECTS:
                    wrong.append(f"{page.relative_to(ROOT)}:{line_number}: {found}")
    assert wrong == [], f"not in the rendered chart: {wrong}"


def test_the_name_check_catches_the_old_mistakes() -> None:
    names = rendered_names()
    for mistake in ("headrace-headrace-database", "headrace-headrace-migrate"):
        assert NAME.findall(f"`{mistake}`") == [mistake] and mistake not in names


@pytest.mark.postgres
def test_readme_local_run_and_search_find_what_they_index() -> None:
    # Not under pytest's basetemp: the embedded Postgres runs as another user than root, and pytest
    # makes its folders 0700 (tests/conftest.py says more).
    folder = Path(tempfile.mkdtemp(prefix="headrace-readme-"))
    try:
        folder.chmod(0o755)
        shutil.copytree(ROOT / "examples", folder / "examples")
        (folder / ".venv").symlink_to(ROOT / ".venv")
        env = {"DATABASE_URL": "", "HEADRACE_DATABASE_URL": ""}
        done = run(block(ROOT / "README.md", "local"), cwd=folder, env=env)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    found = re.search(r"\((\d+) results\)", done.stdout)
    assert found and int(found.group(1)) > 0, done.stdout


@pytest.mark.postgres
def test_a_database_url_in_the_environment_is_announced(tmp_path: Path, dsn: str) -> None:
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    done = run(".venv/bin/headrace search zephyr", cwd=tmp_path, env={"DATABASE_URL": dsn})
    assert done.returncode == 0, done.stderr
    assert "from $DATABASE_URL, not the embedded one" in done.stderr
    assert "password" not in done.stderr.lower() or "password" not in dsn
    flag = run(f".venv/bin/headrace search zephyr --database-url '{dsn}'", cwd=tmp_path, env={"DATABASE_URL": ""})
    assert flag.returncode == 0 and "not the embedded one" not in flag.stderr


TOKEN = "docs-test-token"


@pytest.fixture
async def local_api(dsn: str, pool: Pool, tmp_path: Path) -> AsyncIterator[int]:
    """`headrace api` on a loopback port (static-token auth) over a job docs-team/handbook."""
    await ingest(
        pool,
        tmp_path / "volumes",
        namespace="docs-team",
        name="handbook",
        files={"notes/ship.md": "# Shipping\n\nThe release notes of every release.", "drafts/x.md": "A draft."},
    )
    port = free_port()
    env = {**os.environ, "HEADRACE_DATABASE_URL": dsn, "HEADRACE_AUTH_MODE": "token", "HEADRACE_AUTH_TOKEN": TOKEN}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "headrace", "api", "--host", "127.0.0.1", "--port", str(port), env=env
    )
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        yield port
    finally:
        process.terminate()
        await process.wait()


@pytest.mark.postgres
async def test_getting_started_search_commands_run_against_a_local_api(local_api: int) -> None:
    import json

    script = block(ROOT / "docs" / "getting-started.md", "search").replace("127.0.0.1:8080", f"127.0.0.1:{local_api}")
    status, search, hybrid, events = commands(script)
    env = {"TOKEN": TOKEN}
    job = await asyncio.to_thread(run, status, cwd=ROOT, env=env)
    assert job.returncode == 0, job.stderr
    assert json.loads(job.stdout)["name"] == "handbook"
    hits = await asyncio.to_thread(run, search, cwd=ROOT, env=env)
    assert hits.returncode == 0, hits.stderr
    assert [h["uri"] for h in json.loads(hits.stdout)["items"]] == ["notes/ship.md"]
    asked = await asyncio.to_thread(run, hybrid, cwd=ROOT, env=env)
    assert asked.returncode == 0, asked.stderr
    assert isinstance(json.loads(asked.stdout)["items"], list)
    # The stream of a finished job ends after its history; a running one's would go on: cap it.
    stream = await asyncio.to_thread(run, events.replace("curl -N", "curl -N --max-time 5"), cwd=ROOT, env=env)
    assert stream.returncode in (0, 28), stream.stderr  # 28: curl's time limit, after reading
    assert "event: " in stream.stdout
