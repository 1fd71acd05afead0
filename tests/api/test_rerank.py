"""Reranking by the platform's cross-encoder: applied, off or on by default, refused when absent, and a
slow, down or wrong reranker answered by the search's own order with a header saying so, never an error.
The reranker is a real HTTP server on loopback (tests/api/rerankserver.py) scoring by word overlap, so
its order differs from BM25's."""

import html
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY
from pydantic import ValidationError

from headrace.api.app import create_app
from headrace.api.settings import ApiSettings
from headrace.client import AsyncClient
from headrace.store.db import Pool
from headrace.store.search.snippets import FRAGMENT_DELIMITER
from tests.api.conftest import bearer, ingest, serve
from tests.api.rerankserver import Answer, overlap, rerank_server, tei
from tests.sockets import free_port

ADMIN = bearer("admin-token")
QUERY = "zephyr glacier"
# BM25 favours the passages saying "zephyr" often; the stand-in reranker, the ones made mostly of the query.
CORPUS = {
    "winds.txt": "Zephyr after zephyr after zephyr: the zephyr winds of the valley, a zephyr each spring, "
    "blowing past farms, barns, orchards, fields, fences, roads and rivers all season long.",
    "ice.txt": "Zephyr glacier.",
    "mill.txt": "The glacier fed the mill race through the spring, and the mill wheel turned all year.",
    "town.txt": "The town by the glacier had a zephyr festival, with music, food, dancing and games for everyone.",
}


@pytest.fixture
async def corpus(pool: Pool, tmp_path: Path) -> None:
    await ingest(pool, tmp_path / "volumes", namespace="team-a", name="winds", files=CORPUS)


async def search(client: httpx.AsyncClient, **params: Any) -> httpx.Response:
    response = await client.get("/v1/search", params={"q": QUERY, "mode": "keyword", **params}, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response


def uris(response: httpx.Response) -> list[str]:
    return [h["uri"] for h in response.json()["items"]]


def by_overlap(uris: list[str]) -> list[str]:
    return sorted(uris, key=lambda uri: -overlap(QUERY, CORPUS[uri]))


def count(outcome: str) -> float:
    return REGISTRY.get_sample_value("headrace_rerank_total", {"outcome": outcome}) or 0.0


async def test_reranked_search_answers_the_rerankers_best(settings: Callable[..., ApiSettings], corpus: None) -> None:
    with rerank_server() as reranker:
        configured = settings(
            rerank_url=reranker.url, rerank_model="bge-reranker-v2-m3", rerank_api_key="s3cret", rerank_candidates=4
        )
        async with serve(configured) as client:
            plain = await search(client)
            before = count("applied")
            reranked = await search(client, rerank="true", limit=2)
            posted = await client.post(
                "/v1/search", json={"q": QUERY, "mode": "keyword", "rerank": True, "limit": 2}, headers=ADMIN
            )
    searched = uris(plain)
    assert "Headrace-Rerank" not in plain.headers and len(reranker.requests) == 2
    assert by_overlap(searched) != searched, "the stand-in must disagree with BM25, or the test proves nothing"
    assert reranked.headers["Headrace-Rerank"] == "applied" and posted.headers["Headrace-Rerank"] == "applied"
    assert uris(reranked) == uris(posted) == by_overlap(searched)[:2]
    assert reranked.json()["nextCursor"] is None
    items = reranked.json()["items"]
    assert [h["score"] for h in items] == [overlap(QUERY, CORPUS[h["uri"]]) for h in items]
    plain_hits = {h["uri"]: h for h in plain.json()["items"]}
    for hit in items:  # every field kept but the score, which is the reranker's
        assert {**hit, "score": None} == {**plain_hits[hit["uri"]], "score": None}
    body, headers = reranker.requests[0]
    assert body == {
        "model": "bge-reranker-v2-m3",
        "query": QUERY,
        "documents": [plain_hits[uri]["text"] for uri in searched],
        "top_n": 2,
    }
    assert headers["Authorization"] == "Bearer s3cret"
    assert count("applied") == before + 2


async def test_reranked_page_carries_each_hits_own_snippet(settings: Callable[..., ApiSettings], corpus: None) -> None:
    """Snippets are made for the page the reranker chose, not the search's first page: each hit's is
    from its own passage, with every query word it shows marked, and plain text when asked."""
    with rerank_server() as reranker:
        async with serve(settings(rerank_url=reranker.url, rerank_candidates=4)) as client:
            first = await search(client, limit=2)
            marked = await search(client, rerank="true", limit=2)
            plain = await search(client, rerank="true", limit=2, highlight="none")
    assert marked.headers["Headrace-Rerank"] == "applied" and uris(marked) == uris(plain)
    assert set(uris(marked)) - set(uris(first)), "the reranker must choose a candidate past the first page"
    asked = set(QUERY.split())
    for hit, unmarked in zip(marked.json()["items"], plain.json()["items"], strict=True):
        snippet = hit["snippet"]
        shown = html.unescape(snippet.replace("<mark>", "").replace("</mark>", ""))
        assert unmarked["snippet"] == shown
        assert all(fragment in hit["text"] for fragment in shown.split(FRAGMENT_DELIMITER)), hit["uri"]
        marks = re.findall(r"<mark>(.*?)</mark>", snippet)
        assert marks and {word.lower() for word in marks} <= asked, snippet
        assert len(marks) == sum(word.lower() in asked for word in re.findall(r"\w+", shown)), snippet


async def test_rerank_is_off_unless_asked_or_configured_on(settings: Callable[..., ApiSettings], corpus: None) -> None:
    with rerank_server() as reranker:
        async with serve(settings(rerank_url=reranker.url)) as client:
            assert "Headrace-Rerank" not in (await search(client)).headers
            assert reranker.requests == []
        async with serve(settings(rerank_url=reranker.url, rerank_default=True)) as client:
            default = await search(client, limit=1)
            off = await search(client, limit=1, rerank="false")
            assert len(reranker.requests) == 1
            # A cursor continues an unreranked list: the default does not apply to it.
            assert off.json()["nextCursor"] is not None
            continued = await search(client, limit=1, cursor=off.json()["nextCursor"])
            assert len(reranker.requests) == 1 and "Headrace-Rerank" not in continued.headers
    assert default.headers["Headrace-Rerank"] == "applied" and default.json()["nextCursor"] is None
    assert "Headrace-Rerank" not in off.headers


async def test_rerank_without_a_reranker_or_with_a_cursor_is_a_400(
    settings: Callable[..., ApiSettings], corpus: None
) -> None:
    async with serve(settings()) as client:
        asked = await client.get("/v1/search", params={"q": QUERY, "rerank": "true"}, headers=ADMIN)
        posted = await client.post("/v1/search", json={"q": QUERY, "rerank": True}, headers=ADMIN)
        assert (
            await client.get("/v1/search", params={"q": QUERY, "rerank": "false"}, headers=ADMIN)
        ).status_code == 200
    for response in (asked, posted):
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"].startswith("rerank:")
    with rerank_server() as reranker:
        async with serve(settings(rerank_url=reranker.url)) as client:
            first = await search(client, limit=1)
            paged = await client.get(
                "/v1/search",
                params={"q": QUERY, "mode": "keyword", "rerank": "true", "cursor": first.json()["nextCursor"]},
                headers=ADMIN,
            )
    assert paged.status_code == 400 and "cursor" in paged.json()["detail"]
    with pytest.raises(ValidationError, match="HEADRACE_RERANK_URL"):
        settings(rerank_default=True)


async def skipped(configured: ApiSettings, outcome: str) -> tuple[httpx.Response, httpx.Response]:
    """The unreranked answer and the answer asked with rerank, from one app; the outcome counted."""
    async with serve(configured) as client:
        plain = await search(client, limit=3)
        before = count(outcome)
        answer = await search(client, limit=3, rerank="true")
        assert count(outcome) == before + 1
    assert answer.json()["items"] == plain.json()["items"] and answer.json()["nextCursor"] is None
    return plain, answer


async def test_slow_reranker_is_given_up_on(settings: Callable[..., ApiSettings], corpus: None) -> None:
    with rerank_server() as reranker:
        reranker.hold.clear()  # answers wait until the server stops: past any timeout
        _, answer = await skipped(settings(rerank_url=reranker.url, rerank_timeout_ms=100), "timeout")
    assert answer.headers["Headrace-Rerank"] == 'skipped; reason="timeout after 100 ms"'


async def test_reranker_down_is_skipped_and_logged_once_without_passages(
    settings: Callable[..., ApiSettings], corpus: None, caplog: pytest.LogCaptureFixture
) -> None:
    configured = settings(rerank_url=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with caplog.at_level(logging.INFO, logger="headrace.api.rerank"):
        _, answer = await skipped(configured, "unreachable")
        async with serve(configured) as client:
            await search(client, rerank="true")
            await search(client, rerank="true")
    assert answer.headers["Headrace-Rerank"].startswith('skipped; reason="the reranker is unreachable')
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, "once per cause and process (two apps ran)"
    assert not any(word in caplog.text for word in ("festival", "orchards", "Zephyr glacier"))


def failing(status: int, payload: Any) -> Callable[[dict[str, Any]], Answer]:
    return lambda body: (status, payload)


@pytest.mark.parametrize("status", [500, 503, 404, 401])
async def test_reranker_error_status_is_skipped(
    settings: Callable[..., ApiSettings], corpus: None, status: int
) -> None:
    with rerank_server(failing(status, {"error": "model is loading"})) as reranker:
        _, answer = await skipped(settings(rerank_url=reranker.url), "status")
    assert answer.headers["Headrace-Rerank"] == f'skipped; reason="the reranker answered {status}"'


@pytest.mark.parametrize(
    "payload",
    [
        {"results": [{"index": 7, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}]},
        {"results": [{"index": 0, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}]},
        {"results": [{"index": 0, "relevance_score": 0.9}]},
        {"results": [{"index": 0, "relevance_score": "high"}, {"index": 1, "relevance_score": 0.1}]},
        {"results": [{"index": 0, "relevance_score": float("nan")}, {"index": 1, "relevance_score": 0.1}]},
        {"results": [{"index": True, "relevance_score": 0.9}, {"index": 1, "relevance_score": 0.1}]},
        {"data": []},
        [1, 2, 3],
        b"<html>not json</html>",
    ],
    ids=[
        "index-out-of-range",
        "duplicate",
        "too-few",
        "not-a-number",
        "nan",
        "bool-index",
        "no-results",
        "not-objects",
        "not-json",
    ],
)
async def test_malformed_reranker_answer_is_skipped(
    settings: Callable[..., ApiSettings], corpus: None, payload: Any
) -> None:
    with rerank_server(failing(200, payload)) as reranker:
        _, answer = await skipped(settings(rerank_url=reranker.url), "malformed")
    assert answer.headers["Headrace-Rerank"].startswith("skipped; reason=\"the reranker's answer is malformed")


async def test_tei_shape_is_spoken_and_read(settings: Callable[..., ApiSettings], corpus: None) -> None:
    with rerank_server(tei) as reranker:
        async with serve(settings(rerank_url=reranker.url + "/", rerank_api="tei")) as client:
            plain = await search(client)
            answer = await search(client, rerank="true", limit=3)
    assert answer.headers["Headrace-Rerank"] == "applied"
    assert uris(answer) == by_overlap(uris(plain))[:3]
    body, _ = reranker.requests[0]
    assert set(body) == {"query", "texts", "truncate"} and len(body["texts"]) == len(CORPUS)


async def test_cohere_server_answering_tei_shape_is_read(settings: Callable[..., ApiSettings], corpus: None) -> None:
    """A server asked in Cohere's shape may answer TEI's bare list (some proxies do): both are read."""

    def bare(body: dict[str, Any]) -> Answer:
        return tei({"query": body["query"], "texts": body["documents"]})

    with rerank_server(bare) as reranker:
        async with serve(settings(rerank_url=reranker.url)) as client:
            answer = await search(client, rerank="true", limit=2)
    assert answer.headers["Headrace-Rerank"] == "applied"
    assert uris(answer) == by_overlap(list(CORPUS))[:2]


async def test_python_client_asks_for_reranking(settings: Callable[..., ApiSettings], corpus: None) -> None:
    with rerank_server() as reranker:
        app = create_app(settings(rerank_url=reranker.url))
        async with (
            LifespanManager(app) as manager,
            AsyncClient("http://headrace", token="admin-token", transport=httpx.ASGITransport(manager.app)) as client,
        ):
            plain = await client.search(QUERY, mode="keyword")
            reranked = await client.search(QUERY, mode="keyword", rerank=True, limit=2)
    assert [h.uri for h in reranked.items] == by_overlap([h.uri for h in plain.items])[:2]
    assert reranked.next_cursor is None and len(reranker.requests) == 1
