"""One real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) for the whole test session.

Registered as a pytest plugin from `tests/conftest.py`, so any test directory can ask for it:

    async def test_something(control_plane: ControlPlane) -> None:
        namespace = await control_plane.create_namespace(labels=RESTRICTED)
        kube = control_plane.client()          # a KubeClient with admin rights; close it at the end
        control_plane.kubectl("get", "ij", "-n", namespace)   # the real kubectl (.tools/bin)

The binaries come from `KUBEBUILDER_ASSETS` (the envtest convention; `make test` sets it from
`../shared/kube/unpack.sh`). Without it, every test asking for `control_plane` is skipped, saying so.
The control plane starts on first use and stops at the end of the session.

What the server runs with, as a cluster would (see `../shared/kube/README.md`):
- CEL validation rules on (`CustomResourceValidationExpressions`; alpha in v1.24, so the gate is needed);
- the default admission plugins, among them Pod Security (namespaces labelled
  `pod-security.kubernetes.io/enforce=restricted` refuse non-compliant pods) and ServiceAccount
  (pods get their ServiceAccount's token volume; a pod whose ServiceAccount is missing is refused);
- the OwnerReferencesPermissionEnforcement admission plugin too (as on OpenShift and hardened clusters);
- RBAC authorization; the admin authenticates with a static token in `system:masters`;
- kube-controller-manager (when the assets hold it) with the Job, garbage-collector, namespace,
  ServiceAccount, token, HPA, ttl-after-finished, ReplicaSet, Deployment, root-CA publisher and
  ClusterRole aggregation controllers, signing tokens with the key the apiserver verifies and handing
  out the CA that signed the serving certificate.
  No scheduler and no kubelet: pods stay Pending unless a test runs them.

`ControlPlane` attributes and methods:
- `url`: the apiserver's `https://127.0.0.1:<port>`; `ca_file`: the CA that signed its certificate;
- `kubeconfig`: an admin kubeconfig file (for kubectl, helm, kopf via `$KUBECONFIG`); `env()`: the
  process environment with `KUBECONFIG` set to it;
- `token`: the admin bearer token; `connection()`: a `kopf.ConnectionInfo` for it;
- `client()`: a new `KubeClient` with admin rights (the caller closes it);
- `await create_namespace(labels=..., prefix=...)`: a fresh namespace, returned once its `default`
  ServiceAccount exists (so pods can be created in it right away);
- `await service_account_token(namespace, name)`: a token of that ServiceAccount (TokenRequest API);
- `install_crd()`: the committed IngestionJob CRD (`crds/`), applied as a user would (`kubectl apply
  --server-side`) unless the server has it already (e.g. from a chart), and waited for until
  Established; a CRD the server refuses fails the test with the server's message. A chart installed
  after it must take the CRD over (`helm install --take-ownership`) or leave it (`crds.enabled=false`);
- `kubectl(*args, input=None, check=True)`: run the real kubectl against this server;
- `has_controllers` and `require_controllers()`: skip a test that needs controllers when the assets
  (e.g. from setup-envtest) hold no kube-controller-manager;
- `workdir`: the folder with certificates and the three processes' logs (`*.log`), which a failure
  to start quotes.
"""

import asyncio
import ctypes
import os
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import kopf
import pytest
import yaml

from headrace.kubeapi import KubeError
from headrace.operator.kube import KubeClient
from tests.sockets import free_port

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
CRD_FILE = ROOT / "crds" / "ingestionjobs.headrace.io.yaml"
ADMIN_TOKEN = "headrace-test-admin-token"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}
"""Labels of a namespace enforcing Pod Security "restricted" on pods and warning of workloads (Deployments,
Jobs, ...) whose pod template breaks it, as `kubectl apply` shows: `Warning: would violate PodSecurity ...`."""

CONTROLLERS = (
    "job,garbagecollector,namespace,serviceaccount,serviceaccount-token,"
    "horizontalpodautoscaling,ttl-after-finished,replicaset,deployment,"
    # kube-root-ca.crt in every namespace (the CA of every pod's ServiceAccount token volume), and the
    # built-in admin/edit/view roles picking up the rules labelled to aggregate into them.
    "root-ca-cert-publisher,clusterrole-aggregation"
)
START_TIMEOUT = 120.0
"""Seconds the control plane may take to serve and to create the `default` ServiceAccount (2 busy cores)."""


def assets_folder() -> Path | None:
    """The folder `KUBEBUILDER_ASSETS` names, or None when it is unset; an error when it lacks a binary."""
    folder = os.environ.get("KUBEBUILDER_ASSETS")
    if not folder:
        return None
    path = Path(folder)
    missing = [name for name in ("kube-apiserver", "etcd") if not (path / name).is_file()]
    if missing:
        raise RuntimeError(f"KUBEBUILDER_ASSETS={folder} lacks {', '.join(missing)}")
    return path


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{done.stderr}")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL (Linux prctl)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def make_certificates(folder: Path) -> None:
    """ca.crt/ca.key, a serving cert for 127.0.0.1 and the in-cluster names, and the ServiceAccount key pair."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "7", "-subj", "/CN=headrace-test-ca", cwd=folder,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=kube-apiserver", cwd=folder,
    )  # fmt: skip
    names = "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.0.0.1"
    (folder / "server.ext").write_text(f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "7", "-extfile", "server.ext", cwd=folder,
    )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=folder)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=folder)


def write_kubeconfig(
    path: Path, server: str, token: str, *, ca_file: Path | None = None, namespace: str = "default"
) -> Path:
    """A kubeconfig for one server and one bearer token (and the CA of its certificate, for https)."""
    cluster = {"server": server} | ({"certificate-authority": str(ca_file)} if ca_file else {})
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "test", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver (+ kube-controller-manager); see the module docstring."""

    assets: Path
    workdir: Path
    url: str = ""
    token: str = ADMIN_TOKEN
    has_controllers: bool = False
    _processes: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = field(default_factory=list)

    @property
    def ca_file(self) -> Path:
        return self.workdir / "certs" / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def env(self) -> dict[str, str]:
        """This process's environment, with kubectl/helm/kopf pointed at the control plane."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)  # kopf would otherwise try in-cluster credentials
        return env

    def connection(self) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=self.url, ca_path=str(self.ca_file), token=self.token)

    def client(self) -> KubeClient:
        """A new admin client; close it when done."""
        return KubeClient(self.connection())

    def require_controllers(self) -> None:
        if not self.has_controllers:
            pytest.skip(f"{self.assets} holds no kube-controller-manager: no Job, GC or namespace controllers")

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The real kubectl against this server; with check, a failure raises with kubectl's own message."""
        if not KUBECTL.exists():
            pytest.fail(f"{KUBECTL} is missing: run `make tools` (scripts/install-tools.py)")
        done = subprocess.run(
            [str(KUBECTL), *args], input=input, capture_output=True, text=True, env=self.env(), check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    async def create_namespace(self, *, labels: dict[str, str] | None = None, prefix: str = "t") -> str:
        """A new namespace with these labels, once its `default` ServiceAccount exists (when controllers run)."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        kube = self.client()
        try:
            await kube.request("POST", "/api/v1/namespaces", body)
            while self.has_controllers:
                try:
                    await kube.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")
                    break
                except KubeError as exc:
                    if exc.status != 404:
                        raise
                    await asyncio.sleep(0.1)
        finally:
            await kube.close()
        return name

    async def service_account_token(self, namespace: str, name: str, *, seconds: int = 3600) -> str:
        """A bound token of that ServiceAccount, as `kubectl create token` makes."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        }
        kube = self.client()
        try:
            answer = await kube.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", body)
        finally:
            await kube.close()
        return str(answer["status"]["token"])

    def install_crd(self) -> None:
        """The IngestionJob CRD on the server, Established (see the module docstring)."""
        name = yaml.safe_load(CRD_FILE.read_text())["metadata"]["name"]
        if self.kubectl("get", "crd", name, "--ignore-not-found", "-o", "name").stdout.strip() == "":
            self.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")

    # --- process management -------------------------------------------------------------------

    def start(self) -> None:
        certs = self.workdir / "certs"
        make_certificates(certs)
        (self.workdir / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self.url = f"https://127.0.0.1:{api_port}"
        write_kubeconfig(self.kubeconfig, self.url, self.token, ca_file=self.ca_file)
        self._spawn(
            "etcd",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync",
        )
        self._spawn(
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--advertise-address=127.0.0.1",
            "--bind-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--tls-cert-file={certs / 'server.crt'}",
            f"--tls-private-key-file={certs / 'server.key'}",
            f"--client-ca-file={certs / 'ca.crt'}",
            f"--token-auth-file={self.workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={certs / 'sa.pub'}",
            f"--service-account-signing-key-file={certs / 'sa.key'}",
            "--feature-gates=CustomResourceValidationExpressions=true",
            # On top of the defaults (among them PodSecurity and ServiceAccount): children whose owner
            # reference blocks the owner's deletion need `update` on its finalizers, as the chart grants.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
        )
        self.has_controllers = (self.assets / "kube-controller-manager").is_file()
        self._wait(self._apiserver_ready, "kube-apiserver to serve /readyz")
        if self.has_controllers:
            self._spawn(
                "kube-controller-manager",
                f"--kubeconfig={self.kubeconfig}",
                f"--controllers={CONTROLLERS}",
                f"--service-account-private-key-file={certs / 'sa.key'}",
                f"--root-ca-file={certs / 'ca.crt'}",
                "--leader-elect=false",
                "--secure-port=0",  # nothing here asks its /healthz: one port fewer to pick and lose
            )
            self._wait(self._default_service_account, "kube-controller-manager to create the default ServiceAccount")

    def stop(self) -> None:
        for _, process, log in reversed(self._processes):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
        self._processes.clear()

    def _spawn(self, binary: str, *args: str) -> None:
        log = (self.workdir / f"{binary}.log").open("wb")
        process = subprocess.Popen(
            [str(self.assets / binary), *args], stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
        self._processes.append((binary, process, log))

    def _wait(self, ready: Any, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            for binary, process, _ in self._processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{binary} exited with {process.returncode}:\n{self._tail(binary)}")
            if time.monotonic() > deadline:
                logs = "\n".join(self._tail(binary) for binary, _, _ in self._processes)
                raise RuntimeError(f"timed out after {START_TIMEOUT:.0f} s waiting for {what}:\n{logs}")
            time.sleep(0.2)

    def _tail(self, binary: str, lines: int = 30) -> str:
        text = (self.workdir / f"{binary}.log").read_text(errors="replace").splitlines()
        return f"--- {binary}.log (last {lines} lines)\n" + "\n".join(text[-lines:])

    def _get(self, path: str) -> int:
        """The HTTP status of an admin GET, 0 while the server does not answer."""
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.token}"})
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def _apiserver_ready(self) -> bool:
        return self._get("/readyz") == 200

    def _default_service_account(self) -> bool:
        return self._get("/api/v1/namespaces/default/serviceaccounts/default") == 200


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """The session's control plane, started on first use; skipped when KUBEBUILDER_ASSETS is unset."""
    found = assets_folder()
    if found is None:
        pytest.skip(
            "KUBEBUILDER_ASSETS is not set: no real kube-apiserver to test against "
            "(`make test` sets it from ../shared/kube/unpack.sh)"
        )
    # Not under pytest's basetemp, for the reason tests/conftest.py gives for Postgres.
    plane = ControlPlane(assets=found, workdir=Path(tempfile.mkdtemp(prefix="headrace-kube-")))
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
