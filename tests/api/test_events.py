"""The Server-Sent Events stream of a job: history, live progress, end on a terminal phase, resume."""

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from headrace.api.app import create_app
from headrace.api.settings import ApiSettings
from headrace.store import jobs, runs
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord
from headrace.worker.loop import Worker
from headrace.worker.store import DirectStore
from tests.api.conftest import Tap, bearer
from tests.conftest import volume_spec

ALICE = bearer("alice-token")
EVENTS = "/v1/namespaces/team-a/ingestionjobs/docs/events"


def parse(body: str) -> list[dict[str, Any]]:
    """SSE frames as dicts of their fields, `data` decoded; keep-alive comments dropped."""
    frames = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                key, _, value = line.partition(":")
                fields[key] = value.removeprefix(" ")
        if fields:
            fields["data"] = json.loads(fields["data"])
            frames.append(fields)
    return frames


async def test_finished_job_replays_its_log_and_closes(client: httpx.AsyncClient, seeded: dict[str, JobRecord]) -> None:
    response = await client.get(EVENTS, headers=ALICE)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = parse(response.text)
    log = [f for f in frames if f["event"] == "job"]
    assert [f["data"]["reason"] for f in log] == ["RunStarted", "Discovered", "RunSucceeded"]
    assert all(f["id"] == str(f["data"]["id"]) for f in log)
    assert {"event": "phase", "data": {"phase": "Succeeded", "run": 1}} in frames
    progress = [f["data"] for f in frames if f["event"] == "progress"]
    assert progress[-1] == {"run": 1, "total": 3, "succeeded": 2, "failed": 1, "pending": 0, "percent": 100}
    assert frames[-1] == {"event": "end", "data": {"phase": "Succeeded"}}


async def test_resume_after_last_event_id_skips_what_was_seen(
    client: httpx.AsyncClient, seeded: dict[str, JobRecord]
) -> None:
    first = parse((await client.get(EVENTS, headers=ALICE)).text)
    discovered = next(f for f in first if f["event"] == "job" and f["data"]["reason"] == "Discovered")
    resumed = parse((await client.get(EVENTS, headers={**ALICE, "Last-Event-ID": discovered["id"]})).text)
    assert [f["data"]["reason"] for f in resumed if f["event"] == "job"] == ["RunSucceeded"]
    assert resumed[-1]["event"] == "end"


async def test_bad_last_event_id_is_a_400(client: httpx.AsyncClient, seeded: dict[str, JobRecord]) -> None:
    response = await client.get(EVENTS, headers={**ALICE, "Last-Event-ID": "abc"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


async def test_stream_follows_a_running_job_to_its_end(
    tapped: tuple[httpx.AsyncClient, Tap], pool: Pool, tmp_path: Path
) -> None:
    client, tap = tapped
    volume = tmp_path / "volume"
    volume.mkdir()
    for i in range(8):
        (volume / f"doc{i}.txt").write_text(f"Document {i} about canals and locks.")
    job = await jobs.register_job(
        pool,
        uid=uuid.uuid4(),
        namespace="team-a",
        name="docs",
        generation=1,
        spec=volume_spec(".", workers={"batchSize": 1}),
    )
    await runs.start_run(pool, job, reason="test")
    stream = asyncio.create_task(client.get(EVENTS, headers=ALICE))
    # The stream is open on a running job: it must not end before the work does. The work starts once
    # the stream said so (not after a fixed wait, which a loaded machine can outlast).
    await tap.wait_for('"phase": "Running"')
    assert not stream.done()
    assert await Worker(DirectStore(pool, job.uid), volume_root=volume, poll_seconds=0.02).run() == 0
    response = await asyncio.wait_for(stream, timeout=30)
    frames = parse(response.text)
    phases = [f["data"]["phase"] for f in frames if f["event"] == "phase"]
    assert phases == ["Running", "Succeeded"]
    progress = [f["data"]["succeeded"] for f in frames if f["event"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 8
    assert frames[-1] == {"event": "end", "data": {"phase": "Succeeded"}}


async def test_streams_over_the_cap_are_503(settings: Callable[..., ApiSettings], pool: Pool, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "doc.txt").write_text("A lock keeper.")
    job = await jobs.register_job(
        pool, uid=uuid.uuid4(), namespace="team-a", name="docs", generation=1, spec=volume_spec(".")
    )
    await runs.start_run(pool, job, reason="test")
    app = create_app(settings(events_max_streams=1))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://headrace") as client,
    ):
        first = asyncio.create_task(client.get(EVENTS, headers=ALICE))
        # Wait until the first stream is being served (bounded by the test timeout).
        while app.state.services.streams.open < 1:  # noqa: ASYNC110 - a counter, not an event, is what we have
            await asyncio.sleep(0.01)
        second = await client.get(EVENTS, headers=ALICE)
        assert second.status_code == 503
        assert second.headers["retry-after"] == "10"
        assert await Worker(DirectStore(pool, job.uid), volume_root=volume, poll_seconds=0.02).run() == 0
        assert (await asyncio.wait_for(first, timeout=30)).status_code == 200
        assert app.state.services.streams.open == 0
        assert (await client.get(EVENTS, headers=ALICE)).status_code == 200
