"""Prometheus metrics: on their own port, from a snapshot of Postgres refreshed in the background."""

import asyncio
from collections.abc import Callable

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from headrace.api import metrics
from headrace.api.app import create_app
from headrace.api.settings import ApiSettings
from headrace.store import runs
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord
from headrace.store.search import statistics as search_statistics
from tests.api.conftest import bearer

pytestmark = pytest.mark.postgres


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


async def test_metrics_are_served_on_their_own_port_from_a_snapshot(
    settings: Callable[..., ApiSettings], seeded: dict[str, JobRecord], pool: Pool
) -> None:
    # A pending task for team-b: the backlog gauge must show it.
    await pool.execute(
        "INSERT INTO headrace.tasks (job_uid, run, kind, dedupe_key) VALUES ($1, 1, 'ingest', 'extra')",
        seeded["team-b"].uid,
    )
    app = create_app(settings(metrics_port=0, metrics_refresh_seconds=3600))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://headrace") as client,
    ):
        port = app.state.metrics_port
        assert isinstance(port, int) and port > 0
        route = "/v1/namespaces/{ns}/ingestionjobs/{name}"
        request_labels = {"method": "GET", "route": route, "status": "200"}
        # Counters are the process's: count what this test adds.
        requests_before = REGISTRY.get_sample_value("headrace_api_requests_total", request_labels) or 0
        searches_before = REGISTRY.get_sample_value("headrace_search_duration_seconds_count") or 0
        await client.get("/v1/namespaces/team-a/ingestionjobs/docs", headers=bearer("alice-token"))
        await client.get("/v1/search?q=zephyr", headers=bearer("alice-token"))
        # Not on the API's port: tenants reach that one, and the totals name every namespace.
        assert (await client.get("/metrics")).status_code == 404

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as scraper:
            for _ in range(100):  # the first refresh runs as the lifespan starts
                response = await scraper.get("/metrics")
                if "headrace_metrics_snapshot_timestamp_seconds " in response.text:
                    break
                await asyncio.sleep(0.05)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            found = samples(response.text)
            team_a = {"namespace": "team-a", "ingestionjob": "docs"}
            team_b = {"namespace": "team-b", "ingestionjob": "docs"}
            assert value(found, "headrace_tasks_pending", **team_a) == 0
            assert value(found, "headrace_tasks_pending", **team_b) == 1
            assert value(found, "headrace_tasks", **team_b, state="pending") == 1
            assert value(found, "headrace_tasks", **team_a, state="dead") == 0
            assert value(found, "headrace_index_documents", **team_a, state="ingested") == 2
            assert value(found, "headrace_index_documents", **team_a, state="failed") == 1
            assert value(found, "headrace_index_chunks", **team_b) == 1
            assert value(found, "headrace_index_bytes", **team_b) == 66
            assert value(found, "headrace_run_documents", **team_a, outcome="added") == 2
            assert value(found, "headrace_run_documents", **team_a, outcome="failed") == 1
            assert value(found, "headrace_runs_total", **team_a, outcome="succeeded") == 1
            assert value(found, "headrace_run_duration_seconds_count", outcome="succeeded") == 2
            assert value(found, "headrace_run_duration_seconds_bucket", outcome="succeeded", le="+Inf") == 2
            assert value(found, "headrace_run_duration_seconds_bucket", outcome="succeeded", le="60.0") == 2
            # No series carries Prometheus' own `job` label.
            assert not any("job" in dict(labels) for _, labels in found)
            assert value(found, "headrace_api_requests_total", **request_labels) == requests_before + 1
            assert value(found, "headrace_search_duration_seconds_count") == searches_before + 1

            # A scrape reads the snapshot, not Postgres: news shows only after the next refresh.
            await pool.execute(
                "INSERT INTO headrace.tasks (job_uid, run, kind, dedupe_key) VALUES ($1, 1, 'ingest', 'more')",
                seeded["team-b"].uid,
            )
            assert value(samples((await scraper.get("/metrics")).text), "headrace_tasks_pending", **team_b) == 1
            await metrics.SNAPSHOT.refresh(pool)
            assert value(samples((await scraper.get("/metrics")).text), "headrace_tasks_pending", **team_b) == 2

            # Search statistics: missing (0) until built for team-a's finished run.
            assert value(found, "headrace_search_statistics_current", **team_a) == 0
            await search_statistics.build(pool, seeded["team-a"].uid)
            await metrics.SNAPSHOT.refresh(pool)
            found = samples((await scraper.get("/metrics")).text)
            assert value(found, "headrace_search_statistics_current", **team_a) == 1
            assert value(found, "headrace_search_statistics_current", **team_b) == 0

    with pytest.raises(httpx.ConnectError):  # the metrics server stops with the app
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as scraper:
            await scraper.get("/metrics")


async def test_an_active_run_reports_its_start_and_last_progress(
    settings: Callable[..., ApiSettings], seeded: dict[str, JobRecord], pool: Pool
) -> None:

    job = seeded["team-a"]
    run = await runs.start_run(pool, job, reason="test")
    await metrics.SNAPSHOT.refresh(pool)
    found = samples(generate_latest(REGISTRY).decode())
    team_a = {"namespace": "team-a", "ingestionjob": "docs"}
    started = value(found, "headrace_run_started_timestamp_seconds", **team_a)
    assert started is not None
    assert value(found, "headrace_run_last_progress_timestamp_seconds", **team_a) == started
    assert value(found, "headrace_run_started_timestamp_seconds", namespace="team-b", ingestionjob="docs") is None
    assert run == 2
