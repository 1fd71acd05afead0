"""The embedding stage: built-in and endpoint models, retries, bad answers, model changes, no pgvector."""

import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from headrace.embedding.builtin import embed_query
from headrace.store import documents, jobs, migrate, search, vectors
from headrace.store.db import Pool, create_pool
from headrace.store.jobs import JobRecord
from tests.conftest import add_columns_this_release_writes, owned_database, volume_spec, with_database
from tests.sources.helpers import run_once, write_secret
from tests.worker.embedserver import Answer, embedding_server, ok

pytestmark = pytest.mark.postgres

FILES = {"a.txt": "Alpha paragraph about rivers.", "b.txt": "Beta paragraph about mountains and valleys."}


def endpoint(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "endpoint",
        "endpoint": {"url": url, "model": "tiny", "dimensions": 3, "maxAttempts": 2, **extra},
    }


def lay_out(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


async def make(pool: Pool, folder: Path, embedding: dict[str, Any], files: dict[str, str] = FILES) -> JobRecord:
    lay_out(folder, files)
    spec = volume_spec(folder, embedding=embedding)
    return await jobs.register_job(pool, uid=uuid.uuid4(), namespace="default", name="emb", generation=1, spec=spec)


async def embedded(pool: Pool, job: JobRecord) -> dict[str, Any]:
    """uri -> (state, error, space model, vectors stored, chunk ids)."""
    rows = await pool.fetch(
        """
        SELECT d.uri, d.state, d.error, s.model, d.outcome,
               (SELECT count(*) FROM headrace.embeddings e JOIN headrace.chunks c ON c.id = e.chunk_id
                WHERE c.document_id = d.id) AS vectors,
               (SELECT array_agg(id ORDER BY id) FROM headrace.chunks c WHERE c.document_id = d.id) AS chunks
        FROM headrace.documents d LEFT JOIN headrace.embedding_spaces s ON s.id = d.embedding_space
        WHERE d.job_uid = $1
        """,
        job.uid,
    )
    return {r["uri"]: dict(r) for r in rows}


async def test_builtin_model_embeds_every_chunk(pool: Pool, tmp_path: Path) -> None:
    job = await make(pool, tmp_path / "docs", {})
    await run_once(pool, job, secrets_dir=tmp_path)
    found = await embedded(pool, job)
    assert {uri: (d["state"], d["model"], d["vectors"]) for uri, d in found.items()} == {
        "a.txt": ("ingested", "wordllama-l2-supercat", 1),
        "b.txt": ("ingested", "wordllama-l2-supercat", 1),
    }


async def test_endpoint_gets_batches_and_the_api_key(pool: Pool, tmp_path: Path) -> None:
    write_secret(tmp_path / "secrets", "emb-key", {"apiKey": "s3cret"})
    with embedding_server() as server:
        job = await make(pool, tmp_path / "docs", endpoint(server.url, apiKeySecretRef={"name": "emb-key"}))
        await run_once(pool, job, secrets_dir=tmp_path / "secrets")
    assert {d["state"] for d in (await embedded(pool, job)).values()} == {"ingested"}
    assert all(headers["Authorization"] == "Bearer s3cret" for _, _, headers in server.requests)
    assert all(body["model"] == "tiny" for _, body, _ in server.requests)


async def test_rate_limits_are_waited_out_honouring_retry_after(pool: Pool, tmp_path: Path) -> None:
    calls = {"n": 0}

    def limited(inputs: list[str]) -> Answer:
        calls["n"] += 1
        return (429, {"error": "slow down"}, {"Retry-After": "1"}) if calls["n"] == 1 else ok(inputs)

    with embedding_server(limited) as server:
        job = await make(pool, tmp_path / "docs", endpoint(server.url))
        await run_once(pool, job, secrets_dir=tmp_path)
    assert {d["state"] for d in (await embedded(pool, job)).values()} == {"ingested"}
    first, second = server.requests[0][0], server.requests[1][0]
    assert second - first >= 0.95  # Retry-After: 1, though the first backoff step is 0.5 s


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (lambda inputs: (503, {"error": "overloaded"}, {}), "failed 2 attempts; last: HTTP 503"),
        (lambda inputs: (400, {"error": "bad model"}, {}), "answered HTTP 400"),
        (lambda inputs: ok(inputs, dimensions=4), "has 4 dimensions, spec.embedding expects 3"),
        (lambda inputs: (200, b'{"data": [{"index": 0, "embedding": [NaN, 1, 1]}]}', {}), "NaN"),
        (lambda inputs: (200, {"data": []}, {}), "returned 0 vectors for 1 inputs"),
        (lambda inputs: (200, {"vectors": []}, {}), "without an OpenAI-style `data` list"),
        (lambda inputs: (200, {"data": [{"embedding": ["a", 1, 1]}]}, {}), "non-numeric"),
    ],
)
async def test_bad_answers_fail_the_document_with_the_reason_and_write_nothing(
    pool: Pool, tmp_path: Path, answer: Any, reason: str
) -> None:
    with embedding_server(answer) as server:
        job = await make(pool, tmp_path / "docs", endpoint(server.url), files={"a.txt": FILES["a.txt"]})
        await run_once(pool, job, secrets_dir=tmp_path)
    found = (await embedded(pool, job))["a.txt"]
    assert found["state"] == "failed" and reason in found["error"], found["error"]
    assert found["chunks"] is None and found["vectors"] == 0


async def test_a_model_change_re_embeds_at_the_next_run_without_re_extracting(pool: Pool, tmp_path: Path) -> None:
    job = await make(pool, tmp_path / "docs", {})
    await run_once(pool, job, secrets_dir=tmp_path)
    before = await embedded(pool, job)
    with embedding_server() as server:
        spec = job.spec.model_copy(update={"embedding": volume_spec(embedding=endpoint(server.url)).embedding})
        job = await jobs.register_job(pool, uid=job.uid, namespace="default", name="emb", generation=2, spec=spec)
        state = await run_once(pool, job, secrets_dir=tmp_path)
    after = await embedded(pool, job)
    assert state.summary.updated == 2 and state.summary.failed == 0
    for uri in FILES:
        assert after[uri]["model"] == "tiny" and after[uri]["vectors"] == 1
        assert after[uri]["chunks"] == before[uri]["chunks"], "chunks were rewritten: the document was re-extracted"
    assert await pool.fetchval("SELECT count(*) FROM headrace.embeddings WHERE job_uid = $1", job.uid) == 2
    # Turning embeddings off drops the vectors at the next run, and keeps the chunks.
    spec = job.spec.model_copy(update={"embedding": volume_spec(embedding={"provider": "none"}).embedding})
    job = await jobs.register_job(pool, uid=job.uid, namespace="default", name="emb", generation=3, spec=spec)
    await run_once(pool, job, secrets_dir=tmp_path)
    off = await embedded(pool, job)
    assert all(d["model"] is None and d["vectors"] == 0 and d["chunks"] == before[u]["chunks"] for u, d in off.items())


PAGE = "<html><head><title>{}</title></head><body><p>See the list below for details.</p></body></html>"
RIVERS = PAGE.format("Rivers of Europe")
BAKING = PAGE.format("Baking bread at home")


async def test_each_chunk_is_embedded_with_its_document_title_at_ingest_and_at_re_embed(
    pool: Pool, tmp_path: Path
) -> None:
    files = {"rivers.html": RIVERS, "notes.txt": "Alpha paragraph about rivers.\n\nMore about deltas."}
    with embedding_server() as server:
        job = await make(pool, tmp_path / "docs", endpoint(server.url), files=files)
        await run_once(pool, job, secrets_dir=tmp_path)
        # A model change re-embeds the stored chunks, with their document's title too.
        spec = job.spec.model_copy(
            update={"embedding": volume_spec(embedding=endpoint(server.url, model="tiny-2")).embedding}
        )
        job = await jobs.register_job(pool, uid=job.uid, namespace="default", name="emb", generation=2, spec=spec)
        state = await run_once(pool, job, secrets_dir=tmp_path)
    assert state.summary.updated == 2 and state.summary.failed == 0
    sent = [sorted(text for body in bodies for text in body["input"]) for bodies in _by_model(server.requests)]
    # A plain-text file's title is its first line, which its chunk already begins with: not repeated.
    expected = [
        "Alpha paragraph about rivers.\n\nMore about deltas.",
        "Rivers of Europe\n\nSee the list below for details.",
    ]
    assert sent == [expected, expected]


async def test_after_the_upgrade_documents_embedded_without_titles_are_re_embedded_not_re_extracted(
    postgres_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database ingested at the schema before migration 0009 (when chunks were embedded alone) is
    migrated: its embedded documents are marked, and the next run re-embeds them with their titles
    from their stored chunks; a job without embeddings has nothing to redo."""
    name = f"upgrade_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    pool = await create_pool(with_database(postgres_server, name))
    try:
        every = migrate.available_migrations()
        with monkeypatch.context() as patched:
            patched.setattr(migrate, "available_migrations", lambda: [m for m in every if m.version < 9])
            await migrate.migrate(pool)
        await add_columns_this_release_writes(pool)
        files = {"rivers.html": RIVERS, "baking.html": BAKING}
        with embedding_server() as server:
            job = await make(pool, tmp_path / "docs", endpoint(server.url), files=files)
            await run_once(pool, job, secrets_dir=tmp_path)
            plain = await jobs.register_job(
                pool,
                uid=uuid.uuid4(),
                namespace="default",
                name="plain",
                generation=1,
                spec=volume_spec(tmp_path / "docs", embedding={"provider": "none"}),
            )
            await run_once(pool, plain, secrets_dir=tmp_path)
            before = await embedded(pool, job)

            await migrate.migrate(pool)
            marks = await pool.fetch("SELECT job_uid, embedding_input FROM headrace.documents")
            assert sorted((r["job_uid"] == job.uid, r["embedding_input"]) for r in marks) == [
                (False, None),
                (False, None),
                (True, "chunk"),
                (True, "chunk"),
            ]
            server.requests.clear()
            state = await run_once(pool, job, secrets_dir=tmp_path, reason="upgraded")
            assert (state.summary.updated, state.summary.unchanged, state.summary.failed) == (2, 0, 0), state.summary
            assert sorted(text for _, body, _ in server.requests for text in body["input"]) == [
                "Baking bread at home\n\nSee the list below for details.",
                "Rivers of Europe\n\nSee the list below for details.",
            ]
            after = await embedded(pool, job)
            for uri, document in after.items():
                assert document["chunks"] == before[uri]["chunks"], (
                    "chunks were rewritten: the document was re-extracted"
                )
                assert (document["model"], document["vectors"]) == ("tiny", 1)
            assert await pool.fetchval("SELECT count(*) FROM headrace.documents WHERE embedding_input IS NOT NULL") == 0
            # Brought up to date, the documents are unchanged at the next run: nothing is embedded again.
            server.requests.clear()
            state = await run_once(pool, job, secrets_dir=tmp_path, reason="again")
            assert state.summary.unchanged == 2 and server.requests == []
    finally:
        await pool.close()


def _by_model(requests: list[tuple[float, dict[str, Any], dict[str, str]]]) -> list[list[dict[str, Any]]]:
    """Request bodies grouped by the model they asked for, in order of first use."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for _, body, _ in requests:
        grouped.setdefault(body["model"], []).append(body)
    return list(grouped.values())


async def test_a_chunk_that_never_names_its_topic_is_found_by_its_title(pool: Pool, tmp_path: Path) -> None:
    """Two documents whose only chunk is the same sentence: semantic search tells them apart by title."""
    job = await make(pool, tmp_path / "docs", {}, files={"a-baking.html": BAKING, "b-rivers.html": RIVERS})
    await run_once(pool, job, secrets_dir=tmp_path)

    async def embed(space: vectors.Space, text: str) -> list[float]:
        return await embed_query(text)

    for question, best in (("european rivers", "b-rivers.html"), ("how to bake bread", "a-baking.html")):
        page = await search.search(pool, question, mode="semantic", embed=embed)
        assert page.hits[0].uri == best, question
        assert page.hits[0].score > page.hits[1].score, "the two chunks were embedded alike"
        assert page.hits[0].text == "See the list below for details."


async def test_without_pgvector_everything_works_keyword_only(postgres_server: str, tmp_path: Path) -> None:
    """A database owner who is not a superuser cannot create the untrusted extension: the migration
    carries on, ingestion stores no vectors, and search runs by keyword; once an admin creates the
    extension, the next migrate adds the table."""
    async with owned_database(postgres_server) as (dsn, admin_dsn):
        pool = await create_pool(dsn)
        try:
            await migrate.migrate(pool)
            assert not await vectors.available(pool)
            job = await make(pool, tmp_path / "docs", {})
            state = await run_once(pool, job, secrets_dir=tmp_path)
            assert state.summary.added == 2 and state.summary.failed == 0
            page = await search.search(pool, "rivers", mode=None, embed=lambda space, text: pytest.fail("no vectors"))
            assert page.mode == "keyword" and [h.uri for h in page.hits] == ["a.txt"]
            with pytest.raises(search.SearchRefused, match="none of the searched jobs"):
                await search.search(
                    pool, "rivers", mode="semantic", embed=lambda space, text: pytest.fail("no vectors")
                )
            admin = await asyncpg.connect(admin_dsn)
            try:
                await admin.execute("CREATE EXTENSION vector")
            finally:
                await admin.close()
            await migrate.migrate(pool)
            assert await vectors.available(pool)
            await run_once(pool, job, secrets_dir=tmp_path, reason="extension added")
            assert await pool.fetchval("SELECT count(*) FROM headrace.embeddings") == 2
            assert (await documents.known(pool, job.uid, ["a.txt"]))["a.txt"].embedding_space is not None
        finally:
            await pool.close()
