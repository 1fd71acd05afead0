"""bench/worker_api.py measures what it says: its workers really go through the ingest service it starts
(their token is that job's and no other's), and the environment it gives them is put back afterwards."""

import os
import uuid
from pathlib import Path

import httpx
import pytest

from bench import worker_api
from headrace.model.contract import INGEST_TOKEN_FILE_ENV, INGEST_URL_ENV
from headrace.store import migrate
from headrace.store.db import create_pool

pytestmark = pytest.mark.postgres


async def test_the_service_it_starts_serves_its_job_and_refuses_others(dsn: str, tmp_path: Path) -> None:
    pool = await create_pool(dsn, max_size=1)
    try:
        await migrate.migrate(pool)
    finally:
        await pool.close()
    job = uuid.uuid4()
    async with worker_api.ingest_service(dsn, job, tmp_path) as (url, token_file, _):
        headers = {"Authorization": f"Bearer {token_file.read_text()}"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as client:
            own = await client.get(f"/v1/jobs/{job}/drained")
            other = await client.get(f"/v1/jobs/{uuid.uuid4()}/drained")
            anonymous = await client.get(f"/v1/jobs/{job}/drained", headers={"Authorization": "Bearer nope"})
    assert own.status_code == 200 and own.json() == {"drained": True}
    assert other.status_code == 403
    assert anonymous.status_code == 401


def test_remote_workers_env_is_put_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INGEST_URL_ENV, raising=False)
    monkeypatch.setenv(INGEST_TOKEN_FILE_ENV, "/before")
    with worker_api.remote_workers("http://127.0.0.1:1", tmp_path / "token"):
        assert os.environ[INGEST_URL_ENV] == "http://127.0.0.1:1"
        assert os.environ[INGEST_TOKEN_FILE_ENV] == str(tmp_path / "token")
    assert INGEST_URL_ENV not in os.environ
    assert os.environ[INGEST_TOKEN_FILE_ENV] == "/before"
