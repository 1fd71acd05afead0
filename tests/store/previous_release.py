"""Run by test_previous_release.py with PYTHONPATH set to the previous release's code: ingest a folder
into the database given, search it, and print what it saw as JSON. Uses only that release's own API."""

import asyncio
import json
import sys
import uuid
from pathlib import Path

from headrace.model import IngestionJobSpec
from headrace.store import jobs, migrate, search
from headrace.store.db import create_pool
from headrace.worker.loop import Worker


async def main(dsn: str, root: str) -> None:
    pool = await create_pool(dsn)
    try:
        spec = IngestionJobSpec.model_validate({"source": {"volume": {"path": "."}}})
        job = await jobs.register_job(pool, uid=uuid.uuid4(), namespace="old", name="docs", generation=1, spec=spec)
        await jobs.start_run(pool, job, reason="previous release")
        code = await Worker(pool, job.uid, volume_root=Path(root), poll_seconds=0.02, lease_seconds=10).run()
        state = await jobs.run_state(pool, job.uid)
        page = await search.search(pool, "zephyr")
        print(
            json.dumps(
                {
                    "built_for": migrate.expected_version(),
                    "exit": code,
                    "succeeded": state.progress.succeeded if state else None,
                    "finished": bool(state and state.finished),
                    "hits": sorted(hit.uri for hit in page.hits),
                    "uid": str(job.uid),
                }
            )
        )
    finally:
        await pool.close()


asyncio.run(main(sys.argv[1], sys.argv[2]))
