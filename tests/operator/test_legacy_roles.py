"""Upgrading from a release whose workers held a Postgres role of their namespace: the new operator drops
the roles at start, deletes each namespace's worker Secret the first time it serves a job there, and
replaces a worker Job whose pods still read a database URL. Real Postgres, kmock's Kubernetes emulator.

The roles and Secrets are made here exactly as those releases made them (`headrace/store/tenants.py` and
`headrace/operator/resources/secret.py` before the ingest service): a NOLOGIN group role granted through
`headrace.grant_tenant_access`, a LOGIN member per namespace UID listed in `headrace.tenants`, and a
Secret `headrace-worker-database` annotated with the role's name. They are made on a database of schema 15
(the newest with that function), which each test then migrates as the upgrade's migration hook does.
"""

import base64
import json
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import kmock
import pytest

from headrace.operator.legacy_secrets import LegacySecrets
from headrace.operator.reconcile import Operator, Runtime
from headrace.store import legacy_roles, migrate
from headrace.store.db import Pool, create_pool
from tests.operator.conftest import ij
from tests.operator.test_reconcile import apply, exists

pytestmark = pytest.mark.postgres

SECRETS, JOBS, NAMESPACES = "v1/secrets", "batch/v1/jobs", "v1/namespaces"
LEGACY_SECRET = "headrace-worker-database"


@pytest.fixture
async def dsn(empty_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A database at schema 15: this module's `pool`, and the operator's, start there."""
    shipped = migrate.available_migrations()
    pool = await create_pool(empty_dsn, min_size=1, max_size=1)
    try:
        with monkeypatch.context() as patched:
            patched.setattr(migrate, "available_migrations", lambda: [m for m in shipped if m.version <= 15])
            await migrate.migrate(pool)
    finally:
        await pool.close()
    return empty_dsn


@pytest.fixture
def prefix() -> str:
    # Roles belong to the whole server, which every test database shares: one prefix per test.
    return f"t{uuid.uuid4().hex[:8]}_"


async def legacy_role(pool: Pool, prefix: str, namespace: str, namespace_uid: str) -> str:
    """The role an earlier release's operator made for the namespace, and its row in `headrace.tenants`."""
    group, role = f"{prefix}tenant", f"{prefix}ns_{uuid.UUID(namespace_uid).hex}"
    if not await pool.fetchval("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", group):
        await pool.execute(f'CREATE ROLE "{group}" NOLOGIN')
        await pool.execute("SELECT headrace.grant_tenant_access($1)", group)
    await pool.execute(f"""CREATE ROLE "{role}" LOGIN IN ROLE "{group}" PASSWORD 'legacy'""")
    await pool.execute(
        "INSERT INTO headrace.tenants (role, namespace, namespace_uid) VALUES ($1, $2, $3)",
        role,
        namespace,
        uuid.UUID(namespace_uid),
    )
    return role


def legacy_secret(namespace: str, role: str | None, url: str) -> dict[str, Any]:
    """The Secret an earlier release wrote (`role`), or one of the same name that someone else made (None)."""
    annotations = {"headrace.io/database-role": role} if role else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": LEGACY_SECRET,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "annotations": annotations,
        },
        "data": {"DATABASE_URL": base64.b64encode(url.encode()).decode()},
    }


def namespace_uid(emulator: kmock.KubernetesEmulator, name: str) -> str:
    return str(emulator.objects[kmock.resource(NAMESPACES), None, name]["metadata"]["uid"])


def role_url(dsn: str, role: str) -> str:
    """The URL the earlier release wrote into the Secret: the owner's, with the role's name and password."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{role}:legacy@{parts.netloc.rsplit('@', 1)[-1]}"))


async def test_the_roles_are_dropped_and_each_namespace_secret_deleted_once(
    op: Operator, pool: Pool, dsn: str, emulator: kmock.KubernetesEmulator, prefix: str
) -> None:
    # default and team-a have live jobs; team-b had one (deleted since, so its Secret went with it).
    first, other = ij("first"), ij("other", namespace="team-a")
    await apply(op, first)
    await apply(op, other)
    roles = {
        name: await legacy_role(pool, prefix, name, namespace_uid(emulator, name))
        for name in ("default", "team-a", "team-b")
    }
    emulator.objects[kmock.resource(SECRETS), "default", LEGACY_SECRET] = legacy_secret(
        "default", roles["default"], role_url(dsn, roles["default"])
    )
    # team-a's Secret of that name is someone else's (no annotation of ours): it stays.
    emulator.objects[kmock.resource(SECRETS), "team-a", LEGACY_SECRET] = legacy_secret("team-a", None, "x")
    # A worker of the earlier release, connected with its namespace's role.
    worker = await asyncpg.connect(role_url(dsn, roles["default"]))
    try:
        assert await worker.fetchval("SELECT count(*) FROM headrace.jobs") == 1  # its namespace's, under RLS
        await migrate.migrate(pool)  # the upgrade's hook: the role keeps its login, and reads nothing
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await worker.fetchval("SELECT count(*) FROM headrace.jobs")

        dropped = await legacy_roles.drop_roles(pool)
        assert set(dropped) == {*roles.values(), f"{prefix}tenant"}
        left = await pool.fetch("SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", prefix)
        assert left == []
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await worker.fetchval("SELECT count(*) FROM headrace.jobs")  # its session was ended
    finally:
        await worker.close(timeout=5)
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(role_url(dsn, roles["default"]))

    legacy = await legacy_roles.legacy_secrets(pool)
    assert {found.namespace for found in legacy.values()} == {"default", "team-a"}  # team-b had no live job
    runtime = Runtime(legacy_secrets=LegacySecrets(legacy))
    await apply(op, first, runtime=runtime)
    await apply(op, other, runtime=runtime)
    assert not exists(emulator, SECRETS, LEGACY_SECRET, "default")
    assert exists(emulator, SECRETS, LEGACY_SECRET, "team-a")
    assert await pool.fetchval("SELECT count(*) FROM headrace.tenants") == 0
    assert runtime.legacy_secrets.pending == {}
    # Done: another start finds nothing to drop and nothing to delete.
    assert await legacy_roles.drop_roles(pool) == []
    assert await legacy_roles.legacy_secrets(pool) == {}


async def test_a_worker_job_of_an_earlier_release_is_replaced_by_one_that_calls_the_ingest_service(
    op: Operator, pool: Pool, emulator: kmock.KubernetesEmulator
) -> None:
    await migrate.migrate(pool)
    raw, _ = await apply(op, ij("first"))
    key = (kmock.resource(JOBS), "default", "first-run-1")
    earlier = json.loads(json.dumps(dict(emulator.objects[key]), default=dict))
    (container,) = earlier["spec"]["template"]["spec"]["containers"]
    container["env"] = [
        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": LEGACY_SECRET, "key": "DATABASE_URL"}}}
    ]
    emulator.objects[key] = earlier

    _, events = await apply(op, raw)
    assert not exists(emulator, JOBS, "first-run-1")
    assert [(e.reason, e.message) for e in events if e.reason == "ReplacedJob"] == [
        ("ReplacedJob", "Replacing worker Job first-run-1 of run 1: its pods were made by an earlier release")
    ]
    _, events = await apply(op, raw)
    (container,) = emulator.objects[key]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HEADRACE_INGEST_URL"] == op.config.ingest_url and "DATABASE_URL" not in env
    assert "CreatedJob" in [e.reason for e in events]
