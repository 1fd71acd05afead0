"""docs/local-mode.md's search commands, run as written against the demo corpus: each finds something."""

import re
from pathlib import Path

import pytest

from headrace.store.db import Pool
from tests.conftest import ingest_demo_corpus
from tests.docs.blocks import ROOT, block, commands, run

PAGE = ROOT / "docs" / "local-mode.md"


@pytest.mark.postgres
async def test_local_mode_searches_work_as_written(pool: Pool, dsn: str, tmp_path: Path) -> None:
    await ingest_demo_corpus(pool)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = {"HEADRACE_DATABASE_URL": dsn, "COLUMNS": "200"}
    searches = commands(block(PAGE, "local-search"))
    assert len(searches) == 3
    for command in searches:
        done = run(command, cwd=tmp_path, env=env)
        assert done.returncode == 0, (command, done.stderr)
        found = re.search(r"\((\d+) results", done.stdout)
        assert found and int(found.group(1)) > 0, (command, done.stdout)
    (piped,) = commands(block(PAGE, "local-search-json"))
    done = run(piped, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(line.startswith("demo jargon-file/") for line in lines), done.stdout
