"""Retrieval for RAG: search modes, whole passages with their context, and the refusals."""

import uuid
from pathlib import Path

import httpx

from headrace.model import IngestionJobSpec
from headrace.model.spec import BUILTIN_EMBEDDING_DIMENSIONS
from headrace.store import jobs, vectors
from headrace.store.db import Pool
from tests.api.conftest import bearer, ingest

ADMIN = bearer("admin-token")
LIBRARY = {
    "car.txt": "Fixing your car engine: a mechanic explains spark plugs, oil changes and brakes.",
    "bread.txt": "Baking sourdough bread needs flour, water, salt and a starter.",
    "glacier.txt": "The zephyr crossed the glacier at dawn. Team A measured the ice and wrote a report.",
}


async def search(client: httpx.AsyncClient, **body: object) -> httpx.Response:
    return await client.post("/v1/search", json=body, headers=ADMIN)


async def test_hybrid_is_the_default_and_finds_a_paraphrase_keyword_misses(
    client: httpx.AsyncClient, pool: Pool, tmp_path: Path
) -> None:
    await ingest(pool, tmp_path, namespace="team-a", name="library", files=LIBRARY)
    keyword = (await search(client, q="automobile repair", mode="keyword")).json()
    assert keyword["mode"] == "keyword" and keyword["items"] == []
    for mode in ("semantic", None):
        answer = (await search(client, q="automobile repair", **({"mode": mode} if mode else {}))).json()
        assert answer["mode"] == (mode or "hybrid")
        assert answer["items"][0]["uri"] == "car.txt"
    hybrid = (await search(client, q="glacier")).json()["items"]
    assert hybrid[0]["uri"] == "glacier.txt"  # matched by both rankings: fused first
    assert "<mark>glacier</mark>" in hybrid[0]["snippet"]


async def test_every_mode_pages_and_filters(client: httpx.AsyncClient, pool: Pool, tmp_path: Path) -> None:
    files = {f"part-{i:02}.txt": f"Ferry crossing number {i} over the sound." for i in range(9)}
    await ingest(pool, tmp_path, namespace="team-a", name="ferries", files=files)
    for mode in ("keyword", "semantic", "hybrid"):
        seen: list[str] = []
        cursor = None
        while True:
            page = (
                await search(client, q="ferry crossing", mode=mode, limit=4, **({"cursor": cursor} if cursor else {}))
            ).json()
            seen += [h["uri"] for h in page["items"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(files), mode
        narrowed = (await search(client, q="ferry crossing", mode=mode, uriPrefix="part-01")).json()["items"]
        assert [h["uri"] for h in narrowed] == ["part-01.txt"], mode


async def test_hits_are_passages_with_their_context(client: httpx.AsyncClient, pool: Pool, tmp_path: Path) -> None:
    paragraphs = [f"Paragraph {i} tells of the lighthouse keeper's day number {i}. " * 6 for i in range(8)]
    spec = {"long.txt": "\n\n".join(paragraphs)}
    job = await ingest(
        pool, tmp_path, namespace="team-a", name="keeper", files=spec, chunking={"targetSize": 400, "overlap": 0}
    )
    hit = (await search(client, q='"day number 4"', mode="keyword")).json()["items"][0]
    assert "day number 4" in hit["text"] and hit["title"] and hit["metadata"]["contentType"] == "text/plain"
    base = f"/v1/namespaces/team-a/ingestionjobs/{job.name}"
    around = (await client.get(f"{base}/chunks/{hit['chunkId']}", params={"context": 1}, headers=ADMIN)).json()
    assert [p["chunk"] for p in around["passages"]] == [hit["chunk"] - 1, hit["chunk"], hit["chunk"] + 1]
    assert around["uri"] == "long.txt" and around["chunkId"] == hit["chunkId"]
    texts, cursor = [], None
    while True:
        params = {"uri": "long.txt", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"{base}/passages", params=params, headers=ADMIN)).json()
        texts += [p["text"] for p in page["passages"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert len(texts) == page["chunks"] > 2
    assert all(f"day number {i}" in " ".join(texts) for i in range(8))
    # Another namespace's reader cannot reach the chunk, and a chunk of another job is not found here.
    assert (await client.get(f"{base}/chunks/{hit['chunkId']}", headers=bearer("bob-token"))).status_code == 403
    other = await ingest(pool, tmp_path, namespace="team-a", name="other", files={"x.txt": "other words"})
    response = await client.get(
        f"/v1/namespaces/team-a/ingestionjobs/{other.name}/chunks/{hit['chunkId']}", headers=ADMIN
    )
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"


MANUAL = {
    "manual.md": "# Manual\n\nWhat this manual covers.\n\n## Installation\n\n### Configuration\n\n"
    "Set the options in the file.\n\n#### Proxies\n\nThe lighthouse proxy forwards every request.\n\n"
    "## Usage\n\nRun the lighthouse daily.\n",
    "manual.html": "<html><body><h1>Handbook</h1><p>Opening words.</p><h2>Storms</h2>"
    "<p>Close the lighthouse shutters in a gale.</p></body></html>",
    "plain.txt": "The lighthouse has no headings here.",
}


async def test_every_hit_and_passage_says_under_which_headings_it_stands(
    client: httpx.AsyncClient, pool: Pool, tmp_path: Path
) -> None:
    job = await ingest(pool, tmp_path, namespace="team-a", name="manual", files=MANUAL)
    hits = (await search(client, q="lighthouse", mode="keyword")).json()["items"]
    where = {(h["uri"], h["headingPath"]) for h in hits}
    arrow = " \u203a "
    assert where == {
        ("manual.md", arrow.join(["Manual", "Installation", "Configuration", "Proxies"])),
        ("manual.md", arrow.join(["Manual", "Usage"])),
        ("manual.html", arrow.join(["Handbook", "Storms"])),
        ("plain.txt", None),
    }
    proxies = next(h for h in hits if (h["headingPath"] or "").endswith("Proxies"))
    assert proxies["text"] == "Proxies\n\nThe lighthouse proxy forwards every request."  # nothing of Usage in it

    base = f"/v1/namespaces/team-a/ingestionjobs/{job.name}"
    page = (await client.get(f"{base}/passages", params={"uri": "manual.md"}, headers=ADMIN)).json()
    assert [p["headingPath"] for p in page["passages"]] == [
        "Manual",
        arrow.join(["Manual", "Installation", "Configuration"]),
        arrow.join(["Manual", "Installation", "Configuration", "Proxies"]),
        arrow.join(["Manual", "Usage"]),
    ]
    around = (await client.get(f"{base}/chunks/{proxies['chunkId']}", params={"context": 1}, headers=ADMIN)).json()
    assert [p["headingPath"] for p in around["passages"]] == [p["headingPath"] for p in page["passages"]][1:]


async def test_refusals_are_problems(client: httpx.AsyncClient, pool: Pool, tmp_path: Path) -> None:
    await ingest(pool, tmp_path, namespace="team-a", name="library", files=LIBRARY)
    await ingest(pool, tmp_path, namespace="team-b", name="plain", files=LIBRARY, embedding={"provider": "none"})
    cases = [
        ({"q": "é" * 2100}, 400, "bytes"),  # 2,100 characters, 4,200 bytes
        ({"q": "x" * 4097}, 422, "4096"),
        ({"q": "   "}, 400, "empty"),
        ({"q": "the of and", "mode": "keyword"}, 400, "stop words"),
        ({"q": "car", "limit": 101}, 400, "limit"),
        ({"q": "car", "mode": "semantic", "namespaces": ["team-b"]}, 400, "none of the searched jobs"),
        ({"q": "car", "mode": "fuzzy"}, 422, "mode"),
        ({"q": "car", "vector": [0.1, 0.2]}, 400, "dimensions"),
        ({"q": "car", "mode": "semantic", "vector": [0.0] * BUILTIN_EMBEDDING_DIMENSIONS}, 400, "all zeros"),
    ]
    for body, status, words in cases:
        response = await search(client, **body)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert words in response.json()["detail"], response.json()
    # Keyword search of a job without embeddings still works, and is what the default picks.
    plain = (await search(client, q="sourdough", namespaces=["team-b"])).json()
    assert plain["mode"] == "keyword" and plain["items"][0]["uri"] == "bread.txt"


async def test_jobs_with_different_models_are_not_mixed(client: httpx.AsyncClient, pool: Pool, tmp_path: Path) -> None:
    await ingest(pool, tmp_path, namespace="team-a", name="library", files=LIBRARY)
    endpoint = {"provider": "endpoint", "endpoint": {"url": "http://127.0.0.1:9/v1", "model": "tiny", "dimensions": 3}}
    spec = IngestionJobSpec.model_validate({"source": {"volume": {"path": "."}}, "embedding": endpoint})
    await jobs.register_job(pool, uid=uuid.uuid4(), namespace="team-b", name="remote", generation=1, spec=spec)
    await vectors.ensure_space(pool, "tiny", 3)
    response = await search(client, q="car")
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "team-a/library" in detail and "team-b/remote" in detail and "tiny (3 dimensions)" in detail
    only_remote = await search(client, q="car", namespaces=["team-b"], mode="semantic")
    assert only_remote.status_code == 400 and "pass `vector`" in only_remote.json()["detail"]
    given = await search(client, q="car", namespaces=["team-b"], mode="semantic", vector=[0.1, 0.2, 0.3])
    assert given.status_code == 200 and given.json()["items"] == []
    assert (await search(client, q="car", mode="keyword")).status_code == 200


async def test_readyz_reports_vectors(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.json()["checks"] == {"postgres": "ok", "vectors": "ok"}
