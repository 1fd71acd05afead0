"""`headrace run --retry-failed`: after fixing what failed, re-process only the failed documents, and a
`sync: mirror` job deletes nothing for it (a retry lists nothing)."""

from pathlib import Path

import pytest

from headrace.local import local_uid
from headrace.model import load_manifest
from headrace.store import jobs
from headrace.store.db import Pool
from tests.e2e.test_local_run import headrace

pytestmark = pytest.mark.slow

MANIFEST = """\
apiVersion: headrace.io/v1alpha1
kind: IngestionJob
metadata:
  name: retry
  namespace: qa
spec:
  sync: mirror
  source:
    volume:
      path: corpus
"""


async def test_retry_failed_reprocesses_only_the_failed_documents(pool: Pool, dsn: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(5):
        (corpus / f"doc{i}.txt").write_text(f"Document {i} about sluices.")
    (corpus / "empty.txt").write_text("")  # no text: a failed document
    manifest = tmp_path / "job.yaml"
    manifest.write_text(MANIFEST)
    uid = local_uid(load_manifest(manifest))

    first = headrace("run", "-f", str(manifest), "--workers", "1", dsn=dsn, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    state = await jobs.run_state(pool, uid)
    assert state is not None and (state.summary.added, state.summary.failed) == (5, 1)

    (corpus / "empty.txt").write_text("Now it has text about weirs.")
    retried = headrace("run", "-f", str(manifest), "--workers", "1", "--retry-failed", dsn=dsn, cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    retry = await jobs.run_state(pool, uid)
    assert retry is not None and retry.run == 2 and retry.finished and retry.error is None
    assert (retry.progress.total, retry.progress.succeeded, retry.progress.failed) == (1, 1, 0)
    assert retry.summary.deleted == 0
    rows = await pool.fetch("SELECT uri, run, state FROM headrace.documents WHERE job_uid = $1 ORDER BY uri", uid)
    assert [(r["uri"], r["run"], r["state"]) for r in rows] == [
        *[(f"doc{i}.txt", 1, "ingested") for i in range(5)],
        ("empty.txt", 2, "ingested"),
    ]
    (logged,) = [e for e in await jobs.events(pool, uid) if e["reason"] == "RunStarted" and e["run"] == 2]
    assert "retry of the 1 failed documents of run 1" in logged["message"]

    # A full run afterwards (what every `headrace run` is) still mirrors: nothing was lost.
    full = headrace("run", "-f", str(manifest), "--workers", "1", dsn=dsn, cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    last = await jobs.run_state(pool, uid)
    assert last is not None and (last.summary.unchanged, last.summary.deleted) == (6, 0)
