"""`headrace run` as a user runs it: a manifest, a corpus of 500 documents, search, and a rerun."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from headrace.local import local_uid
from headrace.model import load_manifest
from headrace.store import jobs
from headrace.store.db import Pool

pytestmark = pytest.mark.slow

MANIFEST = """\
apiVersion: headrace.io/v1alpha1
kind: IngestionJob
metadata:
  name: e2e
  namespace: qa
spec:
  source:
    volume:
      path: corpus
      include: ["**/*.txt", "**/*.md", "**/*.html"]
      exclude: ["**/skip/**"]
  workers:
    batchSize: 25
"""


def build_corpus(root: Path) -> None:
    for i in range(500):
        token = f"zq{i:04}marker"
        folder = root / f"shelf{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        match i % 3:
            case 0:
                (folder / f"doc{i}.txt").write_text(f"Report {i}\n\nThe {token} appears in plain text.")
            case 1:
                (folder / f"doc{i}.md").write_text(f"# Note {i}\n\nThe {token} appears in *markdown*.")
            case _:
                (folder / f"doc{i}.html").write_text(
                    f"<html><head><title>Page {i}</title></head><body><main><p>The {token} is in HTML."
                    "</p></main><nav>menu</nav></body></html>"
                )
    (root / "skip").mkdir()
    (root / "skip" / "ignored.txt").write_text("excluded by the manifest")


def headrace(*args: str, dsn: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headrace", *args],
        env={**os.environ, "HEADRACE_DATABASE_URL": dsn, "COLUMNS": "200"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


async def test_run_ingests_everything_findably_and_a_rerun_finds_it_unchanged(
    pool: Pool, dsn: str, tmp_path: Path
) -> None:
    build_corpus(tmp_path / "corpus")
    manifest = tmp_path / "job.yaml"
    manifest.write_text(MANIFEST)
    uid = local_uid(load_manifest(manifest))

    first = headrace("run", "-f", str(manifest), "--workers", "2", dsn=dsn, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    state = await jobs.run_state(pool, uid)
    assert state is not None and state.finished and state.error is None
    assert (state.summary.added, state.summary.failed, state.progress.total) == (500, 0, 500)
    # Search statistics built at the end of the run, as the operator builds them: `headrace search`
    # below ranks from them.
    built = await pool.fetchrow("SELECT run, chunks FROM headrace.search_statistics WHERE job_uid = $1", uid)
    assert built is not None and built["run"] == state.run and built["chunks"] >= 500

    for i in (0, 250, 499):
        found = headrace("search", f"zq{i:04}marker", "--job", "e2e", dsn=dsn, cwd=tmp_path)
        assert found.returncode == 0, found.stderr
        assert f"doc{i}." in found.stdout
    assert "zq" not in headrace("search", "excluded", "--mode", "keyword", dsn=dsn, cwd=tmp_path).stdout

    second = headrace("run", "-f", str(manifest), "--workers", "2", dsn=dsn, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    rerun = await jobs.run_state(pool, uid)
    assert rerun is not None and rerun.run == state.run + 1
    assert (rerun.summary.unchanged, rerun.summary.added, rerun.summary.updated) == (500, 0, 0)
    assert "unchanged" in second.stderr and "500" in second.stderr


def test_a_bad_manifest_is_refused_naming_the_field(tmp_path: Path) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text(MANIFEST.replace("batchSize: 25", "batchSize: 0\n    speed: fast"))
    result = subprocess.run(
        [sys.executable, "-m", "headrace", "run", "-f", str(manifest)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "spec.workers.batchSize" in result.stderr and "spec.workers.speed: unknown field" in result.stderr
