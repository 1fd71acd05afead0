"""The Kubernetes API the operator tests run against: kmock's emulator, or a real kube-apiserver + etcd.

The real one starts when KUBEBUILDER_ASSETS names a folder holding `kube-apiserver` and `etcd` (the
envtest convention, e.g. from `setup-envtest use -p path`). Neither runs controllers: no Job
controller, no garbage collector, so tests check what the operator does, not what controllers do.
"""

import asyncio
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import yaml

from headrace.model.crd import crd
from headrace.operator.kube import KubeClient, KubeError, Resource

IJS = Resource("headrace.io/v1alpha1", "ingestionjobs")
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
TOKEN = "headrace-test-token"


@dataclass
class Cluster:
    """One API server for one test: a client, a kubeconfig for kopf, and a namespace of its own."""

    kube: KubeClient
    kubeconfig: Path
    namespace: str
    emulated: bool

    async def create(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        body["metadata"]["namespace"] = self.namespace
        if self.emulated:
            # What a real API server adds on create and the emulator does not (kopf's patches test
            # resourceVersion); a real server assigns its own uid.
            body["metadata"].setdefault("resourceVersion", "1")
            body["metadata"].setdefault("creationTimestamp", "2026-11-23T12:00:00Z")
        else:
            body["metadata"].pop("uid", None)
        created, _ = await self.kube.ensure(resource, body)
        return created

    async def get(self, resource: Resource, name: str) -> dict[str, Any] | None:
        return await self.kube.get(resource, self.namespace, name)


def write_kubeconfig(path: Path, server: str, *, insecure: bool) -> Path:
    cluster: dict[str, Any] = {"server": server}
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "test", "user": {"token": TOKEN}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "default"}}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ApiServer:
    url: str


@contextmanager
def real_apiserver(assets: Path, workdir: Path) -> Iterator[ApiServer]:
    """etcd and kube-apiserver from `assets`, with a static admin token and self-signed serving certs."""
    etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
    certs = workdir / "certs"
    certs.mkdir(parents=True)
    subprocess.run(["openssl", "genrsa", "-out", str(certs / "sa.key"), "2048"], check=True, capture_output=True)
    subprocess.run(
        ["openssl", "rsa", "-in", str(certs / "sa.key"), "-pubout", "-out", str(certs / "sa.pub")],
        check=True,
        capture_output=True,
    )
    (workdir / "tokens.csv").write_text(f'{TOKEN},admin,admin,"system:masters"\n')
    logs = (workdir / "etcd.log").open("w"), (workdir / "apiserver.log").open("w")
    etcd = subprocess.Popen(
        [
            str(assets / "etcd"),
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync",
        ],
        stdout=logs[0],
        stderr=subprocess.STDOUT,
    )
    apiserver = subprocess.Popen(
        [
            str(assets / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--advertise-address=127.0.0.1",
            "--bind-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--cert-dir={certs}",
            f"--token-auth-file={workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--service-account-issuer=https://127.0.0.1:{api_port}",
            f"--service-account-key-file={certs / 'sa.pub'}",
            f"--service-account-signing-key-file={certs / 'sa.key'}",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
        ],
        stdout=logs[1],
        stderr=subprocess.STDOUT,
    )
    try:
        yield ApiServer(url=f"https://127.0.0.1:{api_port}")
    finally:
        for process in (apiserver, etcd):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()


async def wait_ready(kube: KubeClient) -> None:
    """Until the API server serves the `default` namespace it makes at start; the test timeout bounds the wait."""
    while True:
        try:
            await kube.request("GET", "/api/v1/namespaces/default")
            return
        except (TimeoutError, KubeError, OSError, kopf.TemporaryError):
            await asyncio.sleep(0.2)


async def install_crd(kube: KubeClient) -> None:
    """Create the generated CRD (or leave an existing one) and wait until it is established."""
    manifest = crd()
    try:
        await kube.request("POST", CRDS, manifest)
    except KubeError as exc:
        if exc.status != 409:
            raise
    while True:
        current = await kube.request("GET", f"{CRDS}/{manifest['metadata']['name']}")
        conditions = current.get("status", {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return
        await asyncio.sleep(0.1)


async def new_namespace(kube: KubeClient) -> str:
    """A namespace of its own for one test on the long-lived API server."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    await kube.request(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name


def client_for(server: str, *, insecure: bool) -> KubeClient:
    return KubeClient(kopf.ConnectionInfo(server=server, token=TOKEN, insecure=insecure or None))


def assets() -> Path | None:
    folder = os.environ.get("KUBEBUILDER_ASSETS")
    if not folder:
        return None
    path = Path(folder)
    missing = [name for name in ("kube-apiserver", "etcd") if not (path / name).is_file()]
    if missing:
        raise RuntimeError(f"KUBEBUILDER_ASSETS={folder} lacks {', '.join(missing)}")
    return path
