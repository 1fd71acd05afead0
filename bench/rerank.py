"""What the rerank hop adds to a search: the same searches through the API with and without
`rerank=true`, interleaved in one run, against the tests' stand-in reranker (tests/api/rerankserver.py,
a real HTTP server on loopback that scores by word overlap in microseconds).

It measures the hop (the K candidates fetched instead of `limit`, their passages serialised, the HTTP
round trip, the answer checked and applied), not a model: a real cross-encoder reading K passages costs
its own server far more, and no model weights can be run on this machine.
"""

import argparse
import time
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from bench import common
from headrace.api.app import create_app
from headrace.api.settings import ApiSettings
from headrace.store import migrate
from headrace.store.db import close_pool, create_pool
from tests.api.conftest import ingest
from tests.api.rerankserver import rerank_server

CORPUS = Path(__file__).resolve().parent.parent / "headrace" / "samples" / "demo" / "corpus"
QUERIES = [
    "what is the hacker ethic",
    "how should a wife treat her husband",
    "politics",
    "the meaning of a kludge",
    "why do hackers dislike suits",
    "definition of a bug in software",
    "what does the devil say about lawyers",
    "wizard",
]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--searches", type=int, default=200, help="searches of each kind (default 200)")
    parser.add_argument("--candidates", type=int, default=30, help="K, the hits reranked (default 30)")


async def measure(client: httpx.AsyncClient, searches: int) -> dict[str, list[float]]:
    """Milliseconds per search, without and with reranking, alternating so both see the same load."""
    took: dict[str, list[float]] = {"plain": [], "reranked": []}
    for i in range(searches * 2):
        kind = "reranked" if i % 2 else "plain"
        params: dict[str, Any] = {"q": QUERIES[(i // 2) % len(QUERIES)], "mode": "keyword", "limit": 10}
        if kind == "reranked":
            params["rerank"] = "true"
        began = time.perf_counter()
        response = await client.get("/v1/search", params=params)
        took[kind].append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, response.text
        if kind == "reranked":
            assert response.headers["Headrace-Rerank"] == "applied", response.headers
    return took


async def main() -> None:
    options = common.parse_options(
        "rerank", "The added latency of reranking a search's first hits", configure=configure
    )
    searches = 10 if options.smoke else options.extra.searches
    files = sorted(CORPUS.rglob("*.*"))[: 5 if options.smoke else None]
    report = common.Report("rerank", "Reranking (issue 23 item 5): what the hop costs", options, common.machine())
    with common.embedded_postgres() as admin, rerank_server() as reranker:
        async with common.fresh_database(admin, "bench_rerank") as dsn:
            pool = await create_pool(dsn, max_size=4)
            try:
                await migrate.migrate(pool)
                root = Path(options.out) / "volumes"
                texts = {str(f.relative_to(CORPUS)): f.read_text() for f in files}
                await ingest(pool, root, namespace="default", name="demo", files=texts, embedding={"provider": "none"})
            finally:
                await close_pool(pool)
            settings = ApiSettings(
                database_url=dsn,
                listen_host="127.0.0.1",
                auth_mode="none",
                rate_limit_per_second=0,
                rerank_url=reranker.url,
                rerank_candidates=options.extra.candidates,
            )
            app = create_app(settings)
            async with (
                LifespanManager(app) as manager,
                httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://headrace") as client,
            ):
                await measure(client, 5)  # warm the pool, the plans and the reranker's connection
                took = await measure(client, searches)
    rows = []
    for kind in ("plain", "reranked"):
        report.results[kind] = {p: common.percentile(took[kind], p) for p in (50, 90, 99)}
        rows.append([kind, *(f"{report.results[kind][p]:.2f}" for p in (50, 90, 99))])
    added = report.results["reranked"][50] - report.results["plain"][50]
    report.results["added_p50_ms"] = added
    report.results["searches"] = searches
    report.results["documents"] = len(files)
    report.lines += [
        f"{searches} keyword searches of each kind (limit 10), alternating, through the API in process, over "
        f"the demo corpus ({len(files)} documents); reranked: K = {options.extra.candidates} passages to the "
        "stand-in reranker on loopback.",
        "",
        *common.table(["search", "p50 ms", "p90 ms", "p99 ms"], rows),
        f"The hop adds **{added:.2f} ms** at the median.",
    ]
    report.write()


if __name__ == "__main__":
    common.run(main)
