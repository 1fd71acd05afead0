"""Incremental runs: change markers refreshed when the bytes turn out unchanged."""

import os
from pathlib import Path

from headrace.store.db import Pool
from tests.conftest import JobFactory, volume_spec
from tests.sources.helpers import counts, documents, run_once


async def test_a_touched_file_gets_its_new_marker_so_later_runs_skip_it_unread(
    pool: Pool, make_job: JobFactory, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Anchors hold in sand.")
    job = await make_job(volume_spec(corpus))
    await run_once(pool, job, secrets_dir=tmp_path)

    os.utime(corpus / "a.txt", ns=(1_000_000_000, 1_000_000_000))
    second = await run_once(pool, job, secrets_dir=tmp_path)
    assert counts(second) == (0, 0, 1, 0, 0)
    assert (await documents(pool, job))["a.txt"]["source_version"] == str(1_000_000_000)
