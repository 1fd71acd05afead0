"""`headrace.client` against a running `headrace api` process: jobs, status, search with pages, passages,
neighbours, the event stream, the token from a file, and a refused token."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from headrace.client import ApiError, AsyncClient, Client, Event
from headrace.store import runs
from headrace.store.db import Pool
from tests.api.conftest import TEAM_A, TEAM_B, ingest
from tests.api.test_cli import _env, _start_api
from tests.conftest import JobFactory
from tests.sockets import free_port

TOKEN = "client-test-token"


@pytest.fixture
async def api(pool: Pool, dsn: str, tmp_path: Path) -> AsyncIterator[str]:
    """The base URL of a real API process serving two teams' jobs."""
    await ingest(pool, tmp_path, namespace="team-a", name="reports", files=TEAM_A)
    await ingest(pool, tmp_path, namespace="team-b", name="vault", files=TEAM_B)
    port = free_port()
    process = await _start_api(port, _env(dsn, HEADRACE_AUTH_MODE="token", HEADRACE_AUTH_TOKEN=TOKEN))
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as probe:
            while True:
                assert process.returncode is None, "the API exited"
                try:
                    if (await probe.get(f"{base}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)  # polling for the event: the API answering
        yield base
    finally:
        process.terminate()
        await process.wait()


async def test_async_client_reads_jobs_searches_across_pages_and_fetches_context(api: str) -> None:
    async with AsyncClient(api, token=TOKEN) as client:
        jobs = [job async for job in client.iter_jobs("team-a", page_size=1)]
        assert [job.name for job in jobs] == ["reports"]
        detail = await client.job("team-a", "reports")
        assert detail.phase == "Succeeded" and detail.runs

        first = await client.search("zephyr", mode="keyword", limit=1)
        assert len(first.items) == 1 and first.next_cursor
        every = [hit async for hit in client.iter_search("zephyr", max_hits=10, page_size=1, mode="keyword")]
        assert {(hit.namespace, hit.job) for hit in every} == {("team-a", "reports"), ("team-b", "vault")}
        assert len({hit.chunk_id for hit in every}) == len(every) == 3  # each hit once across the pages
        assert "<mark>" not in every[0].snippet  # plain text by default
        where = {hit.uri: hit.heading_path for hit in every if hit.namespace == "team-a"}
        assert where == {"reports/river.md": "River", "reports/glacier.txt": None}  # "# River"; no heading

        glacier = next(hit for hit in every if hit.uri == "reports/glacier.txt")
        context = await client.neighbours("team-a", "reports", glacier.chunk_id)
        assert context.uri == "reports/glacier.txt" and glacier.chunk_id in [p.chunk_id for p in context.passages]
        passages = [p async for p in client.iter_passages("team-a", "reports", "reports/glacier.txt", page_size=1)]
        assert "".join(p.text for p in passages).startswith("The zephyr crossed the glacier")


async def test_events_replay_a_finished_job_and_end(api: str) -> None:
    async with AsyncClient(api, token=TOKEN) as client:
        events = [event async for event in client.events("team-a", "reports")]
    assert events[-1].event == "end" and events[-1].data["phase"] == "Succeeded"
    reasons = [event.data["reason"] for event in events if event.event == "job"]
    assert reasons[0] == "RunStarted" and "RunSucceeded" in reasons
    ids = [event.id for event in events if event.event == "job"]
    async with AsyncClient(api, token=TOKEN) as client:
        resumed = [e async for e in client.events("team-a", "reports", last_event_id=ids[0])]
    assert [e.id for e in resumed if e.event == "job"] == ids[1:]  # only what came after


async def test_sync_client_reads_the_token_from_a_file_as_in_a_pod(api: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")

    def synchronously() -> None:  # as a script without an event loop runs it
        with Client(api, token_file=token_file) as client:
            hits = list(client.iter_search("zephyr", max_hits=2, page_size=1, mode="keyword"))
            assert len(hits) == 2
            assert client.job("team-b", "vault").name == "vault"

    await asyncio.to_thread(synchronously)


async def test_a_refused_token_is_an_api_error_with_the_reason(api: str) -> None:
    async with AsyncClient(api, token="wrong") as client:
        with pytest.raises(ApiError) as refused:
            await client.search("zephyr")
    assert refused.value.status == 401
    async with AsyncClient(api, token=TOKEN) as client:
        with pytest.raises(ApiError) as missing:
            await client.job("team-a", "nosuchjob")
    assert missing.value.status == 404 and "nosuchjob" in missing.value.detail


async def test_langchain_retriever_returns_whole_passages_with_their_source(api: str) -> None:
    from headrace.langchain import HeadraceRetriever

    retriever = HeadraceRetriever(base_url=api, token=TOKEN, k=5, namespaces=["team-a"], mode="keyword")
    docs = await retriever.ainvoke("zephyr")
    assert {doc.metadata["uri"] for doc in docs} == {"reports/glacier.txt", "reports/river.md"}
    glacier = next(doc for doc in docs if doc.metadata["uri"] == "reports/glacier.txt")
    assert glacier.page_content == TEAM_A["reports/glacier.txt"]
    assert (glacier.metadata["namespace"], glacier.metadata["job"]) == ("team-a", "reports")
    assert isinstance(glacier.metadata["chunkId"], int) and glacier.metadata["score"] > 0
    river = next(doc for doc in docs if doc.metadata["uri"] == "reports/river.md")
    assert river.metadata["headingPath"] == "River" and "headingPath" not in glacier.metadata

    narrowed = HeadraceRetriever(base_url=api, token=TOKEN, k=1, mode="keyword")
    assert len(await asyncio.to_thread(narrowed.invoke, "zephyr")) == 1  # the sync path, off the event loop


async def test_events_resume_on_another_api_process_without_repeating_or_losing_any(
    pool: Pool, dsn: str, make_job: JobFactory
) -> None:
    job = await make_job(name="live", namespace="team-a")
    run = await runs.start_run(pool, job, reason="test")  # Running with no worker: the stream stays open
    port = free_port()
    env = _env(dsn, HEADRACE_AUTH_MODE="token", HEADRACE_AUTH_TOKEN=TOKEN, HEADRACE_SHUTDOWN_GRACE_SECONDS="1")
    first_api = await _start_api(port, env)
    seen: list[Event] = []
    started = asyncio.Event()

    async def follow() -> None:
        async with AsyncClient(f"http://127.0.0.1:{port}", token=TOKEN) as client:
            async for event in client.events("team-a", "live", reconnect_seconds=0.1):
                seen.append(event)
                if event.event == "job":
                    started.set()

    following = asyncio.create_task(follow())
    try:
        await started.wait()  # the client's first connection ran (it retries until the API answers)
        first_api.terminate()  # a rollout: the stream ends without `end`
        assert await first_api.wait() == 0
        second_api = await _start_api(port, env)
        try:
            await runs.close_run(pool, job.uid, run, reason="Tested", message="ended by the test")
            await asyncio.wait_for(following, timeout=120)
        finally:
            second_api.terminate()
            await second_api.wait()
    finally:
        following.cancel()
    reasons = [event.data["reason"] for event in seen if event.event == "job"]
    assert reasons == ["RunStarted", "RunFailed"]  # each log entry once, across the two processes
    assert seen[-1].event == "end" and seen[-1].data["phase"] == "Failed"


async def test_llamaindex_retriever_returns_scored_nodes_with_their_source(api: str) -> None:
    from headrace.llamaindex import HeadraceRetriever

    retriever = HeadraceRetriever(api, token=TOKEN, k=5, namespaces=["team-b"], mode="keyword")
    nodes = await retriever.aretrieve("zephyr")
    assert [node.node.metadata["uri"] for node in nodes] == ["secret.txt"]
    assert nodes[0].node.get_content() == TEAM_B["secret.txt"]
    assert nodes[0].node.node_id == f"headrace:{nodes[0].node.metadata['chunkId']}"
    assert nodes[0].score is not None and nodes[0].score > 0
    assert len(await asyncio.to_thread(HeadraceRetriever(api, token=TOKEN, k=1).retrieve, "zephyr")) == 1
