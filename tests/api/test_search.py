"""Search: syntax, ranking, snippets, filters, keyset pages under concurrent ingest, hostile input."""

import base64
import json
from pathlib import Path

import httpx
import pytest

from headrace.store.db import Pool
from headrace.store.jobs import JobRecord
from tests.api.conftest import bearer, ingest

ADMIN = bearer("admin-token")
JSON = {"content-type": "application/json"}


async def test_get_search_returns_ranked_hits_with_snippets(
    client: httpx.AsyncClient, seeded: dict[str, JobRecord]
) -> None:
    response = await client.get("/v1/search", params={"q": '"mill wheel" or glacier', "mode": "keyword"}, headers=ADMIN)
    assert response.status_code == 200
    hits = response.json()["items"]
    assert {h["uri"] for h in hits} == {"reports/glacier.txt", "reports/river.md"}
    assert all(h["namespace"] == "team-a" and h["job"] == "docs" for h in hits)
    assert all(h["chunk"] == 0 and h["score"] > 0 for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert any("<mark>glacier</mark>" in h["snippet"] for h in hits)
    excluded = await client.get("/v1/search", params={"q": "zephyr -glacier", "mode": "keyword"}, headers=ADMIN)
    assert "reports/glacier.txt" not in {h["uri"] for h in excluded.json()["items"]}


async def test_post_search_filters(client: httpx.AsyncClient, seeded: dict[str, JobRecord]) -> None:
    async def uris(**body: object) -> set[str]:
        response = await client.post("/v1/search", json={"q": "zephyr", "mode": "keyword", **body}, headers=ADMIN)
        assert response.status_code == 200, response.text
        return {h["uri"] for h in response.json()["items"]}

    assert await uris() == {"reports/glacier.txt", "reports/river.md", "secret.txt"}
    assert await uris(namespaces=["team-b"]) == {"secret.txt"}
    assert await uris(uriPrefix="reports/r") == {"reports/river.md"}
    assert await uris(job="nope") == set()
    assert await uris(metadata={"lang": "en"}) == set()
    assert await uris(metadata={}) == {"reports/glacier.txt", "reports/river.md", "secret.txt"}


async def test_bad_search_requests(client: httpx.AsyncClient, seeded: dict[str, JobRecord]) -> None:
    cases = [
        ("get", {"params": {"q": ""}}, 422),
        ("get", {"params": {"q": "a\x00b"}}, 422),
        ("get", {"params": {"q": "zephyr", "limit": 101}}, 400),
        ("get", {"params": {"q": "zephyr", "limit": 0}}, 422),
        ("post", {"json": {"q": "zephyr", "unknown": 1}}, 422),
        ("post", {"content": b'{"q": "zephyr", "metadata": {"n": Infinity}}', "headers": JSON}, 422),
        ("post", {"content": b'{"q": "zephyr", "metadata": {"k\\u0000": 1}}', "headers": JSON}, 422),
        ("post", {"content": b"{not json", "headers": JSON}, 422),
    ]
    for method, kwargs, status in cases:
        headers = {**ADMIN, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        response = await client.request(method, "/v1/search", headers=headers, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, (kwargs, response.text)
        assert response.headers["content-type"] == "application/problem+json"


async def test_injection_in_q_is_just_words(
    client: httpx.AsyncClient, pool: Pool, seeded: dict[str, JobRecord]
) -> None:
    for q in ["'; DROP TABLE headrace.chunks; --", "zephyr') OR 1=1 --", "$1::text", "\\'", "<script>"]:
        response = await client.get("/v1/search", params={"q": q}, headers=bearer("alice-token"))
        assert response.status_code == 200, q
        assert all(h["namespace"] == "team-a" for h in response.json()["items"])
    assert await pool.fetchval("SELECT count(*) FROM headrace.chunks") > 0


@pytest.mark.parametrize("mode", ["keyword", "semantic"])
async def test_pages_are_stable_while_documents_are_ingested(
    client: httpx.AsyncClient, pool: Pool, tmp_path: Path, mode: str
) -> None:
    # 12 documents matching with different strengths, so scores differ and tie.
    files = {f"doc{i:02}.txt": ("ferry " * (1 + i % 4)) + f"crossing number {i}." for i in range(12)}
    await ingest(pool, tmp_path, namespace="team-a", name="ferries", files=files)
    everything = (
        await client.get("/v1/search", params={"q": "ferry", "limit": 100, "mode": mode}, headers=ADMIN)
    ).json()["items"]
    assert len(everything) == 12
    seen: list[tuple[str, int]] = []
    cursor = None
    page_number = 0
    while True:
        params: dict[str, str | int] = {
            "q": "ferry",
            "mode": mode,
            "limit": 5,
            **({"cursor": cursor} if cursor else {}),
        }
        page = (await client.get("/v1/search", params=params, headers=ADMIN)).json()
        seen += [(h["uri"], h["chunk"]) for h in page["items"]]
        page_number += 1
        if page_number == 1:  # between pages, another job adds strong and weak matches
            more = {f"new{i}.txt": ("ferry " * (i * 3 + 1)) + "late arrival" for i in range(4)}
            await ingest(pool, tmp_path, namespace="team-a", name="late-ferries", files=more)
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a hit was returned twice"
    assert {(h["uri"], h["chunk"]) for h in everything} <= set(seen), "a hit was skipped"


async def test_retained_data_is_not_served(client: httpx.AsyncClient, seeded: dict[str, JobRecord], pool: Pool) -> None:
    """An IngestionJob deleted with `retention: Retain`: its data stays in Postgres, but no route serves it."""
    from headrace.store import jobs

    await jobs.retain_job_data(pool, seeded["team-b"].uid)
    assert await pool.fetchval("SELECT count(*) FROM headrace.documents WHERE job_uid = $1", seeded["team-b"].uid)
    found = await client.get("/v1/search", params={"q": "zephyr"}, headers=ADMIN)
    assert {h["namespace"] for h in found.json()["items"]} == {"team-a"}
    only_b = await client.get("/v1/search", params={"q": "zephyr", "namespace": "team-b"}, headers=ADMIN)
    assert only_b.json()["items"] == []
    assert (await client.get("/v1/namespaces/team-b/ingestionjobs/docs", headers=ADMIN)).status_code == 404
    listed = await client.get("/v1/namespaces/team-b/ingestionjobs", headers=ADMIN)
    assert listed.json()["items"] == []
    documents = await client.get("/v1/namespaces/team-b/ingestionjobs/docs/documents", headers=ADMIN)
    assert documents.status_code == 404


async def test_a_cursor_with_forged_ranking_statistics_is_a_400(
    client: httpx.AsyncClient, seeded: dict[str, JobRecord]
) -> None:
    # A keyword cursor carries the statistics its first page ranked by; forged ones are the caller's error.
    statistics = [{"n": "x"}, {"df": {"english zephyr": -5}}, {"avglen": 0}, [3]]
    for forged in statistics:
        cursor = base64.urlsafe_b64encode(json.dumps([1, 2, forged]).encode()).decode().rstrip("=")
        response = await client.get(
            "/v1/search", params={"q": "zephyr", "mode": "keyword", "cursor": cursor}, headers=ADMIN
        )
        assert response.status_code == 400, (forged, response.text)
        assert response.json()["detail"] == "cursor is not one this server returned"
