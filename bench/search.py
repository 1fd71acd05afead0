"""Search benchmark: latency and QPS over an index of ≥ 1,000,000 chunks, through the store's SQL (the floor).

The index is built from the real corpus of the ingest benchmark (Debian's python3.11-doc HTML),
extracted and chunked by headrace's own extractor and chunker once, then replicated under distinct
URIs (`replica-NNN/<file>`) across four jobs in four namespaces until it holds the requested number of
chunks. Replicas are bulk-loaded with binary COPY into `headrace.chunks` (the generated `tsvector`
column is computed by Postgres as for any insert) with the GIN index dropped, and the index is built
afterwards: building a million chunks through the worker would take far longer and measure ingest,
not search.

Clients run a fixed query mix (single words, phrases, websearch operators, rare terms), each client
on its own connection, for a fixed time per concurrency level. The floor calls
`headrace.store.search.search` directly over asyncpg: the same SQL the API runs. The API is
`headrace api` in its own process (uvicorn, `auth.mode: none` on loopback, rate limit off), asked
`GET /v1/search?q=...` over real HTTP by `httpx` clients, one connection each.
"""

import argparse
import asyncio
import os
import random
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from bench import common
from bench.ingest import SMOKE_CORPUS, corpus
from headrace.model import Chunking, IngestionJobSpec
from headrace.store import jobs, migrate, search
from headrace.store.db import Pool, create_pool
from headrace.worker.chunker import chunk_sections
from headrace.worker.errors import DocumentError
from headrace.worker.extract import extract

QUERIES: dict[str, list[str]] = {
    "word": ["dictionary", "iterator", "decorator", "encoding", "subprocess", "exception"],
    "phrase": ['"context manager"', '"keyword argument"', '"regular expression"', '"file descriptor"'],
    "operators": ["socket -ssl", "asyncio or threading", '"event loop" -deprecated', "json dumps -pickle"],
    "rare": ["zipimport", "getpass", "mailcap", "xdrlib", "sunau"],
}
NAMESPACES = [f"team-{i}" for i in range(4)]
TARGET_P99_MS = 50.0
TARGET_CLIENTS = 8
TARGET_API_RATIO = 1.3


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chunks", type=int, default=1_000_000, help="at least this many chunks in the index")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring time per concurrency level")
    parser.add_argument("--no-api", action="store_true", help="measure the floor only")


def base_documents(smoke: bool) -> list[tuple[str, str, list[str]]]:
    """(uri, title, chunk texts) of every corpus file, through headrace's extractor and chunker."""
    data = corpus(smoke)
    chunking = Chunking()
    out = []
    for path in data.files:
        try:
            extracted = extract(path.read_bytes(), name=path.name)
        except DocumentError:
            continue
        texts = [c.text for c in chunk_sections(extracted.sections, chunking)]
        if texts:
            out.append((path.relative_to(data.root).as_posix(), extracted.title, texts))
    return out


async def build_index(pool: Pool, docs: list[tuple[str, str, list[str]]], want: int) -> dict[str, Any]:
    """Replicate the documents under distinct URIs until the index holds at least `want` chunks."""
    started = time.perf_counter()
    await migrate.migrate(pool)
    spec = IngestionJobSpec.model_validate({"source": {"volume": {"path": "."}}})
    job_uids = []
    for ns in NAMESPACES:
        record = await jobs.register_job(
            pool, uid=uuid.uuid4(), namespace=ns, name="python-docs", generation=1, spec=spec
        )
        job_uids.append(record.uid)
    per_replica = sum(len(texts) for _, _, texts in docs)
    replicas = -(-want // per_replica)
    english = await pool.fetchval("SELECT 'english'::regconfig::oid")
    await pool.execute("DROP INDEX headrace.chunks_tsv")

    async def load(replica: int) -> None:
        uid = job_uids[replica % len(job_uids)]
        async with pool.acquire() as conn, conn.transaction():
            ids = await conn.fetch(
                """
                INSERT INTO headrace.documents (job_uid, uri, title, state, content_hash, format, chunk_count, run,
                                                outcome)
                SELECT $1, u, t, 'ingested', md5(u), 'html', n, 1, 'added'
                FROM unnest($2::text[], $3::text[], $4::int[]) AS d(u, t, n)
                RETURNING id, uri
                """,
                uid,
                [f"replica-{replica:03d}/{uri}" for uri, _, _ in docs],
                [title for _, title, _ in docs],
                [len(texts) for _, _, texts in docs],
            )
            by_uri = {row["uri"]: row["id"] for row in ids}
            records = [
                (by_uri[f"replica-{replica:03d}/{uri}"], uid, ordinal, None, text, english)
                for uri, _, texts in docs
                for ordinal, text in enumerate(texts)
            ]
            await conn.copy_records_to_table(
                "chunks",
                schema_name="headrace",
                records=records,
                columns=["document_id", "job_uid", "ordinal", "page", "content", "config"],
            )

    loaded = 0
    queue = list(range(replicas))

    async def loader() -> None:
        nonlocal loaded
        while queue:
            await load(queue.pop(0))
            loaded += 1
            if loaded % 10 == 0:
                print(f"loaded {loaded}/{replicas} replicas", flush=True)

    await asyncio.gather(*(loader() for _ in range(2)))  # two cores: two loaders
    loaded_s = time.perf_counter() - started
    async with pool.acquire() as conn:
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute("CREATE INDEX chunks_tsv ON headrace.chunks USING gin (tsv)")
        await conn.execute("VACUUM ANALYZE headrace.chunks")
        await conn.execute("VACUUM ANALYZE headrace.documents")
    chunks = await pool.fetchval("SELECT count(*) FROM headrace.chunks")
    size = await pool.fetchval("SELECT pg_size_pretty(pg_total_relation_size('headrace.chunks'))")
    index_size = await pool.fetchval("SELECT pg_size_pretty(pg_relation_size('headrace.chunks_tsv'))")
    return {
        "chunks": chunks,
        "documents": len(docs) * replicas,
        "replicas": replicas,
        "load_seconds": loaded_s,
        "total_seconds": time.perf_counter() - started,
        "table_size": size,
        "gin_size": index_size,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def api_server(dsn: str, pool_size: int) -> AsyncIterator[str]:
    """`headrace api` on a free loopback port; yields its base URL once /readyz answers."""
    import httpx

    port = _free_port()
    env = {
        **os.environ,
        "HEADRACE_DATABASE_URL": dsn,
        "HEADRACE_AUTH_MODE": "none",
        "HEADRACE_RATE_LIMIT_PER_SECOND": "0",  # one principal drives the whole load: don't throttle it
        "HEADRACE_DATABASE_POOL_SIZE": str(pool_size),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "headrace",
        "--log-level",
        "WARNING",
        "api",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(300):
                if process.returncode is not None:
                    raise RuntimeError(f"headrace api exited with {process.returncode}")
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("headrace api did not become ready in 30 s")
        yield base
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


def mix() -> list[tuple[str, str]]:
    return [(kind, q) for kind, qs in QUERIES.items() for q in qs]


async def drive(clients: int, seconds: float, call: Callable[[int, str], Awaitable[int]]) -> dict[str, Any]:
    """`clients` loops over the query mix (each from its own shuffled order) for `seconds`; latencies in ms."""
    latencies: dict[str, list[float]] = {kind: [] for kind in QUERIES}
    stop_at = time.perf_counter() + seconds
    errors = 0

    async def client(i: int) -> None:
        nonlocal errors
        order = mix()
        random.Random(i).shuffle(order)
        k = 0
        while time.perf_counter() < stop_at:
            kind, q = order[k % len(order)]
            k += 1
            began = time.perf_counter()
            try:
                await call(i, q)
            except Exception:  # a failed request is counted, never timed as a success
                errors += 1
                continue
            latencies[kind].append((time.perf_counter() - began) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    every = [x for xs in latencies.values() for x in xs]
    return {
        "requests": len(every),
        "errors": errors,
        "qps": len(every) / elapsed,
        **{f"p{p}": common.percentile(every, p) for p in (50, 95, 99)},
        "by_kind": {k: {f"p{p}": common.percentile(v, p) for p in (50, 99)} for k, v in latencies.items()},
    }


async def measure_api(
    dsn: str, client_counts: list[int], seconds: float, repeat: int, smoke: bool
) -> dict[int, list[dict[str, Any]]]:
    """The same mix through `GET /v1/search` of a running `headrace api`."""
    import httpx

    results: dict[int, list[dict[str, Any]]] = {c: [] for c in client_counts}
    async with api_server(dsn, max(client_counts) + 2) as base:
        clients = [httpx.AsyncClient(base_url=base, timeout=60) for _ in range(max(client_counts))]
        try:

            async def api_call(i: int, q: str) -> int:
                response = await clients[i].get("/v1/search", params={"q": q})
                response.raise_for_status()
                return len(response.json()["items"])

            await drive(2, 1.0 if smoke else 5.0, api_call)  # warm up
            for r in range(repeat):
                for c in client_counts:
                    result = await drive(c, seconds, api_call)
                    results[c].append(result)
                    print(
                        f"api clients={c} repeat={r} p50={result['p50']:.1f}ms p99={result['p99']:.1f}ms "
                        f"qps={result['qps']:.0f} errors={result['errors']}",
                        flush=True,
                    )
        finally:
            for client in clients:
                await client.aclose()
    return results


async def explain(pool: Pool, query: str) -> str:
    """EXPLAIN ANALYZE of the store's search SQL for one query, as the floor runs it."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + search._SEARCH_SQL,
            query,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            11,
        )
    return "\n".join(r[0] for r in rows)


async def main() -> None:
    opts = common.parse_options("search", __doc__.splitlines()[0], configure=configure)
    want = 10_000 if opts.smoke else opts.extra.chunks
    client_counts = [1, 4] if opts.smoke else opts.extra.clients
    seconds = 1.5 if opts.smoke else opts.extra.seconds
    report = common.Report("search", "Search: latency and QPS over a million chunks", opts, common.machine())
    docs = await asyncio.to_thread(base_documents, opts.smoke)
    floor: dict[int, list[dict[str, Any]]] = {c: [] for c in client_counts}
    api: dict[int, list[dict[str, Any]]] | None = None
    with common.embedded_postgres() as admin:
        report.machine["versions"]["postgres"] = await common.postgres_version(admin)
        async with common.fresh_database(admin, "search_bench") as dsn:
            pool = await create_pool(dsn, min_size=2, max_size=max(client_counts) + 2)
            try:
                built = await build_index(pool, docs, want)
                print(f"index: {built}", flush=True)
                matches = {
                    q: await pool.fetchval(
                        "SELECT count(*) FROM headrace.chunks WHERE tsv @@ websearch_to_tsquery('english', $1)", q
                    )
                    for _, q in mix()
                }

                async def floor_call(_: int, q: str) -> int:
                    return len((await search.search(pool, q)).hits)

                await drive(2, 1.0 if opts.smoke else 5.0, floor_call)  # warm the caches
                for r in range(opts.repeat):
                    for c in client_counts:
                        result = await drive(c, seconds, floor_call)
                        floor[c].append(result)
                        print(
                            f"floor clients={c} repeat={r} p50={result['p50']:.1f}ms p99={result['p99']:.1f}ms "
                            f"qps={result['qps']:.0f}",
                            flush=True,
                        )
                if not opts.extra.no_api:
                    api = await measure_api(dsn, client_counts, seconds, opts.repeat, opts.smoke)
                slowest = max(mix(), key=lambda kq: matches[kq[1]])[1]
                plan = await explain(pool, slowest)
                rare_plan = await explain(pool, QUERIES["rare"][0])
            finally:
                await pool.close()

    summary = {
        c: {k: common.Summary.of([x[k] for x in floor[c]]) for k in ("p50", "p95", "p99", "qps")} for c in client_counts
    }
    report.results = {
        "index": built,
        "matches": matches,
        "floor": {str(c): floor[c] for c in client_counts},
        "floor_summary": {str(c): summary[c] for c in client_counts},
        "api": None,
        "explain": {slowest: plan, QUERIES["rare"][0]: rare_plan},
    }
    lines = [
        f"Index: {built['chunks']:,} chunks in {built['documents']:,} documents ({built['replicas']} replicas of "
        f"{len(docs)} extracted files under distinct URIs, four jobs in four namespaces); chunks table "
        f"{built['table_size']}, GIN index {built['gin_size']}; built in {built['total_seconds']:.0f} s "
        f"(COPY {built['load_seconds']:.0f} s, then the GIN index and ANALYZE).",
        "",
        f"Query mix ({len(mix())} queries, every client cycles through all of them): "
        + "; ".join(f"{k}: {', '.join(f'`{q}`' for q in qs)}" for k, qs in QUERIES.items())
        + ". "
        f"{seconds:.0f} s per level, first page of 10 hits with snippets, no filters (the scope is every job). "
        f"Median (min-max) of {opts.repeat} runs.",
        "",
        "**Floor: `headrace.store.search.search` over asyncpg** (latency in ms)",
        "",
    ]
    lines += common.table(
        ["clients", "p50", "p95", "p99", "QPS", "failed (statement timeout)"],
        [
            [
                c,
                summary[c]["p50"].fmt(1),
                summary[c]["p95"].fmt(1),
                summary[c]["p99"].fmt(1),
                summary[c]["qps"].fmt(),
                sum(x["errors"] for x in floor[c]),
            ]
            for c in client_counts
        ],
    )
    lines += [
        "Latencies count answered queries only; a query cut off by the 5 s statement timeout counts as failed.",
        "",
    ]
    last = floor[client_counts[0]][-1]["by_kind"]
    lines += common.table(
        ["query kind (1 client)", "p50 ms", "p99 ms", "matching chunks"],
        [
            [k, f"{v['p50']:.1f}", f"{v['p99']:.1f}", ", ".join(f"{matches[q]:,}" for q in QUERIES[k])]
            for k, v in last.items()
        ],
    )
    if api is None:
        lines += ["**Through the HTTP API:** not measured in this run (`--no-api`).", ""]
    else:
        api_summary = {
            c: {k: common.Summary.of([x[k] for x in api[c]]) for k in ("p50", "p95", "p99", "qps")}
            for c in client_counts
        }
        errors = {c: sum(x["errors"] for x in api[c]) for c in client_counts}
        report.results["api"] = {str(c): api[c] for c in client_counts}
        lines += [
            "**Through the HTTP API: `GET /v1/search` of `headrace api`** (latency in ms, as the client sees it)",
            "",
        ]
        lines += common.table(
            ["clients", "p50", "p95", "p99", "QPS", "failed requests", "API p50 ÷ floor p50"],
            [
                [
                    c,
                    api_summary[c]["p50"].fmt(1),
                    api_summary[c]["p95"].fmt(1),
                    api_summary[c]["p99"].fmt(1),
                    api_summary[c]["qps"].fmt(),
                    errors[c],
                    f"{api_summary[c]['p50'].median / summary[c]['p50'].median:.2f}×",
                ]
                for c in client_counts
            ],
        )
        worst = max(api_summary[c]["p50"].median / summary[c]["p50"].median for c in client_counts)
        report.results["target_api"] = {"worst_p50_ratio": worst, "met": worst <= TARGET_API_RATIO}
        lines += [
            f"**Target** API p50 ≤ {TARGET_API_RATIO}× the floor's p50 (worst level): {worst:.2f}× — "
            f"{common.verdict(worst <= TARGET_API_RATIO)}.",
            "",
        ]
    if TARGET_CLIENTS in summary:
        p99 = summary[TARGET_CLIENTS]["p99"].median
        report.results["target"] = {"p99_ms_at_8": p99, "met": p99 <= TARGET_P99_MS}
        lines += [
            f"**Target** p99 ≤ {TARGET_P99_MS:.0f} ms at {TARGET_CLIENTS} clients (floor): {p99:.1f} ms — "
            f"{common.verdict(p99 <= TARGET_P99_MS)}.",
            "",
        ]
    lines += [
        f"<details><summary>EXPLAIN ANALYZE of the most-matched query in the mix, <code>{slowest}</code></summary>",
        "",
        "```",
        plan,
        "```",
        "</details>",
        "",
        f"<details><summary>EXPLAIN ANALYZE of a rare term, <code>{QUERIES['rare'][0]}</code></summary>",
        "",
        "```",
        rare_plan,
        "```",
        "</details>",
        "",
        f"![search](benchmarks/{report.plot_path().name})",
        "",
    ]
    report.lines += lines
    _plot(report, summary, last)
    report.write()


def _plot(report: common.Report, summary: dict[int, dict[str, common.Summary]], by_kind: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    xs = sorted(summary)
    for key in ("p50", "p95", "p99"):
        left.plot(xs, [summary[c][key].median for c in xs], marker="o", label=f"floor {key}")
    left.axhline(TARGET_P99_MS, color="red", linestyle="--", linewidth=1, label="p99 target")
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xticks(xs)
    left.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    left.set_xlabel("concurrent clients")
    left.set_ylabel("latency, ms")
    left.set_title("Search latency (floor)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    kinds = list(by_kind)
    right.bar(kinds, [by_kind[k]["p50"] for k in kinds], label="p50")
    right.bar(
        kinds,
        [by_kind[k]["p99"] - by_kind[k]["p50"] for k in kinds],
        bottom=[by_kind[k]["p50"] for k in kinds],
        alpha=0.5,
        label="p99",
    )
    right.set_yscale("log")
    right.set_ylabel("latency, ms (1 client)")
    right.set_title("By query kind")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(report.plot_path(), dpi=110)
    plt.close(fig)


_ = SMOKE_CORPUS  # the smoke corpus is shared with the ingest benchmark

if __name__ == "__main__":
    common.run(main)
