"""`helm upgrade` of a running release with pending migrations, on the real control plane: every document is kept.

The previous release (tests/release.py: its chart and its code) is installed as a platform team would
have installed it: its pre-install hook migrates the database to its own schema, and its operator runs
an IngestionJob to Succeeded with its own worker pods. Then `helm upgrade --wait` moves the release to
this tree's chart and image: the pre-upgrade hook applies the pending migrations while the previous
release's operator and API are still running, and only then are they replaced.

Why PREVIOUS_RELEASE: it is built for schema 2 and this tree for the newest migration, so every
migration since 0003 (run history, run outcomes, per-namespace roles under row-level security,
embeddings, the run-progress index) is pending at the upgrade. The previous release predates the
`compatible-from` headers, so it is also the hardest case: its code accepts only its own schema.

The previous release's pods run as every pod does, inside the image `make image` built (read-only root,
the pod's uid, its /tmp emptyDir, volumes and env): for its tag (`:previous`, `:roles`) the stand-in kubelet
binds the unpacked previous `headrace` package read-only into that image at /opt/previous, first on
PYTHONPATH (`earlier_release`). So its code runs on this image's Python and packages. Why not the
previous release's own image, from its own Dockerfile: that would add two image builds to every
`make test`, the schema-2 release has no lock file to rebuild its packages from, and every module of
both releases imports in this image (bar the LangChain and LlamaIndex integrations, which no pod runs);
docs/testing.md says more. The test reuses the session's control plane and kubelet and ingests one
small folder (26 files).
"""

import asyncio
import dataclasses
import json
import shutil
import signal
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from headrace.store import migrate
from tests.conftest import with_database
from tests.e2e.conftest import IMAGE_REPOSITORY, chart_for_this_control_plane
from tests.e2e.test_cluster import (
    DEMO_CORPUS,
    READER_ROLE,
    ROOT,
    Cluster,
    Terminal,
    _admin,
    assert_every_document_once,
    assert_no_database_url,
    claim_manifest,
    get,
)
from tests.kube.controlplane import CRD_FILE, ControlPlane
from tests.kube.kubelet import Image, Kubelet
from tests.release import PREVIOUS_RELEASE, ROLES_RELEASE, unpack_previous_release

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NAMESPACE, TEAM, RELEASE = "headrace-upgrade", "upgrade-team", "upgrade"
"""The release's namespace, the application team's, and the release name (objects are `upgrade-headrace-*`)."""
PREVIOUS_IMAGE = f"{IMAGE_REPOSITORY}:previous"
ROLES_IMAGE = f"{IMAGE_REPOSITORY}:roles"
ROLE_PREFIX = "hrupgrade_"
"""Postgres roles span the server: the roles release's own prefix, apart from any other test's."""

ROLES_NAMESPACE, ROLES_TEAM, ROLES_RELEASE_NAME = "headrace-roles", "roles-team", "roles"
"""The same for the upgrade from per-namespace roles: namespaces of its own (a deleted namespace's
PersistentVolumeClaim keeps its protection finalizer here, with no controller to remove it)."""


def values(team: str) -> str:
    """Values both releases take: one namespace watched (other tests' IngestionJobs are not ours to serve)
    and no cluster-wide aggregated roles (test_cluster.py's release owns those names)."""
    return (
        f"--set image.repository={IMAGE_REPOSITORY} --set 'operator.watchNamespaces={{{team}}}' "
        "--set rbac.aggregateClusterRoles=false"
    )


VALUES = values(TEAM)

CLAIM = "manual"


def job_manifest(team: str, workers: str = "{min: 1, max: 2}") -> str:
    """The IngestionJob `manual`, with fields the previous releases' CRDs already had."""
    return f"""\
apiVersion: headrace.io/v1alpha1
kind: IngestionJob
metadata: {{name: manual, namespace: {team}}}
spec:
  source: {{volume: {{claimName: {CLAIM}, path: .}}}}
  workers: {workers}
"""


JOB = job_manifest(TEAM)
CLAIM_MANIFEST = claim_manifest(TEAM, CLAIM)
QUERIES = ("devil", "baal", "zeal", "lawyer", "woman")
"""Words to search for: `devil` is in every file of the corpus."""


@pytest.fixture
def upgrade(
    control_plane: ControlPlane, kubelet: Kubelet, postgres_server: str, tmp_path: Path
) -> Iterator[tuple[Cluster, Path]]:
    """A terminal, an empty database, the corpus, and the previous release's chart (returned beside it)."""
    yield from _release(
        control_plane, kubelet, postgres_server, tmp_path, PREVIOUS_RELEASE, PREVIOUS_IMAGE, (NAMESPACE, TEAM, RELEASE)
    )


@pytest.fixture
def roles_upgrade(
    control_plane: ControlPlane, kubelet: Kubelet, postgres_server: str, tmp_path: Path
) -> Iterator[tuple[Cluster, Path]]:
    """The same with the last release whose workers held a Postgres role of their namespace."""
    names = (ROLES_NAMESPACE, ROLES_TEAM, ROLES_RELEASE_NAME)
    yield from _release(control_plane, kubelet, postgres_server, tmp_path, ROLES_RELEASE, ROLES_IMAGE, names)


def _release(
    control_plane: ControlPlane,
    kubelet: Kubelet,
    postgres_server: str,
    tmp_path: Path,
    commit: str,
    tag: str,
    names: tuple[str, str, str],
) -> Iterator[tuple[Cluster, Path]]:
    namespace, team, release = names
    previous = unpack_previous_release(tmp_path / "previous", "headrace", "charts/headrace", commit=commit)
    kubelet.add_image(tag, earlier_release(kubelet.images[IMAGE_REPOSITORY], previous / "headrace"))
    database = f"upgrade_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(postgres_server, f"CREATE DATABASE {database}"))
    corpus = tmp_path / "corpus"
    shutil.copytree(DEMO_CORPUS / "devils-dictionary", corpus)
    sh = Terminal(control_plane, tmp_path)
    files = sum(1 for _ in corpus.iterdir())
    cluster = Cluster(sh, kubelet, with_database(postgres_server, database), corpus, files, release=namespace)
    chart = chart_for_this_control_plane(previous / "charts" / "headrace", previous)
    crd = chart / "templates" / "crds" / "ingestionjobs.yaml"
    crd.write_text(without_cel_rules(crd.read_text()))
    yield cluster, chart

    # Delete the job while an operator serves it; then whatever a failure left behind.
    sh(f"kubectl -n {team} delete ij --all --timeout=60s", check=False)
    sh(f'kubectl -n {team} patch ij manual --type=merge -p \'{{"metadata":{{"finalizers":null}}}}\'', check=False)
    sh(f"helm -n {namespace} uninstall {release} --wait", check=False)
    sh(f"kubectl delete namespace {namespace} {team} --wait=false", check=False)
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))  # whatever happened
    asyncio.run(_admin(postgres_server, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
    asyncio.run(_drop_roles(postgres_server))


PREVIOUS_CODE = "/opt/previous"
"""Where an earlier release's `headrace` package is bound in the image, first on PYTHONPATH."""


def earlier_release(image: Image, package: Path) -> Image:
    """This tree's image running an earlier release's code: its `headrace` package (`package`) bound
    read-only at PREVIOUS_CODE and first on PYTHONPATH, so it runs on the image's Python and packages
    (every module of both releases imports there, bar the LangChain and LlamaIndex integrations no pod runs)."""
    env = {**image.env, "PYTHONPATH": PREVIOUS_CODE}
    return dataclasses.replace(image, env=env, binds=((package, f"{PREVIOUS_CODE}/headrace"),))


def without_cel_rules(crd: str) -> str:
    """The previous release's CRD without its `x-kubernetes-validations`: two of its rules (on `chunking`
    and `workers`) fail against their own `default: {}`, which API servers with CEL evaluate (see the
    design brief's field notes; this tree guards them with `has()`), so this server refuses that CRD
    whole. The rules guard input, not stored data: the upgrade does not depend on them."""
    kept, skipping = [], ""
    for line in crd.splitlines(keepends=True):
        if skipping and line.startswith((skipping + "- ", skipping + "  ")):
            continue
        skipping = ""
        if line.strip() == "x-kubernetes-validations:":
            skipping = line[: len(line) - len(line.lstrip())]
            continue
        kept.append(line)
    return "".join(kept)


async def _drop_roles(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for role in await conn.fetch("SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", ROLE_PREFIX):
            await conn.execute(f'DROP ROLE IF EXISTS "{role["rolname"]}"')
    finally:
        await conn.close()


async def test_helm_upgrade_with_pending_migrations_keeps_every_document_searchable(
    upgrade: tuple[Cluster, Path],
) -> None:
    cluster, previous_chart = upgrade
    sh = cluster.sh
    for namespace in (NAMESPACE, TEAM):  # the previous release's workers read the owner's Secret in theirs
        sh(f"kubectl create namespace {namespace}")
        secret = f"--from-literal=DATABASE_URL='{cluster.dsn}'"
        sh(f"kubectl -n {namespace} create secret generic headrace-database {secret}")
    take = " --take-ownership" if "NotFound" not in sh("kubectl get crd ingestionjobs.headrace.io", check=False) else ""

    # The previous release, its migration hook, and a job its operator and workers run to the end.
    cluster.helm(f"helm install {RELEASE} {previous_chart} -n {NAMESPACE} {VALUES} --set image.tag=previous{take}")
    db = await asyncpg.connect(cluster.dsn)
    try:
        previous_version = await db.fetchval("SELECT max(version) FROM headrace.schema_migrations")
        assert previous_version < migrate.expected_version(), f"no pending migration from {PREVIOUS_RELEASE}"
        sh(f"kubectl apply -f - <<'EOF'\n{CLAIM_MANIFEST}EOF")
        cluster.kubelet.add_claim(TEAM, CLAIM, cluster.corpus)
        sh(f"kubectl apply -f - <<'EOF'\n{JOB}EOF")
        cluster.wait_succeeded(TEAM, "manual")
        uid = uuid.UUID(sh(f"kubectl -n {TEAM} get ij manual -o jsonpath={{.metadata.uid}}"))
        workers = {p["spec"]["containers"][0]["image"] for p in pods(sh, TEAM)}
        assert workers == {PREVIOUS_IMAGE}, workers
        stored = await documents(db, uid)
        assert len(stored) == cluster.corpus_files and all(d["state"] == "ingested" for d in stored.values())
        chunks = await chunk_ids(db, uid)

        sh(f"kubectl apply -f - <<'EOF'\n{READER_ROLE.format(ns=TEAM)}EOF")
        found = search_all(cluster, sh(f"kubectl -n {TEAM} create token reader").strip(), keyword="")
        assert {uri for uri, _ in found["devil"]} == set(stored), found  # every document, through the previous API

        # The upgrade: this tree's chart and image. Its hook migrates while the previous pods still serve.
        running = {p["metadata"]["name"] for p in pods(sh, NAMESPACE)}
        cluster.helm(
            f"helm upgrade {RELEASE} {chart_for_this_control_plane(ROOT / 'charts' / 'headrace', sh.cwd)} "
            f"-n {NAMESPACE} {VALUES} --set image.tag=current --take-ownership"
        )
        applied = await db.fetch(
            "SELECT version, applied_at FROM headrace.schema_migrations WHERE version > $1 ORDER BY 1", previous_version
        )
        assert [m["version"] for m in applied] == [
            m.version for m in migrate.available_migrations() if m.version > previous_version
        ]
        # As docs/operations.md says: the copy the previous release's workers read goes; this release's need none.
        sh(f"kubectl -n {TEAM} delete secret headrace-database")
        replaced = [p for p in pods(sh, NAMESPACE) if p["metadata"]["name"] not in running]
        assert {p["spec"]["containers"][0]["image"] for p in replaced} == {f"{IMAGE_REPOSITORY}:current"}, replaced
        assert {p["metadata"]["name"] for p in pods(sh, NAMESPACE)}.isdisjoint(running)
        last_applied = max(m["applied_at"] for m in applied).replace(microsecond=0)
        assert all(created(p) >= last_applied for p in replaced), "a new pod started before the migrations ended"

        # Every document and chunk is still there. This release embeds by default and the previous one had no
        # embeddings, so its operator resumes the job with run 2, which embeds the stored chunks (each such
        # document counts as updated) without re-ingesting any. Status, `kubectl get ij` and the API say so.
        assert await documents(db, uid) == stored
        assert await chunk_ids(db, uid) == chunks
        resumed(cluster)
        cluster.wait("run 2 to succeed", lambda: finished(cluster, 2), TEAM, NAMESPACE)
        assert_run(cluster, "updated")
        embedded = await db.fetchval("SELECT count(*) FROM headrace.embeddings WHERE chunk_id = ANY($1)", list(chunks))
        assert embedded == len(chunks), "run 2 left chunks without a vector"
        events = sh(
            f"kubectl -n {TEAM} get events --field-selector reason=RunStarted -o jsonpath='{{.items[*].message}}'"
        )
        assert "Started run 2: source, chunking or embedding changed" in events, events
        row = sh.get_ij(TEAM)["manual"]
        assert (row["PHASE"], row["DOCUMENTS"], row["FAILED"]) == ("Succeeded", str(cluster.corpus_files), "0"), row
        reader = sh(f"kubectl -n {TEAM} create token reader").strip()
        api = cluster.kubelet.port_forward(NAMESPACE, f"{RELEASE}-headrace-api")
        shown = get(f"{api}/v1/namespaces/{TEAM}/ingestionjobs/manual", reader)
        assert shown.status_code == 200, shown.text
        assert (shown.json()["phase"], shown.json()["progress"]["succeeded"]) == ("Succeeded", cluster.corpus_files)
        assert search_all(cluster, reader) == found
        assert await documents(db, uid) == stored, "a document was re-ingested or lost"
        assert await chunk_ids(db, uid) == chunks

        # A run asked for by hand, by this release's operator and workers, skips every unchanged document.
        sh(f"kubectl -n {TEAM} annotate ij manual headrace.io/run-requested-at=after-upgrade --overwrite")
        cluster.wait("run 3 to succeed", lambda: finished(cluster, 3), TEAM, NAMESPACE)
        assert_run(cluster, "unchanged")
        assert await documents(db, uid) == stored, "a document was re-ingested or lost"
        assert await chunk_ids(db, uid) == chunks
        assert search_all(cluster, reader) == found
        # The previous release's finished Job stays until its TTL; its pods name the Secret deleted above.
        sh(f"kubectl -n {TEAM} delete job manual-run-1 --cascade=foreground --timeout=60s")
        assert_no_database_url(cluster, TEAM)
    finally:
        await db.close()


def pods(sh: Terminal, namespace: str) -> list[dict[str, Any]]:
    """The namespace's pods that are not being deleted."""
    items = json.loads(sh(f"kubectl -n {namespace} get pods -o json"))["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def created(pod: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(pod["metadata"]["creationTimestamp"])


async def documents(db: asyncpg.Connection, job_uid: uuid.UUID) -> dict[str, dict[str, Any]]:
    """The job's documents by URI: identity, content hash, state and chunk count."""
    rows = await db.fetch(
        "SELECT id, uri, content_hash, state, chunk_count FROM headrace.documents WHERE job_uid = $1", job_uid
    )
    return {r["uri"]: dict(r) for r in rows}


async def chunk_ids(db: asyncpg.Connection, job_uid: uuid.UUID) -> set[Any]:
    rows = await db.fetch(
        "SELECT c.id FROM headrace.chunks c JOIN headrace.documents d ON d.id = c.document_id WHERE d.job_uid = $1",
        job_uid,
    )
    return {r["id"] for r in rows}


def search_all(cluster: Cluster, token: str, *, keyword: str = "&mode=keyword") -> dict[str, set[tuple[str, int]]]:
    """The chunks (URI, position) each of QUERIES finds in the team's namespace, every page of them, by
    keyword search through the API with a ServiceAccount token (`keyword=""` for the previous release's
    API, whose only search was keyword search and which refuses a `mode`)."""
    api = cluster.kubelet.port_forward(NAMESPACE, f"{RELEASE}-headrace-api")
    found: dict[str, set[tuple[str, int]]] = {}
    for query in QUERIES:
        hits, cursor = found.setdefault(query, set()), ""
        while cursor is not None:
            url = f"{api}/v1/search?q={query}&namespace={TEAM}&limit=100{keyword}"
            answer = get(f"{url}&cursor={cursor}" if cursor else url, token)
            assert answer.status_code == 200, answer.text
            hits |= {(hit["uri"], hit["chunk"]) for hit in answer.json()["items"]}
            cursor = answer.json()["nextCursor"]
    return found


def status(cluster: Cluster, team: str = TEAM) -> dict[str, Any]:
    return dict(json.loads(cluster.sh(f"kubectl -n {team} get ij manual -o jsonpath={{.status}}")))


def resumed(cluster: Cluster) -> None:
    """Until this release's operator has taken the job over (it writes a condition type the previous
    release did not have)."""
    cluster.wait(
        "this release's operator to resume the job",
        lambda: any(c["type"] == "EmbeddingsReady" for c in status(cluster).get("conditions", [])),
        TEAM,
        NAMESPACE,
    )


def assert_run(cluster: Cluster, outcome: str, team: str = TEAM) -> None:
    """The current run gave every document `outcome` (and none any other), and its status counts them."""
    now = status(cluster, team)
    others = {name: 0 for name in ("added", "updated", "unchanged", "deleted", "failed")}
    assert now["summary"] == {**now["summary"], **others, outcome: cluster.corpus_files}, now
    assert (now["progress"]["succeeded"], now["progress"]["failed"]) == (cluster.corpus_files, 0), now


def finished(cluster: Cluster, run: int, team: str = TEAM) -> bool:
    now = status(cluster, team)
    assert now.get("phase") != "Failed" and now.get("run", 0) <= run, now
    return bool(now.get("run") == run and now.get("phase") == "Succeeded")


async def test_helm_upgrade_from_per_namespace_roles_drops_them_and_replaces_the_running_workers(
    roles_upgrade: tuple[Cluster, Path],
) -> None:
    """From the last release whose workers held a Postgres role: the upgrade drops every role it made and
    deletes its Secret, and a run in progress goes on. Its worker does not keep working (its role is
    gone): the new operator deletes its Job, whose pod stops, and makes this release's Job of the same
    name, whose pods finish the run through the ingest service, every document once."""
    cluster, previous_chart = roles_upgrade
    sh = cluster.sh
    sh(f"kubectl create namespace {ROLES_NAMESPACE}")
    sh(
        f"kubectl -n {ROLES_NAMESPACE} create secret generic headrace-database "
        f"--from-literal=DATABASE_URL='{cluster.dsn}'"
    )
    sh(f"kubectl create namespace {ROLES_TEAM}")
    # A CRD another test left (applied by kubectl, whose fields conflict with this older chart's) is taken over.
    crd = "NotFound" not in sh("kubectl get crd ingestionjobs.headrace.io", check=False)
    take = " --take-ownership --force-conflicts" if crd else ""
    cluster.helm(
        f"helm install {ROLES_RELEASE_NAME} {previous_chart} -n {ROLES_NAMESPACE} {values(ROLES_TEAM)} "
        f"--set image.tag=roles --set database.rolePrefix={ROLE_PREFIX}{take}"
    )
    db = await asyncpg.connect(cluster.dsn)
    try:
        # A run of the roles release, its one worker stopped (SIGSTOP) as soon as it runs: a worker of
        # the earlier release in the middle of a run, holding its namespace's role, at the upgrade.
        sh(f"kubectl apply -f - <<'EOF'\n{claim_manifest(ROLES_TEAM, CLAIM)}EOF")
        cluster.kubelet.add_claim(ROLES_TEAM, CLAIM, cluster.corpus)
        sh(f"kubectl apply -f - <<'EOF'\n{ONE_WORKER_JOB}EOF")
        cluster.wait(
            "the roles release's worker", lambda: bool(cluster.kubelet.running(ROLES_TEAM, "manual-run-1")), ROLES_TEAM
        )
        (worker,) = cluster.kubelet.running(ROLES_TEAM, "manual-run-1")
        worker.kill(signal.SIGSTOP)
        assert worker.body["spec"]["containers"][0]["image"] == ROLES_IMAGE
        secret = json.loads(sh(f"kubectl -n {ROLES_TEAM} get secret {LEGACY_SECRET} -o json"))
        role = secret["metadata"]["annotations"]["headrace.io/database-role"]
        assert role.startswith(ROLE_PREFIX) and await roles(db) == {role, f"{ROLE_PREFIX}tenant"}
        uid = uuid.UUID(sh(f"kubectl -n {ROLES_TEAM} get ij manual -o jsonpath={{.metadata.uid}}"))
        assert status(cluster, ROLES_TEAM)["phase"] == "Running"

        cluster.helm(
            f"helm upgrade {ROLES_RELEASE_NAME} {chart_for_this_control_plane(ROOT / 'charts' / 'headrace', sh.cwd)} "
            f"-n {ROLES_NAMESPACE} {values(ROLES_TEAM)} --set image.tag=current --take-ownership"
        )
        # The roles are gone as soon as the new operator has started; the Secret once it served the job.
        assert await roles(db) == set()
        cluster.wait(
            f"the roles release's Secret in {ROLES_TEAM} to be deleted",
            lambda: "NotFound" in sh(f"kubectl -n {ROLES_TEAM} get secret {LEGACY_SECRET}", check=False),
            ROLES_TEAM,
            ROLES_NAMESPACE,
        )
        assert await db.fetchval("SELECT count(*) FROM headrace.tenants") == 0
        # The same run, finished by this release's workers, every document once.
        cluster.wait("run 1 to succeed", lambda: finished(cluster, 1, ROLES_TEAM), ROLES_TEAM, ROLES_NAMESPACE)
        assert worker.deleted.is_set() and worker.process is not None and worker.process.poll() is not None
        events = sh(
            f"kubectl -n {ROLES_TEAM} get events --field-selector reason=ReplacedJob "
            "-o jsonpath='{.items[*].message}'"
        )
        assert "Replacing worker Job manual-run-1 of run 1: its pods were made by an earlier release" in events
        finishers = [p for p in pods(sh, ROLES_TEAM) if p["metadata"]["name"].startswith("manual-run-1")]
        assert finishers and {p["spec"]["containers"][0]["image"] for p in finishers} == {f"{IMAGE_REPOSITORY}:current"}
        await assert_every_document_once(db, uid, cluster.corpus_files)
        assert_run(cluster, "added", ROLES_TEAM)
        assert_no_database_url(cluster, ROLES_TEAM)
    finally:
        await db.close()


LEGACY_SECRET = "headrace-worker-database"
ONE_WORKER_JOB = job_manifest(ROLES_TEAM, "{min: 1, max: 1, autoscaling: {mode: none}}")
"""One worker, so that stopping it stops the run."""


async def roles(db: asyncpg.Connection) -> set[str]:
    """The roles release's Postgres roles still on the server."""
    rows = await db.fetch("SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", ROLE_PREFIX)
    return {row["rolname"] for row in rows}
