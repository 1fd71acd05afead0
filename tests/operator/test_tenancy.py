"""The operator's side of tenant isolation: the namespace's role and Secret, shared mode's warning, the role
disabled with the namespace's last job, and adoption of retained data by namespace UID."""

import asyncio
import base64
import dataclasses
import uuid
from typing import Any

import asyncpg
import kmock
import kopf
import pytest

from headrace.operator import reconcile
from headrace.operator.kube import KubeError
from headrace.operator.reconcile import Operator
from headrace.store import jobs, tenants
from tests.operator.conftest import Namespaces, ij
from tests.operator.test_reconcile import NOW, apply, conditions, drain, exists

pytestmark = pytest.mark.postgres

SECRETS = "v1/secrets"
JOBS = "batch/v1/jobs"


def secret(emulator: kmock.KubernetesEmulator, namespace: str = "default") -> dict[str, Any]:
    return dict(emulator.objects[kmock.resource(SECRETS), namespace, "headrace-worker-database"])


def database_url(found: dict[str, Any]) -> str:
    return base64.b64decode(found["data"]["DATABASE_URL"]).decode()


def worker_secret_ref(emulator: kmock.KubernetesEmulator, name: str, namespace: str = "default") -> str:
    job = emulator.objects[kmock.resource(JOBS), namespace, name]
    (env,) = [e for e in job["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "DATABASE_URL"]
    return env["valueFrom"]["secretKeyRef"]["name"]  # type: ignore[no-any-return]


async def test_roles_mode_writes_the_namespace_credential_not_the_owner_url(
    op: Operator, emulator: kmock.KubernetesEmulator, namespaces: Namespaces, dsn: str
) -> None:
    first, _ = await apply(op, ij("first"))
    second, _ = await apply(op, ij("second"))
    other, _ = await apply(op, ij("other", namespace="team-a"))

    found = secret(emulator)
    url = database_url(found)
    assert "owner" not in url and "secret@" not in url, "the owner's credential never leaves the operator"
    role = found["metadata"]["annotations"]["headrace.io/database-role"]
    assert url.startswith(f"postgresql://{role}:") and url.endswith("@db.example:5432/headrace?sslmode=require")
    # Owned by every job of the namespace, controlled by none: it goes when the last of them goes.
    owners = found["metadata"]["ownerReferences"]
    assert {o["uid"] for o in owners} >= {second["metadata"]["uid"]}
    assert not any(o.get("controller") or o.get("blockOwnerDeletion") for o in owners)
    assert worker_secret_ref(emulator, "first-run-1") == "headrace-worker-database"

    # One role per namespace UID, and the role reads its namespace's jobs only.
    other_role = secret(emulator, "team-a")["metadata"]["annotations"]["headrace.io/database-role"]
    assert other_role != role
    tenant_url = tenants.TenantCredential(role, "", NOW).url(dsn)  # the test server trusts local logins
    conn = await asyncpg.connect(tenant_url)
    try:
        names = {r["name"] for r in await conn.fetch("SELECT name FROM headrace.jobs")}
    finally:
        await conn.close()
    assert names == {"first", "second"}
    assert "TenantIsolated" not in conditions(first)
    assert other["status"]["phase"] == "Running"


async def test_a_lost_secret_gets_a_new_password(op: Operator, emulator: kmock.KubernetesEmulator) -> None:
    await apply(op, ij("first"))
    before = database_url(secret(emulator))
    await apply(op, ij("first"))  # nothing due: the same password stays
    assert database_url(secret(emulator)) == before
    del emulator.objects[kmock.resource(SECRETS), "default", "headrace-worker-database"]
    await apply(op, ij("second"))
    assert database_url(secret(emulator)) != before


async def test_rotation_waits_for_the_namespace_runs_to_finish(
    op: Operator, emulator: kmock.KubernetesEmulator
) -> None:
    op = dataclasses.replace(op, config=op.config.model_copy(update={"tenant_password_max_age_hours": 1}))
    raw, _ = await apply(op, ij("first"))
    before = database_url(secret(emulator))
    await op.pool.execute("UPDATE headrace.tenants SET rotated_at = rotated_at - interval '2 hours'")  # now due
    await apply(op, ij("second"))
    assert database_url(secret(emulator)) == before, "first's run is unfinished: its workers hold the password"
    await drain(op, raw["metadata"]["uid"])
    second = await jobs.find_job(op.pool, "default", "second")
    assert second is not None
    await drain(op, str(second.uid))
    await apply(op, ij("third"))
    assert database_url(secret(emulator)) != before


async def test_shared_mode_warns_on_every_job_and_uses_the_installation_secret(
    op: Operator, emulator: kmock.KubernetesEmulator
) -> None:
    op = dataclasses.replace(op, config=op.config.model_copy(update={"tenant_credentials": "shared"}))
    raw, _ = await apply(op, ij())
    isolated = conditions(raw)["TenantIsolated"]
    assert (isolated["status"], isolated["reason"]) == ("False", "SharedDatabaseCredential")
    assert raw["status"]["phase"] == "Running", "a warning, not a failure"
    assert worker_secret_ref(emulator, "handbook-run-1") == "headrace-database"
    assert (kmock.resource(SECRETS), "default", "headrace-worker-database") not in emulator.objects


async def test_the_role_stops_logging_in_with_the_namespace_last_job(
    op: Operator, emulator: kmock.KubernetesEmulator
) -> None:
    first, _ = await apply(op, ij("first", spec={"source": {"volume": {"claimName": "d"}}, "retention": "Retain"}))
    second, _ = await apply(op, ij("second", spec={"source": {"volume": {"claimName": "d"}}, "retention": "Delete"}))
    role = secret(emulator)["metadata"]["annotations"]["headrace.io/database-role"]

    async def can_login() -> bool:
        return bool(await op.pool.fetchval("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", role))

    await reconcile.finalize(op, kopf.Body(first))
    assert await can_login(), "second still runs there"
    await reconcile.finalize(op, kopf.Body(second))
    assert not await can_login()
    await apply(op, ij("third"))
    assert await can_login(), "a new job there brings the role back, with a new password"


async def test_recreated_job_adopts_and_recreated_namespace_does_not(
    op: Operator, emulator: kmock.KubernetesEmulator, namespaces: Namespaces
) -> None:
    spec = {"source": {"volume": {"claimName": "d"}}, "retention": "Retain"}
    first, _ = await apply(op, ij(spec=spec))
    await drain(op, first["metadata"]["uid"], total=0)
    await reconcile.finalize(op, kopf.Body(first))

    again, events = await apply(op, ij(spec=spec))
    assert "AdoptedData" in [e.reason for e in events]
    assert again["status"]["run"] == 2 and again["status"]["jobName"] == "handbook-run-2"
    runs = await jobs.list_runs(op.pool, uuid.UUID(again["metadata"]["uid"]))
    assert runs[0].reason == f"adopted the data of uid {first['metadata']['uid']}"
    await reconcile.finalize(op, kopf.Body(again))

    namespaces.create("default")  # deleted and re-created, by someone else
    stranger, events = await apply(op, ij(spec=spec))
    assert "AdoptedData" not in [e.reason for e in events]
    assert stranger["status"]["run"] == 1


async def test_a_namespace_recreated_behind_a_bypassed_finalizer_sees_nothing(
    op: Operator, emulator: kmock.KubernetesEmulator, namespaces: Namespaces
) -> None:
    """The finalizer was removed by hand, so the job's row is still live when its namespace goes and comes back."""
    await apply(op, ij("first"))
    role = secret(emulator)["metadata"]["annotations"]["headrace.io/database-role"]
    assert await jobs.find_job(op.pool, "default", "first") is not None

    new_uid = namespaces.create("default")  # seen by the operator's namespace watch
    await reconcile.namespace_changed(op, name="default", uid=new_uid, deleted=False)
    assert await jobs.find_job(op.pool, "default", "first") is None
    assert await jobs.namespaces(op.pool) == []

    old_uid = await op.pool.fetchval("SELECT namespace_uid FROM headrace.tenants WHERE role = $1", role)
    await reconcile.namespace_changed(op, name="default", uid=str(old_uid), deleted=True)
    assert not await op.pool.fetchval("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", role)


async def _batched(op: Operator, bodies: list[dict[str, Any]]) -> list[Any]:
    """Apply the jobs at once while their namespace's Secret is being written, so that all of them wait for
    the next write together; returns what each apply returned or raised."""
    namespace = bodies[0]["metadata"]["namespace"]
    async with op.credential_locks[namespace]:
        applying = [asyncio.create_task(apply(op, body)) for body in bodies]
        while sum(len(batch.jobs) for batch in op.credential_batches.values()) < len(bodies):  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # a batch has no event to wait on
    return await asyncio.gather(*applying, return_exceptions=True)


async def test_jobs_of_a_namespace_applied_at_once_share_one_secret_write(
    op: Operator, emulator: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    request = op.kube.request

    async def counted(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        if "/secrets" in path:
            calls.append(method)
        return await request(method, path, *args, **kwargs)

    monkeypatch.setattr(op.kube, "request", counted)
    bodies = [ij(f"burst-{i}") for i in range(8)]
    results = await _batched(op, bodies)

    assert all(raw["status"]["phase"] == "Running" for raw, _ in results)
    owners = {o["uid"] for o in secret(emulator)["metadata"]["ownerReferences"]}
    assert owners == {body["metadata"]["uid"] for body in bodies}
    assert calls == ["GET", "POST"], "one read and one write for the eight of them, not two calls each"
    # A later job joins the Secret's owners with one patch.
    later = ij("later")
    await apply(op, later)
    assert later["metadata"]["uid"] in {o["uid"] for o in secret(emulator)["metadata"]["ownerReferences"]}
    assert calls[2:] == ["GET", "PATCH"]


async def test_a_failed_secret_write_fails_every_job_that_waited_for_it(
    op: Operator, emulator: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = op.kube.request

    async def refused(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        if method == "POST" and "/secrets" in path:
            raise KubeError(403, "secrets is forbidden")
        return await request(method, path, *args, **kwargs)

    monkeypatch.setattr(op.kube, "request", refused)
    results = await _batched(op, [ij(f"burst-{i}") for i in range(3)])
    assert all(isinstance(outcome, KubeError) and outcome.status == 403 for outcome in results), results
    assert not exists(emulator, JOBS, "burst-0-run-1"), "no worker Job without its credential"
    monkeypatch.setattr(op.kube, "request", request)
    raw, _ = await apply(op, ij("burst-0"))  # the next try (kopf retries) writes it
    assert raw["status"]["phase"] == "Running"
