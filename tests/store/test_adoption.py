"""Retained data is kept but not served, and a new IngestionJob of the same namespace (by UID) and name
adopts it: its first run skips the unchanged documents by hash, and search shows every hit once."""

import uuid
from pathlib import Path

from headrace.model.run import RunState
from headrace.store import jobs, runs, search
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord
from headrace.worker.loop import EXIT_DRAINED, Worker
from headrace.worker.store import DirectStore
from tests.conftest import volume_spec

CORPUS = {
    "keepers.md": "# Keepers\n\nThe lighthouse keeper trims the lamp at dusk.",
    "fog.txt": "Foghorns sound when the lighthouse lamp cannot be seen.",
    "ships.txt": "Ships steer by the lighthouse beam on stormy nights.",
}


async def apply(pool: Pool, namespace_uid: uuid.UUID, *, name: str = "handbook") -> tuple[JobRecord, uuid.UUID | None]:
    """What the operator's apply does for a newly created IngestionJob: adopt, register, run."""
    uid = uuid.uuid4()
    adopted = await jobs.adopt_retained(pool, uid=uid, namespace_uid=namespace_uid, name=name)
    record = await jobs.register_job(
        pool, uid=uid, namespace="docs", name=name, generation=1, spec=volume_spec(), namespace_uid=namespace_uid
    )
    await runs.ensure_run(pool, record, reason="created")
    job = await jobs.get_job(pool, uid)
    assert job is not None
    return job, adopted


async def run_to_end(pool: Pool, job: JobRecord, root: Path) -> RunState:
    assert await Worker(DirectStore(pool, job.uid), volume_root=root, poll_seconds=0.05).run() == EXIT_DRAINED
    state = await jobs.run_state(pool, job.uid)
    assert state is not None and state.finished
    return state


async def hits(pool: Pool, namespace: str = "docs") -> list[str]:
    page = await search.search(pool, "lighthouse", where=search.SearchFilter(namespaces=[namespace]), limit=50)
    return sorted(h.uri for h in page.hits)


def corpus(root: Path) -> Path:
    for name, text in CORPUS.items():
        (root / name).write_text(text)
    return root


async def test_delete_and_recreate_serves_each_hit_once_and_skips_unchanged(pool: Pool, tmp_path: Path) -> None:
    root = corpus(tmp_path)
    namespace_uid = uuid.uuid4()
    first, adopted = await apply(pool, namespace_uid)
    assert adopted is None
    assert (await run_to_end(pool, first, root)).summary.added == 3
    assert await hits(pool) == sorted(CORPUS)

    for _ in range(3):  # delete with retention: Retain, apply the same manifest again
        await jobs.retain_job_data(pool, first.uid)
        assert await hits(pool) == [], "retained data is not served"
        assert await jobs.namespaces(pool) == []
        assert await jobs.find_job(pool, "docs", "handbook") is None

        again, adopted = await apply(pool, namespace_uid)
        assert adopted == first.uid
        assert again.current_run > first.current_run  # a new run was started for the adopter
        state = await run_to_end(pool, again, root)
        assert (state.summary.added, state.summary.unchanged, state.summary.updated) == (0, 3, 0)
        assert await hits(pool) == sorted(CORPUS), "every hit once"
        view = await jobs.find_job(pool, "docs", "handbook")
        assert view is not None and view.uid == again.uid
        # The old uid is gone from every table.
        for table in ("runs", "tasks", "documents", "chunks", "job_events"):
            assert not await pool.fetchval(f"SELECT count(*) FROM headrace.{table} WHERE job_uid = $1", first.uid)
        first = again


async def test_a_recreated_namespace_sees_nothing_until_an_admin_adopts(pool: Pool, tmp_path: Path) -> None:
    root = corpus(tmp_path)
    old_namespace, new_namespace = uuid.uuid4(), uuid.uuid4()
    first, _ = await apply(pool, old_namespace)
    await run_to_end(pool, first, root)
    await jobs.retain_job_data(pool, first.uid)

    # Someone else creates a namespace of the same name and a job of the same name: it starts empty.
    stranger, adopted = await apply(pool, new_namespace)
    assert adopted is None
    assert await hits(pool) == []
    await jobs.delete_job_data(pool, stranger.uid)

    # An admin adopts the retained data into the new namespace (`headrace adopt docs --namespace-uid ...`).
    listed = await jobs.adopt_namespace(pool, "docs", new_namespace, dry_run=True)
    assert [(j.uid, j.namespace_uid, j.documents) for j in listed] == [(first.uid, old_namespace, 3)]
    assert await pool.fetchval("SELECT namespace_uid FROM headrace.jobs WHERE uid = $1", first.uid) == old_namespace
    await jobs.adopt_namespace(pool, "docs", new_namespace)
    assert await hits(pool) == [], "adopted into the namespace, but still waiting for its IngestionJob"

    owner, adopted = await apply(pool, new_namespace)
    assert adopted == first.uid
    state = await run_to_end(pool, owner, root)
    assert state.summary.unchanged == 3
    assert await hits(pool) == sorted(CORPUS)


async def test_a_live_row_of_a_former_namespace_stops_being_served(pool: Pool, tmp_path: Path) -> None:
    """A namespace whose jobs' finalizers were bypassed, re-created: registering in it retires the old rows."""
    root = corpus(tmp_path)
    first, _ = await apply(pool, uuid.uuid4(), name="old")
    await run_to_end(pool, first, root)
    assert await hits(pool) == sorted(CORPUS)
    await apply(pool, uuid.uuid4(), name="new")
    assert await hits(pool) == []


async def test_headrace_adopt_on_the_command_line(pool: Pool, dsn: str, tmp_path: Path) -> None:
    import asyncio

    from click.testing import CliRunner

    from headrace.cli import main

    root = corpus(tmp_path)
    old_namespace, new_namespace = uuid.uuid4(), uuid.uuid4()
    first, _ = await apply(pool, old_namespace)
    await run_to_end(pool, first, root)
    await jobs.retain_job_data(pool, first.uid)

    def adopt(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, ["adopt", *args, "--database-url", dsn])
        return result.exit_code, result.output

    code, output = await asyncio.to_thread(adopt, "docs", "--namespace-uid", "not-a-uid")
    assert code == 2 and "--namespace-uid" in output
    code, output = await asyncio.to_thread(adopt, "docs", "--namespace-uid", str(new_namespace), "--dry-run")
    assert code == 0 and f"Would adopt docs/handbook (job uid {first.uid}" in output and "3 documents" in output
    assert await pool.fetchval("SELECT namespace_uid FROM headrace.jobs WHERE uid = $1", first.uid) == old_namespace
    code, output = await asyncio.to_thread(adopt, "docs", "--namespace-uid", str(new_namespace))
    assert code == 0 and "Adopted docs/handbook" in output
    code, output = await asyncio.to_thread(adopt, "docs", "--namespace-uid", str(new_namespace))
    assert code == 0 and "Nothing to adopt" in output
    _, adopted = await apply(pool, new_namespace)
    assert adopted == first.uid
