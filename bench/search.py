"""Search benchmark: latency and QPS of keyword, semantic and hybrid search over ≥ 1,000,000 chunks, floor and API.

The index is built from the real corpus of the ingest benchmark (Debian's python3.11-doc HTML),
extracted and chunked by headrace's own extractor and chunker once, then replicated under distinct
URIs (`replica-NNN/<file>`) across four jobs in four namespaces until it holds the requested number of
chunks. Replicas are bulk-loaded with binary COPY into `headrace.chunks` (the generated `tsvector`
column is computed by Postgres as for any insert) with the GIN index dropped, and the index is built
afterwards: building a million chunks through the worker would take far longer and measure ingest,
not search.

Every chunk also gets a vector: the base documents' chunks are embedded once with the built-in
model, and each replica stores its chunk's vector plus a little noise (so the HNSW index holds
distinct points, as a real index does), then the space's HNSW index is built.

Clients run a fixed query mix (single words, phrases, websearch operators, rare terms and
natural-language questions), each client on its own connection, for a fixed time per concurrency
level and search mode. Keyword ranking is bounded as the API bounds it (`ranked_matches`); what that
costs in quality is measured against exact ranking of every match, as the overlap of their top 10s. The floor calls
`headrace.store.search.search` directly over asyncpg: the same SQL the API runs. The API is
`headrace api` in its own process (uvicorn, `auth.mode: none` on loopback, rate limit off), asked
`GET /v1/search?q=...` over real HTTP by `httpx` clients, one connection each.
"""

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bench import common
from bench.ingest import SMOKE_CORPUS, corpus
from headrace.model import Chunking, IngestionJobSpec
from headrace.model.spec import BUILTIN_EMBEDDING_MODEL
from headrace.store import cursors, jobs, migrate, search
from headrace.store.db import Pool, create_pool
from headrace.worker.chunker import chunk_sections
from headrace.worker.errors import DocumentError
from headrace.worker.extract import extract
from tests.sockets import free_port

QUERIES: dict[str, list[str]] = {
    "word": ["dictionary", "iterator", "decorator", "encoding", "subprocess", "exception"],
    "phrase": ['"context manager"', '"keyword argument"', '"regular expression"', '"file descriptor"'],
    "operators": ["socket -ssl", "asyncio or threading", '"event loop" -deprecated', "json dumps -pickle"],
    "rare": ["zipimport", "getpass", "mailcap", "xdrlib", "sunau"],
    "question": [
        "how do I read a file line by line",
        "what is the difference between a list and a tuple",
        "how can I run a shell command and capture its output",
        "how to parse command line arguments",
        "why does my generator stop after one loop",
    ],
}
MODES: list[search.Mode] = ["keyword", "semantic", "hybrid"]
RANKED_MATCHES = 10_000  # the API's default, HEADRACE_SEARCH_RANKED_MATCHES
NOISE = 0.02
EMBED_BATCH = 4096
NAMESPACES = [f"team-{i}" for i in range(4)]
TARGET_P99_MS = 50.0
TARGET_CLIENTS = 8
TARGET_API_RATIO = 1.3


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chunks", type=int, default=1_000_000, help="at least this many chunks in the index")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring time per concurrency level")
    parser.add_argument("--no-api", action="store_true", help="measure the floor only")
    parser.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    parser.add_argument("--rebuild", action="store_true", help="build the index even when a cached one exists")
    parser.add_argument("--build-only", action="store_true", help="build (or find) the cached index, measure nothing")
    parser.add_argument("--ranked-matches", type=int, default=RANKED_MATCHES, help="keyword ranking bound (0: none)")


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
    # Every job has the default config; the chunks are written with it, as a worker writes them.
    config = await pool.fetchval("SELECT text_search_config FROM headrace.jobs WHERE uid = $1", job_uids[0])
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
                (by_uri[f"replica-{replica:03d}/{uri}"], uid, ordinal, None, text, config)
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
    embedded_s = await embed_replicas(pool, docs, spec)
    async with pool.acquire() as conn:
        # Built once after loading, with room for the whole HNSW graph in memory (1M x 256 dimensions
        # needs about 1.5 GB; beyond maintenance_work_mem pgvector's build slows down many-fold).
        await conn.execute("SET maintenance_work_mem = '4GB'")
        print("building the GIN index", flush=True)
        await conn.execute("CREATE INDEX chunks_tsv ON headrace.chunks USING gin (tsv)", timeout=7200)
        print("building the HNSW index", flush=True)
        began = time.perf_counter()
        await conn.execute("SET max_parallel_maintenance_workers = 2")
        await conn.execute("SELECT headrace.ensure_space_index(id) FROM headrace.embedding_spaces", timeout=7200)
        hnsw_s = time.perf_counter() - began
        await conn.execute("VACUUM ANALYZE headrace.chunks", timeout=7200)
        await conn.execute("VACUUM ANALYZE headrace.documents", timeout=7200)
        await conn.execute("VACUUM ANALYZE headrace.embeddings", timeout=7200)
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
        "embed_seconds": embedded_s,
        "hnsw_seconds": hnsw_s,
        "hnsw_size": await pool.fetchval(
            "SELECT pg_size_pretty(sum(pg_relation_size(indexrelid))) FROM pg_index "
            "WHERE indexrelid::regclass::text LIKE 'headrace.embeddings_hnsw_%'"
        ),
    }


async def embed_replicas(pool: Pool, docs: list[tuple[str, str, list[str]]], spec: IngestionJobSpec) -> float:
    """Embed the base documents' chunks once with the built-in model; give every replica's chunk
    its base chunk's vector plus uniform noise of ±NOISE/2 per dimension. Returns the seconds spent."""
    from headrace.embedding.builtin import embed_sync
    from headrace.store import vectors

    started = time.perf_counter()
    assert spec.embedding.model_name and spec.embedding.dimensions
    space = await vectors.ensure_space(pool, spec.embedding.model_name, spec.embedding.dimensions)
    await pool.execute(f"DROP INDEX IF EXISTS headrace.embeddings_hnsw_{int(space.id)}")
    await pool.execute("CREATE UNLOGGED TABLE bench_base (uri text, ordinal int, embedding vector)")
    keys = [(uri, ordinal) for uri, _, texts in docs for ordinal in range(len(texts))]
    texts = [text for _, _, texts in docs for text in texts]
    for at in range(0, len(texts), EMBED_BATCH):  # large batches: wordllama's speed is per batch
        embedded = await asyncio.to_thread(embed_sync, texts[at : at + EMBED_BATCH])
        await pool.execute(
            "INSERT INTO bench_base SELECT * FROM unnest($1::text[], $2::int[], $3::text[]::vector[])",
            [uri for uri, _ in keys[at : at + EMBED_BATCH]],
            [ordinal for _, ordinal in keys[at : at + EMBED_BATCH]],
            [vectors.vector_literal(v) for v in embedded],
        )
    await pool.execute("CREATE INDEX ON bench_base (uri, ordinal)")
    print(f"embedded base chunks in {time.perf_counter() - started:.0f} s", flush=True)
    replicas = await pool.fetchval("SELECT count(DISTINCT substr(uri, 1, 12)) FROM headrace.documents")
    for replica in range(replicas):  # one replica per statement, within the pool's command timeout
        if replica % 10 == 0:
            print(f"vectors of replica {replica}/{replicas}", flush=True)
        await pool.execute(
            """
            INSERT INTO headrace.embeddings (chunk_id, job_uid, space_id, embedding)
            SELECT c.id, c.job_uid, $1,
                   ARRAY(SELECT x + (random() - 0.5) * $2 FROM unnest(b.embedding::real[]) x)::vector
            FROM headrace.documents d
            JOIN headrace.chunks c ON c.document_id = d.id
            JOIN bench_base b ON b.uri = substr(d.uri, 13) AND b.ordinal = c.ordinal
            WHERE starts_with(d.uri, $3)
            """,
            space.id,
            NOISE,
            f"replica-{replica:03d}/",
        )
    await pool.execute("UPDATE headrace.documents SET embedding_space = $1", space.id)
    await pool.execute("DROP TABLE bench_base")
    return time.perf_counter() - started


async def ensure_statistics(dsn: str) -> dict[str, Any]:
    """Build the search statistics of every job of the index that has none, or has them with another
    cap than search_statistics.CAP (a one-off, kept with the index, as the operator builds them after a run);
    their build time and size."""
    from headrace.store.search import statistics as search_statistics

    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        missing = await pool.fetch(
            "SELECT uid FROM headrace.jobs j WHERE NOT EXISTS "
            "(SELECT FROM headrace.search_statistics s WHERE s.job_uid = j.uid AND s.cap = $1) ORDER BY uid",
            search_statistics.CAP,
        )
        for row in missing:
            print(f"building the search statistics of job {row['uid']}", flush=True)
            await search_statistics.build(pool, row["uid"])
        facts = await pool.fetchrow(
            """
            SELECT (SELECT sum(build_seconds) FROM headrace.search_statistics) AS seconds,
                   (SELECT max(cap) FROM headrace.search_statistics) AS cap,
                   (SELECT count(*) FROM headrace.search_statistics) AS jobs,
                   count(*) AS lexemes, sum(cardinality(ids)) AS postings,
                   pg_size_pretty(pg_total_relation_size('headrace.lexemes')) AS size
            FROM headrace.lexemes
            """
        )
        assert facts is not None
        return {**dict(facts), "built_now": len(missing)}
    finally:
        await pool.close()


INDEX_DATABASE = "search_bench"
SERVER_SETTINGS = {"shared_buffers": "3GB"}
"""As a database server sized for the index would have it (pgserver's default is 128 MB): the HNSW
graph and the hot chunks stay in Postgres's own cache rather than being copied in from the OS's."""


def index_dir(want: int) -> Path:
    """Where the built index of `want` chunks is kept between runs: a Postgres data folder keyed by
    the corpus, the size, the model and the noise, so a run with the same inputs reuses it."""
    return common.RESULTS / "search-index" / f"python3.11-doc-{want}-{BUILTIN_EMBEDDING_MODEL}-noise{NOISE}"


@asynccontextmanager
async def index_database(
    admin: str, docs: list[tuple[str, str, list[str]]], want: int, *, keep: bool, rebuild: bool
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A database holding the index; yields its URL and the build's facts. With `keep`, an index
    built earlier on this server is reused (its database records the build's facts once complete)
    and a new one is left in place for the next run."""
    import asyncpg

    dsn = common.with_database(admin, INDEX_DATABASE)
    if keep and not rebuild:
        conn = await asyncpg.connect(admin)
        try:
            exists = await conn.fetchval("SELECT true FROM pg_database WHERE datname = $1", INDEX_DATABASE)
        finally:
            await conn.close()
        if exists:
            conn = await asyncpg.connect(dsn)
            try:
                built = await conn.fetchval(
                    "SELECT info::text FROM bench_index"
                    if await conn.fetchval("SELECT to_regclass('public.bench_index') IS NOT NULL")
                    else "SELECT NULL"
                )
            finally:
                await conn.close()
            if built is not None:
                pool = await create_pool(dsn, min_size=1, max_size=2)
                try:
                    await migrate.migrate(pool)  # the code measured may have newer migrations
                finally:
                    await pool.close()
                print(f"reusing the index built earlier in {index_dir(want)}", flush=True)
                yield dsn, {**json.loads(built), "reused": True}
                return
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {INDEX_DATABASE} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {INDEX_DATABASE}")
    finally:
        await conn.close()
    pool = await create_pool(dsn, min_size=2, max_size=4)
    try:
        built = await build_index(pool, docs, want)
        await pool.execute("CREATE TABLE bench_index (info jsonb NOT NULL)")
        await pool.execute("INSERT INTO bench_index VALUES ($1::text::jsonb)", json.dumps(built))
    finally:
        await pool.close()
    try:
        yield dsn, {**built, "reused": False}
    finally:
        if not keep:
            conn = await asyncpg.connect(admin)
            try:
                await conn.execute(f"DROP DATABASE IF EXISTS {INDEX_DATABASE} WITH (FORCE)")
            finally:
                await conn.close()


@asynccontextmanager
async def api_server(dsn: str, pool_size: int, ranked: int) -> AsyncIterator[str]:
    """`headrace api` on a free loopback port; yields its base URL once /readyz answers."""
    import httpx

    port = free_port()
    env = {
        **os.environ,
        "HEADRACE_DATABASE_URL": dsn,
        "HEADRACE_AUTH_MODE": "none",
        "HEADRACE_RATE_LIMIT_PER_SECOND": "0",  # one principal drives the whole load: don't throttle it
        "HEADRACE_DATABASE_POOL_SIZE": str(pool_size),
        "HEADRACE_SEARCH_RANKED_MATCHES": str(ranked) if ranked else "null",
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
        "by_kind": {k: {f"p{p}": common.percentile(v, p) for p in (50, 95, 99)} for k, v in latencies.items()},
    }


Results = dict[str, dict[int, list[dict[str, Any]]]]


@asynccontextmanager
async def api_callers(
    dsn: str, clients: int, ranked: int
) -> AsyncIterator[Callable[[search.Mode], Callable[[int, str], Awaitable[int]]]]:
    """A running `headrace api` and `clients` HTTP clients (one connection each); yields, for a mode,
    the call that asks `GET /v1/search?mode=...` as client i."""
    import httpx

    async with api_server(dsn, clients + 2, ranked) as base:
        pool = [httpx.AsyncClient(base_url=base, timeout=60) for _ in range(clients)]
        try:

            def caller(mode: search.Mode) -> Callable[[int, str], Awaitable[int]]:
                async def call(i: int, q: str) -> int:
                    response = await pool[i].get("/v1/search", params={"q": q, "mode": mode})
                    response.raise_for_status()
                    return len(response.json()["items"])

                return call

            yield caller
        finally:
            for client in pool:
                await client.aclose()


async def explain(pool: Pool, query: str, mode: search.Mode, ranked: int | None) -> list[tuple[str, str]]:
    """EXPLAIN ANALYZE of each statement one search runs (its scope query aside), as (what, plan).

    The statements and their arguments are recorded as `search.search` sends them, so the plans are
    those of the code measured, whatever its SQL; then each is explained in a transaction with the
    search's own settings (custom plans, no JIT, the HNSW search settings)."""
    import asyncpg

    calls: list[tuple[str, tuple[Any, ...]]] = []
    original = asyncpg.connection.Connection.fetch

    async def recording(self: asyncpg.Connection, sql: str, *args: Any, **kwargs: Any) -> Any:
        calls.append((sql, args))
        return await original(self, sql, *args, **kwargs)

    asyncpg.connection.Connection.fetch = recording  # type: ignore[method-assign,assignment]
    try:
        await search.search(pool, query, mode=mode, embed=embed_query, ranked_matches=ranked)
    finally:
        asyncpg.connection.Connection.fetch = original  # type: ignore[method-assign]
    plans = []
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(search.transaction_settings(120_000))
        await conn.execute("SET LOCAL hnsw.ef_search = 100; SET LOCAL hnsw.iterative_scan = strict_order")
        for sql, args in calls:
            if "FROM headrace.jobs" in sql and "embedding_spaces" in sql:
                continue  # the scope: a handful of jobs
            what = (
                "hits (text, and the words to mark in snippets)"
                if "WITH ORDINALITY" in sql
                else "semantic"
                if "<=>" in sql
                else "keyword, from the search statistics"
                if "headrace.lexemes" in sql
                else "keyword"
            )
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, *args)
            plan = "\n".join(r[0] for r in rows)
            plans.append((what, re.sub(r"'\[[-0-9.e,]{200,}\]'", "'[query vector]'", plan)))
    return plans


async def embed_query(space: Any, text: str) -> list[float]:
    """The query's vector, as the API computes it."""
    from headrace.embedding import builtin

    return await builtin.embed_query(text)


OVERLAP_TIMEOUT_MS = 20_000


async def capped_overlap(pool: Pool, ranked: int) -> dict[str, float | None]:
    """Per query: the share of exact keyword ranking's top 10 that the capped ranking also returns
    (None: exact ranking of every match did not finish within OVERLAP_TIMEOUT_MS)."""
    import asyncpg

    overlap: dict[str, float | None] = {}
    for _, q in mix():
        capped = await search.search(pool, q, mode="keyword", ranked_matches=ranked, timeout_ms=120_000)
        # Exact ranking of every match by the same collection statistics (N, average length, document
        # frequencies), which the bounded page's cursor carries: what differs is only which chunks are ranked.
        pinned = cursors.decode_search(capped.next_cursor)[2] if capped.next_cursor else None
        above_all = cursors.encode_search(1e300, 0, pinned) if pinned is not None else None
        try:
            exact = await search.search(
                pool, q, mode="keyword", ranked_matches=None, timeout_ms=OVERLAP_TIMEOUT_MS, cursor=above_all
            )
        except asyncpg.QueryCanceledError:
            overlap[q] = None
            continue
        want = {h.chunk_id for h in exact.hits}
        overlap[q] = len(want & {h.chunk_id for h in capped.hits}) / len(want) if want else 1.0
    return overlap


async def main() -> None:
    opts = common.parse_options("search", __doc__.splitlines()[0], configure=configure)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a log line per request would load the client
    want = 10_000 if opts.smoke else opts.extra.chunks
    client_counts = [1, 4] if opts.smoke else opts.extra.clients
    seconds = 1.5 if opts.smoke else opts.extra.seconds
    modes: list[search.Mode] = opts.extra.modes
    ranked = opts.extra.ranked_matches or None
    report = common.Report(
        "search", "Search: keyword, semantic and hybrid latency over a large index", opts, common.machine(["wordllama"])
    )
    docs = await asyncio.to_thread(base_documents, opts.smoke)
    floor: Results = {m: {c: [] for c in client_counts} for m in modes}
    api: Results | None = None
    keep = not opts.smoke
    folder = index_dir(want) if keep else None
    if folder is not None:
        folder.parent.mkdir(parents=True, exist_ok=True)
    with common.embedded_postgres(folder, None if opts.smoke else SERVER_SETTINGS) as admin:
        report.machine["versions"]["postgres"] = await common.postgres_version(admin)
        async with index_database(admin, docs, want, keep=keep, rebuild=opts.extra.rebuild) as (dsn, built):
            print(f"index: {built}", flush=True)
            statistics = await ensure_statistics(dsn)
            print(f"search statistics: {statistics}", flush=True)
            if opts.extra.build_only:
                return
            pool = await create_pool(dsn, min_size=2, max_size=max(client_counts) + 2)
            try:
                matches = {
                    q: await pool.fetchval(
                        "SELECT count(*) FROM headrace.chunks c WHERE c.tsv @@ websearch_to_tsquery(c.config, $1)", q
                    )
                    for _, q in mix()
                }
                overlap = await capped_overlap(pool, ranked) if ranked else {}
                async with contextlib.AsyncExitStack() as stack:
                    api_call = (
                        None
                        if opts.extra.no_api
                        else await stack.enter_async_context(api_callers(dsn, max(client_counts), ranked or 0))
                    )
                    if api_call is not None:
                        api = {m: {c: [] for c in client_counts} for m in modes}
                    for mode in modes:

                        async def floor_call(_: int, q: str, mode: search.Mode = mode) -> int:
                            page = await search.search(pool, q, mode=mode, embed=embed_query, ranked_matches=ranked)
                            return len(page.hits)

                        ways: list[tuple[str, Callable[[int, str], Awaitable[int]], Results]] = [
                            ("floor", floor_call, floor)
                        ]
                        if api_call is not None and api is not None:
                            ways.append(("api", api_call(mode), api))
                        for _, call, _ in ways:
                            await drive(2, 1.0 if opts.smoke else 6.0, call)  # warm the caches
                        # Floor and API take turns at each level, so both meet the same machine load.
                        for r in range(opts.repeat):
                            for c in client_counts:
                                for way, call, results in ways:
                                    result = await drive(c, seconds, call)
                                    result["load1"] = os.getloadavg()[0]
                                    results[mode][c].append(result)
                                    print(
                                        f"{way} mode={mode} clients={c} repeat={r} p50={result['p50']:.1f}ms "
                                        f"p99={result['p99']:.1f}ms qps={result['qps']:.0f} "
                                        f"errors={result['errors']} load={result['load1']:.1f}",
                                        flush=True,
                                    )
                slowest = max(mix(), key=lambda kq: matches[kq[1]])[1]
                question = QUERIES["question"][0]
                plans = {
                    f"keyword, {slowest}": await explain(pool, slowest, "keyword", ranked),
                    f"semantic, {question}": await explain(pool, question, "semantic", ranked),
                    f"hybrid, {slowest}": await explain(pool, slowest, "hybrid", ranked),
                }
            finally:
                await pool.close()

    def summarise(results: Results) -> dict[str, dict[int, dict[str, common.Summary]]]:
        return {
            m: {c: {k: common.Summary.of([x[k] for x in per[c]]) for k in ("p50", "p95", "p99", "qps")} for c in per}
            for m, per in results.items()
        }

    summary = summarise(floor)
    report.results = {
        "index": built,
        "search_statistics": statistics,
        "matches": matches,
        "ranked_matches": ranked,
        "capped_overlap": overlap,
        "floor": {m: {str(c): floor[m][c] for c in client_counts} for m in modes},
        "floor_summary": {m: {str(c): summary[m][c] for c in client_counts} for m in modes},
        "api": None,
        "explain": plans,
    }
    loads = [x["load1"] for res in (floor, api or {}) for per in res.values() for xs in per.values() for x in xs]
    lines = [
        f"Index: {built['chunks']:,} chunks in {built['documents']:,} documents ({built['replicas']} replicas of "
        f"{len(docs)} extracted files under distinct URIs, four jobs in four namespaces); chunks table "
        f"{built['table_size']}, GIN index {built['gin_size']}, HNSW index {built['hnsw_size']} (256-dimension "
        f"built-in-model vectors, cosine); built in {built['total_seconds']:.0f} s "
        f"(COPY {built['load_seconds']:.0f} s, vectors {built['embed_seconds']:.0f} s, "
        f"HNSW {built['hnsw_seconds']:.0f} s)"
        + (", kept under bench/results/search-index/ and reused by this run." if built.get("reused") else ".")
        + f" 1-minute load average after each measured level: {min(loads, default=0):.1f} to "
        f"{max(loads, default=0):.1f} (median {common.percentile(loads, 50) if loads else 0:.1f}) on "
        f"{os.cpu_count()} cores. Postgres settings: "
        + (", ".join(f"{k} = {v}" for k, v in SERVER_SETTINGS.items()) if not opts.smoke else "pgserver's defaults")
        + ".",
        "",
        f"Search statistics (headrace/store/search/statistics.py, built as the operator does after a run): "
        f"{statistics['lexemes']:,} lexeme rows over {statistics['jobs']} jobs holding {statistics['postings']:,} "
        f"postings (at most {statistics['cap']} per lexeme and job), {statistics['size']}; built in "
        f"{statistics['seconds']:.0f} s, one transaction per job"
        + (" (in this run)." if statistics["built_now"] else ", kept with the index and reused by this run."),
        "",
        f"Query mix ({len(mix())} queries, every client cycles through all of them): "
        + "; ".join(f"{k}: {', '.join(f'`{q}`' for q in qs)}" for k, qs in QUERIES.items())
        + ". "
        f"{seconds:.0f} s per level, first page of 10 hits with text and snippets, no filters (the scope is every "
        f"job). Keyword ranking is bounded as the API bounds it by default ({ranked or 0:,} matches; 0: unbounded): "
        "from the search statistics (a few hundred postings per query word, the best candidates scored exactly "
        "from their tsvectors), else over the GIN index to that many matches. "
        f"Median (min-max) of {opts.repeat} runs. Floor and API take turns at each level (same load). "
        "Every search transaction plans with its values (`plan_cache_mode = force_custom_plan`; the search "
        "statistics' query alone keeps its generic plan) and without JIT.",
        "",
        "**Floor: `headrace.store.search.search` over asyncpg, query embedded in-process** (latency in ms)",
        "",
    ]
    lines += common.table(
        ["mode", "clients", "p50", "p95", "p99", "QPS", "failed"],
        [
            [
                m,
                c,
                summary[m][c]["p50"].fmt(1),
                summary[m][c]["p95"].fmt(1),
                summary[m][c]["p99"].fmt(1),
                summary[m][c]["qps"].fmt(),
                sum(x["errors"] for x in floor[m][c]),
            ]
            for m in modes
            for c in client_counts
        ],
    )
    target_c = TARGET_CLIENTS if TARGET_CLIENTS in client_counts else client_counts[-1]
    kinds_rows = []
    for m in modes:
        for k in QUERIES:
            f = floor[m][target_c][-1]["by_kind"][k]
            a = api[m][target_c][-1]["by_kind"][k] if api is not None else None
            kinds_rows.append(
                [m, k, *(f"{f[p]:.1f}" for p in ("p50", "p95", "p99"))]
                + ([f"{a[p]:.1f}" for p in ("p50", "p95", "p99")] if a is not None else ["-", "-", "-"])
            )
    lines += [f"By query kind at {target_c} clients (last run):", ""]
    lines += common.table(
        [
            "mode",
            "query kind",
            "floor p50 ms",
            "floor p95 ms",
            "floor p99 ms",
            "API p50 ms",
            "API p95 ms",
            "API p99 ms",
        ],
        kinds_rows,
    )
    lines += common.table(
        ["query kind", "matching chunks per query"],
        [[k, ", ".join(f"{matches[q]:,}" for q in QUERIES[k])] for k in QUERIES],
    )
    measured = {q: v for q, v in overlap.items() if v is not None}
    if measured:
        worst = min(measured, key=lambda q: measured[q])
        mean_overlap = sum(measured.values()) / len(measured)
        unfinished = [q for q, v in overlap.items() if v is None]
        lines += [
            f"**What bounding keyword ranking costs:** the bounded ranking's top 10 holds {mean_overlap:.0%} of exact "
            f"BM25 ranking's top 10 (every match ranked, by the same collection statistics) on average over "
            f"{len(measured)} queries of the mix (worst: `{worst}`, {measured[worst]:.0%}); a word in at most "
            f"{statistics['cap']} chunks of a job has a complete list there, and is ranked exactly. "
            + (
                f"Exact ranking of every match did not finish in {OVERLAP_TIMEOUT_MS / 1000:.0f} s for "
                + ", ".join(f"`{q}`" for q in unfinished)
                + " (not compared). "
                if unfinished
                else ""
            )
            + "bench/retrieval.py measures the same bound as MRR.",
            "",
        ]
    worst_p99 = max(summary[m][target_c]["p99"].median for m in modes)
    report.results["target"] = {"worst_p99_ms": worst_p99, "clients": target_c, "met": worst_p99 <= TARGET_P99_MS}
    lines += [
        f"**Target** p99 ≤ {TARGET_P99_MS:.0f} ms at {target_c} clients in every mode (floor): worst "
        f"{worst_p99:.1f} ms — {common.verdict(worst_p99 <= TARGET_P99_MS)}.",
        "",
    ]
    if api is None:
        lines += ["**Through the HTTP API:** not measured in this run (`--no-api`).", ""]
    else:
        api_summary = summarise(api)
        report.results["api"] = {m: {str(c): api[m][c] for c in client_counts} for m in modes}
        lines += [
            "**Through the HTTP API: `GET /v1/search?mode=...` of `headrace api`** (latency in ms, as the client "
            "sees it)",
            "",
        ]
        lines += common.table(
            ["mode", "clients", "p50", "p95", "p99", "QPS", "failed", "API p50 ÷ floor p50"],
            [
                [
                    m,
                    c,
                    api_summary[m][c]["p50"].fmt(1),
                    api_summary[m][c]["p95"].fmt(1),
                    api_summary[m][c]["p99"].fmt(1),
                    api_summary[m][c]["qps"].fmt(),
                    sum(x["errors"] for x in api[m][c]),
                    f"{api_summary[m][c]['p50'].median / summary[m][c]['p50'].median:.2f}×",
                ]
                for m in modes
                for c in client_counts
            ],
        )
        ratio = max(api_summary[m][c]["p50"].median / summary[m][c]["p50"].median for m in modes for c in client_counts)
        api_p99 = max(api_summary[m][target_c]["p99"].median for m in modes)
        report.results["target_api"] = {"worst_p50_ratio": ratio, "worst_p99_ms": api_p99}
        lines += [
            f"**Target** API p50 ≤ {TARGET_API_RATIO}× the floor's p50 (worst mode and level): {ratio:.2f}× — "
            f"{common.verdict(ratio <= TARGET_API_RATIO)}. API p99 at {target_c} clients, worst mode: "
            f"{api_p99:.1f} ms — {common.verdict(api_p99 <= TARGET_P99_MS)}.",
            "",
        ]
    for label, statements in plans.items():
        lines += [f"<details><summary>EXPLAIN ANALYZE of one search: {label}</summary>", ""]
        for what, plan in statements:
            lines += [f"{what}:", "", "```", plan, "```", ""]
        lines += ["</details>", ""]
    lines += [
        f"![search](benchmarks/{report.plot_path().name})",
        "",
    ]
    report.lines += lines
    _plot(report, summary)
    report.write()


def _plot(report: common.Report, summary: dict[str, dict[int, dict[str, common.Summary]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(4 * len(summary), 4), sharey=True, squeeze=False)
    for ax, (mode, per) in zip(axes[0], summary.items(), strict=True):
        xs = sorted(per)
        for key in ("p50", "p95", "p99"):
            ax.plot(xs, [per[c][key].median for c in xs], marker="o", label=f"floor {key}")
        ax.axhline(TARGET_P99_MS, color="red", linestyle="--", linewidth=1, label="p99 target")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("concurrent clients")
        ax.set_title(f"{mode}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("latency, ms")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(report.plot_path(), dpi=110)
    plt.close(fig)


_ = SMOKE_CORPUS  # the smoke corpus is shared with the ingest benchmark

if __name__ == "__main__":
    common.run(main)
