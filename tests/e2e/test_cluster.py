"""The whole product on a real control plane, as its users meet it, following the docs' own commands.

A platform team installs the chart with `helm install --wait` into a namespace enforcing Pod Security
"restricted"; an application team applies an IngestionJob over a volume of real files and watches it
with `kubectl get ij`; in-cluster callers search with their ServiceAccount tokens. The commands come
from docs/getting-started.md and the README (see tests/e2e/docs.py), run by bash with the real kubectl,
helm and curl, so a doc that stops working fails here. The chart's migration hook, operator, API and
the operator's worker pods run inside the built image on a stand-in kubelet (tests/kube/kubelet.py), with
the chart's ServiceAccounts and RBAC and nothing more.

Anything the server refuses (a chart object, a pod under "restricted", an RBAC verb) fails with the
server's own message: helm and kubectl print it, and waits quote the namespace's warning Events.
"""

import asyncio
import base64
import json
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import with_database
from tests.e2e.conftest import IMAGE_REPOSITORY, chart_for_this_control_plane
from tests.e2e.docs import Doc
from tests.kube.controlplane import KUBECTL, RESTRICTED, ControlPlane
from tests.kube.kubelet import Kubelet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
GETTING_STARTED = Doc(ROOT / "docs" / "getting-started.md")
README = Doc(ROOT / "README.md")
DEMO_CORPUS = ROOT / "headrace" / "samples" / "demo" / "corpus"

RELEASE, TEAM, OTHER = "headrace", "docs-team", "other-team"
"""The docs' release namespace and application team's namespace, and a team that may read neither."""
CLAIM = "handbook-docs"
WAIT = 240.0
"""Seconds any one state may take to come about on two busy cores."""


def build_corpus(folder: Path) -> int:
    """The demo corpus (The Devil's Dictionary and the Jargon File in text, Markdown and HTML) plus
    each Devil's Dictionary entry of its Markdown letters as a file of its own: a few hundred real
    documents, small and large. Returns how many files."""
    shutil.copytree(DEMO_CORPUS, folder)
    entries = folder / "devils-dictionary-entries"
    entries.mkdir()
    for letter in sorted((DEMO_CORPUS / "devils-dictionary").glob("*.md")):
        for index, entry in enumerate(letter.read_text().split("\n## ")[1:]):
            (entries / f"{letter.stem}-{index:03}.md").write_text(f"# {entry}")
    return sum(1 for p in folder.rglob("*") if p.is_file())


@dataclass
class Terminal:
    """A user's terminal: bash, with the real kubectl, helm and curl, the admin kubeconfig, and the docs'
    placeholders replaced by this test's values (`substitutions`)."""

    control_plane: ControlPlane
    cwd: Path
    substitutions: dict[str, str] = field(default_factory=dict)

    def __call__(self, command: str, *, check: bool = True, timeout: float = 300) -> str:
        """The command's output (with check, its stdout, failing on a non-zero exit; else stdout and stderr)."""
        process = self.start(command)
        try:
            out, err = process.communicate(timeout=timeout)
        finally:
            process.kill()
        if check and process.returncode != 0:
            raise AssertionError(f"`{process.args[-1]}` failed ({process.returncode}):\n{out}\n{err}")
        if created := re.fullmatch(r"kubectl create namespace (\S+)", command):
            # What a platform team does to every namespace it hands out: enforce Pod Security "restricted".
            labels = " ".join(f"{k}={v}" for k, v in RESTRICTED.items())
            self(f"kubectl label namespace {created[1]} {labels}")
        return out if check else out + err

    def start(self, command: str) -> subprocess.Popen[str]:
        for placeholder, value in self.substitutions.items():
            command = command.replace(placeholder, value)
        env = {**self.control_plane.env(), "PATH": f"{KUBECTL.parent}:/usr/local/bin:/usr/bin:/bin"}
        return subprocess.Popen(
            ["bash", "-c", f"set -eo pipefail\n{command}"],
            cwd=self.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def get_ij(self, namespace: str) -> dict[str, dict[str, str]]:
        """`kubectl get ij` as {name: {column: value}}."""
        lines = self(f"kubectl -n {namespace} get ij").splitlines()
        header = lines[0].split()
        return {row.split()[0]: dict(zip(header, row.split(), strict=True)) for row in lines[1:]}


FORBIDDEN = re.compile(r'[\w.]+ is forbidden: User (?:[^"\\]|\\.)*')
"""The API server's RBAC refusal, as a pod's log quotes it (in a JSON string)."""


@dataclass
class Cluster:
    """What the module's tests share: the terminal, the kubelet, the database and the corpus."""

    sh: Terminal
    kubelet: Kubelet
    dsn: str
    corpus: Path
    corpus_files: int
    release: str = RELEASE
    """The release's namespace."""

    def refusals(self, namespaces: tuple[str, ...]) -> list[str]:
        """What the server refused so far: pods a controller could not create (Pod Security "restricted",
        a missing ServiceAccount), in its own words, and API calls RBAC forbade a pod, from the pod's log."""
        found = []
        for namespace in namespaces:
            events = self.kubelet.core.list_namespaced_event(namespace, field_selector="reason=FailedCreate")
            found += [f"{e.involved_object.kind} {e.involved_object.name}: {e.message}" for e in events.items]
            logged = FORBIDDEN.findall(self.kubelet.logs(namespace, tail=None))
            found += sorted({message.replace('\\"', '"') for message in logged})
        return found

    def evidence(self, namespaces: tuple[str, ...]) -> str:
        shown = [self.sh(f"kubectl -n {ns} get events --field-selector type=Warning", check=False) for ns in namespaces]
        return "\n".join(shown + [self.kubelet.logs(ns) for ns in namespaces] + [self.kubelet.notes()])

    def wait(self, what: str, ready: Callable[[], bool], *namespaces: str, timeout: float = WAIT) -> None:
        """Until `ready()`. Fails at once when the server refused something in `namespaces` (see `refusals`),
        or after `timeout` with the namespaces' warning Events and pods' output."""
        deadline = time.monotonic() + timeout
        while not ready():
            if refused := self.refusals(namespaces):
                raise AssertionError(f"waiting for {what}, the server refused:\n" + "\n".join(refused))
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.evidence(namespaces)}")
            time.sleep(0.5)

    def helm(self, command: str) -> None:
        """A `helm install/upgrade --wait`, failing as soon as the server refuses one of the release's pods."""
        process = self.sh.start(f"{command} --wait --timeout 4m")
        try:
            self.wait(f"`{command}`", lambda: process.poll() is not None, self.release, timeout=300)
        finally:
            process.kill()
        out, err = process.communicate()
        assert process.returncode == 0, f"`{command}` failed:\n{out}\n{err}\n{self.evidence((self.release,))}"

    def phase(self, namespace: str, name: str) -> str:
        return self.sh(f"kubectl -n {namespace} get ij {name} -o jsonpath={{.status.phase}}", check=False).strip()

    def generation(self, namespace: str, name: str) -> int:
        return int(self.sh(f"kubectl -n {namespace} get ij {name} -o jsonpath={{.metadata.generation}}"))

    def wait_succeeded(self, namespace: str, name: str, *, after_generation: int = 0) -> None:
        """Until the job's status says Succeeded for its current spec, one newer than `after_generation`
        (the operator itself bumps the generation once, writing spec.workers.replicas for /scale)."""

        def done() -> bool:
            job = json.loads(self.sh(f"kubectl -n {namespace} get ij {name} -o json"))
            status, generation = job.get("status", {}), job["metadata"]["generation"]
            assert status.get("phase") != "Failed", f"{name} failed: {status}"
            return bool(
                status.get("phase") == "Succeeded" and status.get("observedGeneration") == generation > after_generation
            )

        self.wait(f"IngestionJob {namespace}/{name} to succeed", done, namespace, self.release)


@pytest.fixture(scope="module")
def cluster(
    control_plane: ControlPlane, kubelet: Kubelet, postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The chart installed as docs/getting-started.md step 1a says, into a fresh, empty database."""
    work = tmp_path_factory.mktemp("e2e")
    chart = chart_for_this_control_plane(ROOT / "charts" / "headrace", work)

    database = f"e2e_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(postgres_server, f"CREATE DATABASE {database}"))
    dsn = with_database(postgres_server, database)
    sh = Terminal(
        control_plane,
        work,
        {
            "postgresql://headrace:PASSWORD@db.example.internal:5432/headrace": dsn,
            "./charts/headrace": str(chart),
            "REGISTRY/headrace": IMAGE_REPOSITORY,
        },
    )
    corpus = work / "corpus"
    yield Cluster(sh, kubelet, dsn, corpus, build_corpus(corpus))
    asyncio.run(_admin(postgres_server, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def db(cluster: Cluster) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(cluster.dsn)
    yield conn
    await conn.close()


def test_helm_install_runs_the_chart_under_pod_security_restricted(cluster: Cluster) -> None:
    sh = cluster.sh
    sh(GETTING_STARTED.command("kubectl create namespace headrace"))
    sh(GETTING_STARTED.command("kubectl -n headrace create secret generic headrace-database"))
    install = GETTING_STARTED.command("helm install headrace ./charts/headrace --namespace headrace --set")
    if "NotFound" not in sh("kubectl get crd ingestionjobs.headrace.io", check=False):
        install += " --take-ownership"  # an earlier test of this session applied the CRD without helm
    cluster.helm(install)

    pods = sh(GETTING_STARTED.command("kubectl -n headrace get pods"))
    running = [line.split() for line in pods.splitlines()[1:]]
    assert sorted(p[0].rsplit("-", 2)[0] for p in running if p[1:3] == ["1/1", "Running"]) == [
        "headrace-api",
        "headrace-api",
        "headrace-ingest",
        "headrace-ingest",
        "headrace-operator",
        "headrace-operator",
    ], pods
    sh(GETTING_STARTED.command("kubectl get crd ingestionjobs.headrace.io"))
    # One of the two operator replicas leads: it holds the Lease the chart's Role lets it write.
    lease = json.loads(sh(GETTING_STARTED.command("kubectl -n headrace get lease headrace-operator") + " -o json"))
    assert lease["spec"]["holderIdentity"], lease
    # Each pod is the built image's own process, as the chart's user, on a read-only root.
    for pod in cluster.kubelet.running(RELEASE):
        assert pod.process is not None
        status = Path(f"/proc/{pod.process.pid}/status").read_text()
        uids = re.search(r"(?m)^Uid:\s+(\d+)", status)
        assert uids is not None and uids[1] == "10001", (pod.name, status)
        root = Path(f"/proc/{pod.process.pid}/root")
        assert (root / "opt/headrace/bin/headrace").exists(), pod.name
        mounts = Path(f"/proc/{pod.process.pid}/mounts").read_text().splitlines()
        assert any(line.split()[1] == "/" and "ro" in line.split()[3].split(",") for line in mounts), mounts


async def test_an_ingestion_job_over_a_volume_succeeds_with_every_document_once(
    cluster: Cluster, db: asyncpg.Connection
) -> None:
    sh = cluster.sh
    sh(GETTING_STARTED.command("kubectl create namespace docs-team"))
    sh(f"kubectl apply -f - <<'EOF'\n{CLAIM_MANIFEST}EOF")
    cluster.kubelet.add_claim(TEAM, CLAIM, cluster.corpus)

    (sh.cwd / "handbook.yaml").write_text(GETTING_STARTED.manifest("handbook.yaml"))
    sh(GETTING_STARTED.command("kubectl apply -f handbook.yaml"))
    broken = GETTING_STARTED.command("kubectl apply -f - <<'EOF'", containing="broken")
    refused = sh(broken, check=False)
    for shown in GETTING_STARTED.output(broken):  # the guide's sample output, `...` standing for anything
        assert all(part.strip() in refused for part in shown.split("...")), f"{shown!r} not in:\n{refused}"

    cluster.wait_succeeded(TEAM, "handbook")
    # The run succeeds when its last document is stored; its workers exit a moment later, when they find
    # the queue drained, and the operator's next look at the Job shows it (WORKERS: the Job's active pods).
    cluster.wait(
        "every worker to exit once the queue drained",
        lambda: sh.get_ij(TEAM)["handbook"]["WORKERS"] == "0",
        TEAM,
        cluster.release,
    )
    row = sh.get_ij(TEAM)["handbook"]  # `kubectl -n docs-team get ij`, without -w
    assert list(row) == GETTING_STARTED.output(GETTING_STARTED.command("kubectl -n docs-team get ij -w"))[0].split()
    assert (row["PHASE"], row["PROGRESS"], row["DOCUMENTS"], row["FAILED"]) == (
        "Succeeded", "100", str(cluster.corpus_files), "0"
    ), row  # fmt: skip

    described = sh(GETTING_STARTED.command("kubectl -n docs-team describe ij handbook"))
    assert "CreatedJob" in described and "RunStarted" in described, described
    children = sh(GETTING_STARTED.command("kubectl -n docs-team get jobs,hpa,pods -l"))
    assert "job.batch/handbook-run-1" in children and "horizontalpodautoscaler" in children, children

    uid = uuid.UUID(sh(f"kubectl -n {TEAM} get ij handbook -o jsonpath={{.metadata.uid}}"))
    await assert_every_document_once(db, uid, cluster.corpus_files)
    assert_no_database_url(cluster, TEAM)


POSTGRES_URL = re.compile(r"postgres(ql)?://", re.IGNORECASE)


def assert_no_database_url(cluster: Cluster, namespace: str) -> None:
    """Nothing in the tenant's namespace opens Postgres: no Secret's value, no env var of any pod (as the
    pod spec says and as its process got it), and no file mounted into a pod names a Postgres URL. The
    workers ran anyway: they wrote through the ingest service."""
    secrets = json.loads(cluster.sh(f"kubectl -n {namespace} get secrets -o json"))["items"]
    for secret in secrets:
        for key, value in (secret.get("data") or {}).items():
            text = base64.b64decode(value).decode(errors="replace")
            assert not POSTGRES_URL.search(text), f"Secret {secret['metadata']['name']} key {key}"
    specs = json.loads(cluster.sh(f"kubectl -n {namespace} get pods -o json"))["items"]
    assert specs, f"no pod in {namespace} to look at"
    for spec in specs:
        for container in spec["spec"]["containers"]:
            for env in container.get("env") or []:
                assert not POSTGRES_URL.search(env.get("value", "")), (spec["metadata"]["name"], env)
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                assert ref is None, (spec["metadata"]["name"], env)
    with cluster.kubelet._lock:
        pods = [p for p in cluster.kubelet.pods.values() if p.namespace == namespace and not p.deleted.is_set()]
    assert pods, f"the kubelet ran no pod in {namespace}"
    for pod in pods:
        assert pod.environment.get("HEADRACE_INGEST_URL"), pod.name
        leaked = {name for name, value in pod.environment.items() if POSTGRES_URL.search(value)}
        assert leaked == set(), (pod.name, leaked)
        for path in pod.root.rglob("*"):
            if path.is_file() and not path.is_symlink() and "rootfs" not in path.parts:
                assert not POSTGRES_URL.search(path.read_text(errors="replace")), path


def claim_manifest(namespace: str, name: str) -> str:
    """A PersistentVolumeClaim for the corpus; the stand-in kubelet maps every volume to a local folder."""
    return f"""\
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  accessModes: [ReadOnlyMany]
  resources: {{requests: {{storage: 1Gi}}}}
"""


CLAIM_MANIFEST = claim_manifest(TEAM, CLAIM)


async def assert_every_document_once(db: asyncpg.Connection, job_uid: uuid.UUID, expected: int) -> None:
    """Every file is one ingested document with exactly its chunks, and no task is left behind."""
    documents = await db.fetch(
        """SELECT d.uri, d.state, d.error, d.chunk_count, count(c.id) AS chunks
           FROM headrace.documents d LEFT JOIN headrace.chunks c ON c.document_id = d.id
           WHERE d.job_uid = $1 GROUP BY d.id""",
        job_uid,
    )
    assert len(documents) == len({d["uri"] for d in documents}) == expected
    assert [d for d in documents if d["state"] != "ingested" or d["chunk_count"] != d["chunks"]] == []
    unfinished = await db.fetchval(
        "SELECT count(*) FROM headrace.tasks WHERE job_uid = $1 AND state <> 'done'", job_uid
    )
    assert unfinished == 0


READER_ROLE = """\
apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: ingestionjob-reader, namespace: {ns}}}
rules:
  - apiGroups: [headrace.io]
    resources: [ingestionjobs]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: ingestionjob-reader}}
subjects: [{{kind: ServiceAccount, name: reader, namespace: {ns}}}]
"""
"""A ServiceAccount that may `get ingestionjobs` in one namespace and nothing else."""


def test_the_api_answers_serviceaccount_tokens_for_their_namespaces_only(cluster: Cluster) -> None:
    sh = cluster.sh
    assert cluster.phase(TEAM, "handbook") == "Succeeded", "needs the job of the previous test"
    api = cluster.kubelet.port_forward(RELEASE, "headrace-api")  # for `kubectl port-forward svc/headrace-api`
    sh.substitutions["http://127.0.0.1:8080"] = api
    team_job = f"{api}/v1/namespaces/{TEAM}/ingestionjobs/handbook"

    # docs/getting-started.md step 5, verbatim: the built-in `view` role, a token, the three curl calls.
    sh(GETTING_STARTED.command("kubectl -n docs-team create serviceaccount searcher"))
    sh(GETTING_STARTED.command("kubectl -n docs-team create rolebinding searcher-view"))
    token = GETTING_STARTED.command("TOKEN=$(kubectl -n docs-team create token searcher)")
    status = json.loads(sh(f"{token}\n{GETTING_STARTED.command('curl -s', containing='/handbook')}"))
    assert (status["name"], status["phase"], status["progress"]["succeeded"]) == (
        "handbook", "Succeeded", cluster.corpus_files
    ), status  # fmt: skip
    found = json.loads(sh(f"{token}\n{GETTING_STARTED.command('curl -s', containing='mode=keyword')}"))
    assert "items" in found, found
    stream = sh(f"{token}\n{GETTING_STARTED.command('curl -N')}", timeout=60)
    assert "event: end" in stream and '"phase": "Succeeded"' in stream, stream

    # A reader of the team's namespace (a Role allowing `get ingestionjobs`) finds its documents.
    sh(f"kubectl create namespace {OTHER}")
    for namespace in (TEAM, OTHER):
        sh(f"kubectl apply -f - <<'EOF'\n{READER_ROLE.format(ns=namespace)}EOF")
    team_reader = sh(f"kubectl -n {TEAM} create token reader").strip()
    other_reader = sh(f"kubectl -n {OTHER} create token reader").strip()
    search = f"{api}/v1/search?q=baal&limit=100"  # the first entry of The Devil's Dictionary's B
    hits = get(f"{search}&namespace={TEAM}", team_reader)
    assert hits.status_code == 200, hits.text
    found = {(h["namespace"], h["job"], h["uri"]) for h in hits.json()["items"]}
    assert {(TEAM, "handbook", "devils-dictionary/b.md"), (TEAM, "handbook", "devils-dictionary-entries/b-000.md")} <= (
        found
    ), found
    assert {namespace for namespace, _, _ in found} == {TEAM}, found
    assert get(team_job, team_reader).json()["name"] == "handbook"

    # A reader of another namespace: 403 on the team's job and a search naming it, nothing unscoped.
    for url in (team_job, f"{search}&namespace={TEAM}"):
        refused = get(url, other_reader)
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == "application/problem+json", refused.headers
    unscoped = get(search, other_reader)
    assert (unscoped.status_code, unscoped.json()["items"]) == (200, []), unscoped.text

    # No token, or one the API server did not issue: 401.
    for credential in (None, "not-a-token"):
        assert get(team_job, credential).status_code == 401


def get(url: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url, headers=headers, timeout=30)


async def test_the_readme_upgrade_and_reapply_skip_every_unchanged_document(
    cluster: Cluster, db: asyncpg.Connection
) -> None:
    sh = cluster.sh
    assert cluster.phase(TEAM, "handbook") == "Succeeded", "needs the job of the earlier test"
    # The README's install command, as an upgrade of the running release: the migration hook runs again.
    install = README.command("helm install headrace ./charts/headrace")
    cluster.helm(install.replace("helm install", "helm upgrade --install", 1))
    assert "deployed" in sh("helm -n headrace status headrace")

    (sh.cwd / "handbook.yaml").write_text(README.manifest("handbook.yaml"))
    before = cluster.generation(TEAM, "handbook")
    sh(README.command("kubectl apply -f handbook.yaml"))
    cluster.wait_succeeded(TEAM, "handbook", after_generation=before)
    watch = README.command("kubectl -n docs-team get ij -w")
    shown = sh(watch.removesuffix(" -w"))
    assert shown.splitlines()[0].split() == README.output(watch)[0].split(), shown
    status = json.loads(sh(f"kubectl -n {TEAM} get ij handbook -o jsonpath={{.status}}"))
    assert status["summary"]["unchanged"] == cluster.corpus_files and status["summary"]["added"] == 0, status
    uid = uuid.UUID(sh(f"kubectl -n {TEAM} get ij handbook -o jsonpath={{.metadata.uid}}"))
    await assert_every_document_once(db, uid, cluster.corpus_files)


KILLED_JOB = f"""\
apiVersion: headrace.io/v1alpha1
kind: IngestionJob
metadata: {{name: handbook-copy, namespace: {TEAM}}}
spec:
  source: {{volume: {{claimName: {CLAIM}, path: ., include: ["**/*.md", "**/*.html", "**/*.txt"]}}}}
  workers: {{min: 2, max: 2, batchSize: 20}}
"""


async def test_a_worker_killed_mid_run_loses_nothing_and_stores_nothing_twice(
    cluster: Cluster, db: asyncpg.Connection
) -> None:
    sh = cluster.sh
    sh(f"kubectl apply -f - <<'EOF'\n{KILLED_JOB}EOF")
    uid = uuid.UUID(sh(f"kubectl -n {TEAM} get ij handbook-copy -o jsonpath={{.metadata.uid}}"))

    # Once some documents are stored, SIGKILL the worker pod holding an ingest task, as an OOM kill would.
    victim, task = None, None
    deadline = time.monotonic() + WAIT
    while victim is None:
        assert time.monotonic() < deadline, f"no worker stored documents\n{cluster.kubelet.logs(TEAM, 'handbook-copy')}"
        await asyncio.sleep(0.05)
        stored = await db.fetchval("SELECT count(*) FROM headrace.documents WHERE job_uid = $1", uid)
        assert stored < cluster.corpus_files, "the run ended before a worker could be killed"
        holders = await db.fetch(
            "SELECT id, leased_by FROM headrace.tasks WHERE job_uid = $1 AND kind = 'ingest' AND state = 'leased'",
            uid,
        )
        pods = {str(p.process.pid): p for p in cluster.kubelet.running(TEAM, "handbook-copy-run-1-") if p.process}
        for holder in holders if stored >= 10 else []:
            if (pod := pods.get(holder["leased_by"].rsplit("-", 1)[-1])) is not None:
                victim, task = pod, holder["id"]
                break
    victim.kill(signal.SIGKILL)

    cluster.wait_succeeded(TEAM, "handbook-copy")
    await assert_every_document_once(db, uid, cluster.corpus_files)
    attempts = await db.fetchval("SELECT attempts FROM headrace.tasks WHERE id = $1", task)
    assert attempts == 2, "the killed worker's task was not leased again"
    killed = json.loads(sh(f"kubectl -n {TEAM} get pod {victim.name} -o json"))["status"]
    assert killed["phase"] == "Failed", killed
    assert killed["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 128 + signal.SIGKILL, killed


async def test_deleting_the_job_keeps_its_data_and_uninstalling_keeps_the_crd(
    cluster: Cluster, db: asyncpg.Connection
) -> None:
    sh = cluster.sh
    uid = uuid.UUID(sh(f"kubectl -n {TEAM} get ij handbook -o jsonpath={{.metadata.uid}}"))
    sh(GETTING_STARTED.command("kubectl -n docs-team delete ij handbook"))  # waits for the finalizer
    children = f"kubectl -n {TEAM} get jobs,hpa -l headrace.io/ingestionjob=handbook"
    cluster.wait("the worker Job and HPA to go with it", lambda: "No resources" in sh(children, check=False), TEAM)
    await assert_every_document_once(db, uid, cluster.corpus_files)  # retention: Retain, the default

    # Step 2 of the guide's uninstall (step 1 would delete the other tests' jobs; step 3 is checked not done).
    uninstall = GETTING_STARTED.command("helm uninstall headrace -n headrace").split("#")[0].strip()
    sh(f"{uninstall} --wait")
    assert "ingestionjobs.headrace.io" in sh("kubectl get crd ingestionjobs.headrace.io")  # crds.keep
    assert "handbook-copy" in sh(f"kubectl -n {TEAM} get ij")
