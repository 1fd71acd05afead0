"""How a run ends, as the API tells it: a run the operator closes (its worker Job failed) ends the event
stream as Failed with the Job's reason; a spec the operator refused is a Failed job, not a 404."""

import asyncio
import uuid
from pathlib import Path

import httpx
from prometheus_client import REGISTRY, generate_latest

from headrace.api import metrics
from headrace.model.events import Reason
from headrace.store import jobs, runs
from headrace.store.db import Pool
from headrace.worker.loop import Worker
from headrace.worker.store import DirectStore
from tests.api.conftest import Tap, bearer
from tests.api.test_events import parse
from tests.api.test_metrics import samples, value
from tests.conftest import volume_spec

ALICE = bearer("alice-token")
JOB = "/v1/namespaces/team-a/ingestionjobs/docs"


async def test_a_run_closed_by_its_failed_job_ends_the_stream(
    tapped: tuple[httpx.AsyncClient, Tap], pool: Pool
) -> None:
    client, tap = tapped
    job = await jobs.register_job(
        pool, uid=uuid.uuid4(), namespace="team-a", name="docs", generation=1, spec=volume_spec(".")
    )
    await runs.start_run(pool, job, reason="test")
    stream = asyncio.create_task(client.get(f"{JOB}/events", headers=ALICE))
    # The run closes once the stream said it was running (a stream that first looks after the close
    # rightly says Failed alone: waiting a fixed 0.3 s for the first look failed so on a loaded machine).
    await tap.wait_for('"phase": "Running"')
    assert not stream.done()  # a running job's stream stays open
    message = "the worker Job failed: Job has reached the specified backoff limit"
    assert await runs.close_run(pool, job.uid, 1, reason="BackoffLimitExceeded", message=message)
    assert not await runs.close_run(pool, job.uid, 1, reason="BackoffLimitExceeded", message=message)  # once

    frames = parse((await asyncio.wait_for(stream, timeout=30)).text)
    assert [f["data"]["phase"] for f in frames if f["event"] == "phase"] == ["Running", "Failed"]
    failed = [f["data"] for f in frames if f["event"] == "job" and f["data"]["reason"] == "RunFailed"]
    assert len(failed) == 1 and "backoff limit" in failed[0]["message"]
    assert frames[-1] == {"event": "end", "data": {"phase": "Failed"}}

    status = (await client.get(JOB, headers=ALICE)).json()
    assert (status["phase"], status["reason"]) == ("Failed", "BackoffLimitExceeded")
    assert status["completionTime"] and status["error"] == message
    assert status["runs"][0]["endReason"] == "BackoffLimitExceeded"


async def test_a_refused_spec_is_a_failed_job_not_a_404(client: httpx.AsyncClient, pool: Pool) -> None:
    uid = uuid.uuid4()
    error = "spec.source.volume.claimName: required in a cluster"
    raw = {"source": {"volume": {"path": "docs"}}}
    await jobs.record_invalid_spec(pool, uid=uid, namespace="team-a", name="docs", generation=1, spec=raw, error=error)
    response = await client.get(JOB, headers=ALICE)
    assert response.status_code == 200
    status = response.json()
    assert (status["phase"], status["reason"], status["error"], status["run"]) == ("Failed", "InvalidSpec", error, 0)
    frames = parse((await client.get(f"{JOB}/events", headers=ALICE)).text)
    assert [f["data"]["reason"] for f in frames if f["event"] == "job"] == ["InvalidSpec"]
    assert frames[-1] == {"event": "end", "data": {"phase": "Failed"}}

    # Fixed: registering the valid spec clears the error.
    await jobs.register_job(pool, uid=uid, namespace="team-a", name="docs", generation=2, spec=volume_spec("."))
    status = (await client.get(JOB, headers=ALICE)).json()
    assert (status["phase"], status["reason"], status["error"]) == ("Pending", None, None)


async def test_a_run_over_its_failure_policy_says_so_everywhere(
    client: httpx.AsyncClient, pool: Pool, tmp_path: Path
) -> None:
    (tmp_path / "good.txt").write_text("A mill race feeds the wheel.")
    (tmp_path / "empty.txt").write_text("")  # no text: fails
    job = await jobs.register_job(
        pool,
        uid=uuid.uuid4(),
        namespace="team-a",
        name="docs",
        generation=1,
        spec=volume_spec(".", failurePolicy={"maxFailedDocuments": 0}),
    )
    await runs.start_run(pool, job, reason="test")
    assert await Worker(DirectStore(pool, job.uid), volume_root=tmp_path, poll_seconds=0.02).run() == 0
    status = (await client.get(JOB, headers=ALICE)).json()
    assert (status["phase"], status["reason"]) == ("Failed", "FailurePolicyExceeded")
    assert "maxFailedDocuments (0)" in status["error"]
    frames = parse((await client.get(f"{JOB}/events", headers=ALICE)).text)
    assert frames[-1] == {"event": "end", "data": {"phase": "Failed"}}


async def test_a_superseded_run_says_so_in_the_api_and_the_metrics(client: httpx.AsyncClient, pool: Pool) -> None:
    """A run left unfinished when the next one starts ends as RunSuperseded, not RunFailed: its row says
    so, and the API and the metrics read that word, not the text of its error."""
    job = await jobs.register_job(
        pool, uid=uuid.uuid4(), namespace="team-a", name="docs", generation=1, spec=volume_spec(".")
    )
    await runs.start_run(pool, job, reason="first")
    await runs.start_run(pool, job, reason="second")

    status = (await client.get(JOB, headers=ALICE)).json()
    assert (status["phase"], status["run"], status["reason"]) == ("Running", 2, None)
    [second, first] = status["runs"]
    assert (second["run"], second["endReason"]) == (2, None)
    assert (first["run"], first["endReason"], first["error"]) == (1, "RunSuperseded", "superseded by run 2")

    await metrics.SNAPSHOT.refresh(pool)
    found = samples(generate_latest(REGISTRY).decode())
    team_a = {"namespace": "team-a", "ingestionjob": "docs"}
    assert value(found, "headrace_runs_total", **team_a, outcome="superseded") == 1
    assert not value(found, "headrace_runs_total", **team_a, outcome="failed")


async def test_an_interrupted_local_run_is_its_own_phase_in_the_api_the_stream_and_the_metrics(
    client: httpx.AsyncClient, pool: Pool
) -> None:
    """`headrace run` stopped by Ctrl-C closes its run with RunInterrupted: the job is Interrupted, not
    Failed (nothing in it failed), its stream ends, and the metrics count it apart."""
    job = await jobs.register_job(
        pool, uid=uuid.uuid4(), namespace="team-a", name="docs", generation=1, spec=volume_spec(".")
    )
    await runs.start_run(pool, job, reason="started by headrace run")
    assert await runs.close_run(pool, job.uid, 1, reason=Reason.RUN_INTERRUPTED, message="interrupted by SIGINT")

    status = (await client.get(JOB, headers=ALICE)).json()
    assert (status["phase"], status["reason"], status["error"]) == (
        "Interrupted",
        "RunInterrupted",
        "interrupted by SIGINT",
    )
    assert status["runs"][0]["endReason"] == "RunInterrupted"
    listed = (await client.get("/v1/namespaces/team-a/ingestionjobs", headers=ALICE)).json()
    assert [item["phase"] for item in listed["items"]] == ["Interrupted"]
    frames = parse((await client.get(f"{JOB}/events", headers=ALICE)).text)
    assert frames[-1] == {"event": "end", "data": {"phase": "Interrupted"}}

    await metrics.SNAPSHOT.refresh(pool)
    found = samples(generate_latest(REGISTRY).decode())
    team_a = {"namespace": "team-a", "ingestionjob": "docs"}
    assert value(found, "headrace_runs_total", **team_a, outcome="interrupted") == 1
    assert not value(found, "headrace_runs_total", **team_a, outcome="failed")
