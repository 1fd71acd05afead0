"""A stand-in kubelet: runs a real control plane's pods in a built image on this machine, for end-to-end tests.

The control plane in ../shared/kube has no kubelet, scheduler or container runtime. `Kubelet` plays one
node: it binds every pod to itself (`pods/binding`), runs the pod's container as a process in the image, and
reports `Running`, readiness and `Succeeded`/`Failed` with the exit code through `pods/status`, so the
Job, ReplicaSet and Deployment controllers and `helm --wait` see what they would see on a node. When a
pod is deleted it stops the process (SIGTERM, then SIGKILL after the grace period) and removes the pod.

What stands in for the container:
- **Image:** `Image.of(built)` is the image `make image` built (tests/kube/container.py), with the
  entrypoint, command, environment and working directory its Dockerfile declares. Every pod runs
  inside that image's root filesystem, read-only, as the pod's `runAsUser`/`runAsGroup` (else the
  image's USER), with its volumes bound at their mount paths and `KUBERNETES_SERVICE_HOST`/`PORT`
  naming the API server, as on a node. Images are known by repository (any tag) or by a whole
  reference (`repo:tag`), which wins: `add_image` can make `headrace:previous` the same image with
  an earlier release's code bound into it (`Image.binds`, read-only) and first on PYTHONPATH.
- **Filesystem:** each pod gets a folder of this machine holding its volumes, each at its mountPath
  inside it, bound from there into the image's root filesystem: emptyDir, Secret, ConfigMap and
  projected volumes (the ServiceAccount token the ServiceAccount admission plugin adds, with `ca.crt`
  and `namespace`) are written there, and a PersistentVolumeClaim is a link to the folder given with
  `add_claim`. `shared` files and folders of this machine (the tests' Postgres socket) are bound at
  the same path into every pod.
- **Network:** pods share this machine's loopback. Each containerPort gets a free local port: an env
  value equal to the port and a `:PORT` after a wildcard or loopback host (or alone) are renumbered,
  wildcard binds become 127.0.0.1, and probes and `port_forward` use the local port.
- **Services:** an env value or argument naming a Service as `<service>.<namespace>.svc[.cluster.local][:port]`
  (other than the API server's) reaches the pods of that Service this kubelet runs: each such name and
  port gets a forwarder on a free loopback address, which at every connection picks a running pod behind
  the Service's selector and connects to its local port for the Service's targetPort. The pod finds the
  name in its /etc/hosts.
- **Projected ServiceAccount tokens** are requested with the volume's `audience` and `expirationSeconds`
  and bound to the pod, as the kubelet does, and written again at 80% of their lifetime.
- **In-cluster API access:** `kubernetes.default.svc` in the pod's /etc/hosts is a loopback address
  whose port 443 forwards to the API server, so kopf's in-cluster login works unchanged.

Not done: init and sidecar containers, liveness and exec probes, resource limits. A pod the kubelet cannot
run says why in its container status, as a real kubelet does (`CreateContainerConfigError`, `ErrImagePull`),
and is retried until it can.
"""

import base64
import contextlib
import datetime
import functools
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes

from tests.kube.container import BuiltImage
from tests.sockets import free_port

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

IN_CLUSTER_API = "kubernetes.default.svc"
"""The API server's in-cluster name: kopf's in-cluster login always connects to https://kubernetes.default.svc."""

LOCAL_HOSTS = r"0\.0\.0\.0|127\.0\.0\.1|localhost|\[::\]"
"""Hosts that name the pod itself in a bind address or URL."""

SERVICE_NAME = re.compile(
    r"(?<![\w.-])(?P<service>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(?P<namespace>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.svc"
    r"(\.cluster\.local)?(:(?P<port>\d+))?(?![\w.-])"
)
"""A Service's in-cluster DNS name, with an optional port."""

GRACE_CAP = 10.0
"""Longest wait between SIGTERM and SIGKILL, whatever the pod's terminationGracePeriodSeconds says."""


@dataclass(frozen=True)
class Image:
    """A built image as a container runtime runs it: its root filesystem, and the ENTRYPOINT, CMD, ENV
    and WORKDIR it declares (`env` may be changed, e.g. PYTHONPATH for `binds`)."""

    built: BuiltImage
    """The built image whose root filesystem the container runs in."""
    entrypoint: list[str]
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    binds: tuple[tuple[Path, str], ...] = ()
    """Folders of this machine bound read-only into the built image's root filesystem (folder, path in it),
    e.g. an earlier release's code beside the image's own."""

    @classmethod
    def of(cls, built: BuiltImage) -> "Image":
        config = built.config
        return cls(
            built=built,
            entrypoint=config.get("Entrypoint") or [],
            cmd=config.get("Cmd") or [],
            env=built.env,
            workdir=config.get("WorkingDir") or "/",
        )


def postgres_socket(dsn: str) -> Path:
    """The Unix socket of an embedded Postgres whose URL names its folder (`?host=/...`), for `shared`: it listens
    in its data folder, which only its own user may enter, so the socket itself is bound into every pod at the
    same path (as a node would mount a hostPath socket)."""
    (folder,) = parse_qs(urlsplit(dsn).query)["host"]
    (found,) = [path for path in Path(folder).glob(".s.PGSQL.*") if path.suffix != ".lock"]
    return found


class CannotRun(Exception):
    """What the pod needs is missing or unsupported; `reason` is the kubelet's waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def repository(image: str) -> str:
    """`registry/name:tag` or `registry/name@sha256:...` without its tag or digest."""
    name = image.split("@", 1)[0]
    head, _, tail = name.rpartition(":")
    return head if head and "/" not in tail else name


@dataclass
class Pod:
    """One pod this kubelet runs: its folder, its ports and its current process."""

    namespace: str
    name: str
    uid: str
    root: Path
    body: dict[str, Any]
    ports: dict[int, int] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    """The environment its process was started with."""
    process: subprocess.Popen[bytes] | None = None
    deleted: threading.Event = field(default_factory=threading.Event)

    @property
    def log(self) -> Path:
        return self.root / "container.log"

    def local(self, path: str) -> Path:
        """Where a path under one of the container's volume mounts is on this machine (bound from there)."""
        return self.root / path.lstrip("/")

    def localize(self, value: str) -> str:
        """An env value or argument as this process must see it: its own ports and binds made local."""
        prefix, sep, text = value.partition("=") if value.startswith("-") else ("", "", value)
        for container_port, local_port in self.ports.items():
            if text == str(container_port):
                text = str(local_port)
            # This pod's own binds and addresses only: a port of another host (a Service) is not its.
            text = re.sub(rf"(^|{LOCAL_HOSTS}):{container_port}\b", rf"\g<1>:{local_port}", text)
        return prefix + sep + text.replace("0.0.0.0", "127.0.0.1")

    def kill(self, sig: signal.Signals) -> None:
        """Signal the whole process group, as a runtime stops every process of a container."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)


class Kubelet:
    """One node of the control plane at `api_url`, running its pods in built images (see the module)."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        api_url: str,
        workdir: Path,
        images: dict[str, Image],
        node: str = "e2e-node",
        shared: Sequence[Path] = (),
    ) -> None:
        self.api_url = api_url
        self.shared = list(shared)
        self.workdir = workdir
        self.images = images
        self.node = node
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=config)
        # One pod thread each, and a namespace's deletion starts one per pod at once: the default pool (5 per
        # core) would drop connections with a warning into whichever test's log capture is running then.
        config.connection_pool_maxsize = 64
        self.core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))
        self.claims: dict[tuple[str, str], Path] = {}
        self.pods: dict[str, Pod] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="kubelet-watch", daemon=True)
        self._forwarder: Forwarder | None = None
        self._services: dict[tuple[str, str, int], Forwarder] = {}

    # --- what tests call ----------------------------------------------------------------------------

    def add_claim(self, namespace: str, claim: str, folder: Path) -> None:
        """Back the PersistentVolumeClaim `claim` of `namespace` with a local folder."""
        self.claims[(namespace, claim)] = folder

    def add_image(self, reference: str, image: Image) -> None:
        """Run `image` for containers naming exactly `reference` (`registry/name:tag`), whatever the repository runs."""
        self.images[reference] = image

    def start(self) -> None:
        labels = {"kubernetes.io/os": "linux", "kubernetes.io/hostname": self.node}
        self.core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": labels}})
        capacity = {"cpu": "8", "memory": "32Gi", "pods": "110"}
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now()}
        self.core.patch_node_status(
            self.node, {"status": {"capacity": capacity, "allocatable": capacity, "conditions": [ready]}}
        )
        self._watcher.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            pods = list(self.pods.values())
        for pod in pods:
            pod.deleted.set()
            pod.kill(signal.SIGKILL)
            if pod.process is not None:
                pod.process.wait()
        if self._forwarder is not None:
            self._forwarder.stop()
        for forwarder in self._services.values():
            forwarder.stop()

    def running(self, namespace: str, prefix: str = "") -> list[Pod]:
        """This namespace's pods whose process is running now, oldest first."""
        with self._lock:
            pods = list(self.pods.values())
        return [
            pod
            for pod in pods
            if pod.namespace == namespace
            and pod.name.startswith(prefix)
            and pod.process is not None
            and pod.process.poll() is None
        ]

    def port_forward(self, namespace: str, service: str) -> str:
        """`kubectl port-forward svc/NAME`: the URL of a running pod behind the Service's first port."""
        svc = self.core.read_namespaced_service(service, namespace)
        selector = svc.spec.selector or {}
        target = svc.spec.ports[0].target_port
        for pod in self.running(namespace):
            if selector.items() <= pod.body["metadata"].get("labels", {}).items():
                return f"http://127.0.0.1:{pod.ports[self._container_port(pod.body, target)]}"
        raise LookupError(f"no running pod behind service {namespace}/{service}")

    def logs(self, namespace: str, prefix: str = "", *, tail: int | None = 4000) -> str:
        """The output (its last `tail` characters) of every pod of `namespace` whose name starts with `prefix`."""
        with self._lock:
            pods = [p for p in self.pods.values() if p.namespace == namespace and p.name.startswith(prefix)]
        return "\n".join(
            f"--- {p.namespace}/{p.name}\n{p.log.read_text(errors='replace')[-(tail or 0) :]}"
            for p in pods
            if p.log.exists()
        )

    # --- the node's loop ----------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.is_set():
            watch = kubernetes.watch.Watch()
            try:
                for event in watch.stream(self.core.list_pod_for_all_namespaces, timeout_seconds=10):
                    if self._stopping.is_set():
                        return
                    try:
                        self._on_pod(event["type"], event["raw_object"])
                    except kubernetes.client.ApiException as exc:  # e.g. a lost race: the next event retries
                        name = event["raw_object"]["metadata"]["name"]
                        self._note(f"{event['type']} pod {name}: {exc.status} {exc.body}")
            except Exception as exc:  # the server restarting or a watch cut short: list and watch again
                self._note(f"watch ended: {exc!r}")
                time.sleep(0.5)

    def _note(self, line: str) -> None:
        with (self.workdir / "kubelet.log").open("a") as log:
            log.write(f"{now()} {line}\n")

    def _on_pod(self, kind: str, body: dict[str, Any]) -> None:
        meta, spec = body["metadata"], body["spec"]
        if kind == "DELETED":
            return
        if meta.get("deletionTimestamp"):
            self._spawn_thread(self._terminate, body)
        elif not spec.get("nodeName"):
            binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": meta["name"]},
                       "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}}  # fmt: skip
            self.core.create_namespaced_pod_binding(meta["name"], meta["namespace"], binding, _preload_content=False)
        elif spec["nodeName"] == self.node and body.get("status", {}).get("phase") == "Pending":
            with self._lock:
                if meta["uid"] in self.pods:
                    return
                root = self.workdir / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
                pod = self.pods[meta["uid"]] = Pod(meta["namespace"], meta["name"], meta["uid"], root, body)
            self._spawn_thread(self._run, body, pod)

    def _spawn_thread(self, target: Any, *args: Any) -> None:
        def run() -> None:
            try:
                target(*args)
            except Exception:  # noted for failure messages (see `notes`); the pod stays as last reported
                self._note(f"{target.__name__} failed:\n{traceback.format_exc()}")

        threading.Thread(target=run, daemon=True).start()

    def notes(self) -> str:
        """What went wrong inside the kubelet itself (lost API calls, crashed pod threads)."""
        path = self.workdir / "kubelet.log"
        return path.read_text() if path.exists() else ""

    def _run(self, body: dict[str, Any], pod: Pod) -> None:
        """Prepare the pod (retrying while something it needs is missing), run it, restart it as its policy says."""
        while True:
            try:
                argv, env, cwd, container = self._prepare(body, pod)
                break
            except CannotRun as exc:
                self._report(body, pod, {"waiting": {"reason": exc.reason, "message": str(exc)}})
                if pod.deleted.wait(1.0):
                    return
        restarts = 0
        while not pod.deleted.is_set():
            with pod.log.open("ab") as log:
                pod.process = subprocess.Popen(
                    argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            started = now()
            probe = container.get("readinessProbe")
            self._report(body, pod, {"running": {"startedAt": started}}, ready=probe is None, restarts=restarts)
            if probe is not None:
                self._spawn_thread(self._probe, body, pod, probe, container, started, restarts)
            code = pod.process.wait()
            exit_code = 128 - code if code < 0 else code  # killed by signal N: 128 + N, as runtimes report
            if pod.deleted.is_set():
                return
            policy = body["spec"].get("restartPolicy", "Always")
            terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                          "startedAt": started, "finishedAt": now()}  # fmt: skip
            if policy == "Always" or (policy == "OnFailure" and exit_code != 0):
                restarts += 1
                self._report(body, pod, {"waiting": {"reason": "CrashLoopBackOff"}}, restarts=restarts,
                             last=terminated)  # fmt: skip
                pod.deleted.wait(1.0)
                continue
            self._report(body, pod, {"terminated": terminated}, restarts=restarts,
                         phase="Succeeded" if exit_code == 0 else "Failed")  # fmt: skip
            return

    def _probe(
        self, body: dict[str, Any], pod: Pod, probe: dict[str, Any], container: dict[str, Any], started: str,
        restarts: int,
    ) -> None:  # fmt: skip
        """Probe readiness until it first passes, then report the pod Ready (no later probes)."""
        get = probe.get("httpGet")
        if get is None:
            return  # unsupported probe kinds leave the pod unready, which a test waiting for Ready will show
        url = f"http://127.0.0.1:{pod.ports[self._container_port(body, get['port'], container)]}{get.get('path', '/')}"
        while pod.process is not None and pod.process.poll() is None and not pod.deleted.is_set():
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if 200 <= answer.status < 400:
                        self._report(body, pod, {"running": {"startedAt": started}}, ready=True, restarts=restarts)
                        return
            except OSError:
                pass
            time.sleep(0.25)

    def _terminate(self, body: dict[str, Any]) -> None:
        """The pod is being deleted: stop its process within its grace period, then remove the pod."""
        meta = body["metadata"]
        with self._lock:
            pod = self.pods.get(meta["uid"])
        if pod is not None and not pod.deleted.is_set():
            pod.deleted.set()
            pod.kill(signal.SIGTERM)
            if pod.process is not None:
                try:
                    pod.process.wait(min(float(meta.get("deletionGracePeriodSeconds") or 0), GRACE_CAP))
                except subprocess.TimeoutExpired:
                    pod.kill(signal.SIGKILL)
                    pod.process.wait()
        options = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        try:
            self.core.delete_namespaced_pod(meta["name"], meta["namespace"], body=options)
        except kubernetes.client.ApiException as exc:
            if exc.status not in (404, 409):
                raise

    # --- status ---------------------------------------------------------------------------------------

    def _report(
        self, body: dict[str, Any], pod: Pod, state: dict[str, Any], *, ready: bool = False, restarts: int = 0,
        phase: str | None = None, last: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """Patch pods/status with the container's state, as the kubelet's status manager does."""
        if pod.deleted.is_set():
            return
        container = body["spec"]["containers"][0]
        status: dict[str, Any] = {
            "name": container["name"], "image": container["image"], "imageID": "", "ready": ready,
            "restartCount": restarts, "started": "running" in state, "state": state,
        }  # fmt: skip
        if last:
            status["lastState"] = {"terminated": last}
        if phase is None:
            phase = "Running" if "running" in state or restarts else "Pending"
        ready_now = ready and phase == "Running"
        conditions = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": str(ready_now)},
            {"type": "Ready", "status": str(ready_now)},
        ]
        patch = {
            "status": {
                "phase": phase, "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                "startTime": body["metadata"].get("creationTimestamp"), "containerStatuses": [status],
                "conditions": [{**c, "lastTransitionTime": now()} for c in conditions],
            }
        }  # fmt: skip
        try:
            self.core.patch_namespaced_pod_status(pod.name, pod.namespace, patch)
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise

    # --- what a container runtime would do --------------------------------------------------------

    def _prepare(self, body: dict[str, Any], pod: Pod) -> tuple[list[str], dict[str, str], Path, dict[str, Any]]:
        """The command line, environment, working directory and container of the pod's one container."""
        spec = body["spec"]
        if spec.get("initContainers") or len(spec["containers"]) != 1:
            raise CannotRun("Unsupported", "the stand-in kubelet runs pods of exactly one container")
        container = spec["containers"][0]
        image = self.images.get(container["image"]) or self.images.get(repository(container["image"]))
        if image is None:
            raise CannotRun("ErrImagePull", f"image {container['image']!r} is not one the stand-in kubelet knows")
        shutil.rmtree(pod.root, ignore_errors=True)
        pod.root.mkdir(parents=True)
        pod.ports = {p["containerPort"]: free_port() for p in container.get("ports", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        pod.mounts = []
        read_only = set()
        for mount in container.get("volumeMounts", []):
            self._mount(body, pod, volumes[mount["name"]], mount["mountPath"])
            pod.mounts.append(mount["mountPath"])
            if mount.get("readOnly"):
                read_only.add(mount["mountPath"])

        # What a node's kubelet gives every pod: its hostname and the API server's in-cluster address.
        env = {**image.env, "HOSTNAME": pod.name, "KUBERNETES_SERVICE_HOST": IN_CLUSTER_API,
               "KUBERNETES_SERVICE_PORT": "443"}  # fmt: skip
        for source in container.get("envFrom", []):
            env.update({source.get("prefix", "") + k: v for k, v in self._env_from(body, source).items()})
        for var in container.get("env", []):
            value = self._env_value(body, var, env)
            if value is not None:
                env[var["name"]] = value
        env = {name: pod.localize(value) for name, value in env.items()}
        services = self._service_addresses([*env.values(), *(container.get("args") or [])])

        pod.environment = dict(env)
        command = container.get("command") or image.entrypoint
        args = container.get("args") if "args" in container or "command" in container else image.cmd
        argv = [pod.localize(expand(a, env)) for a in [*command, *(args or [])]]
        found = image.built.which(argv[0], env.get("PATH", ""))
        if found is None:
            raise CannotRun("CreateContainerError", f"executable {argv[0]!r} not found in the image's PATH")
        binds = [(pod.local(m), m, m in read_only) for m in pod.mounts]
        binds += [(path, str(path), False) for path in self.shared]
        binds += [(source, target, True) for source, target in image.binds]
        in_container = image.built.command(
            [found, *argv[1:]],
            at=pod.root / "rootfs",
            binds=binds,
            user=self._user(body, container, image.built),
            workdir=container.get("workingDir") or image.workdir,
            hosts={IN_CLUSTER_API: self._api_address(), **services},
        )
        return in_container, env, pod.root, container

    @staticmethod
    def _user(body: dict[str, Any], container: dict[str, Any], built: BuiltImage) -> tuple[int, int]:
        """The uid and gid the container runs as: its securityContext, else the pod's, else the image's USER."""
        uid, gid = built.user
        for context in (body["spec"].get("securityContext") or {}, container.get("securityContext") or {}):
            uid, gid = context.get("runAsUser", uid), context.get("runAsGroup", gid)
        return int(uid), int(gid)

    def _mount(self, body: dict[str, Any], pod: Pod, volume: dict[str, Any], mount_path: str) -> None:
        target = pod.local(mount_path)
        namespace = body["metadata"]["namespace"]
        if "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o777)  # as a node makes it: writable by whichever uid the pod runs as
        elif claim := volume.get("persistentVolumeClaim"):
            self._read("persistent_volume_claim", claim["claimName"], namespace)  # a typo fails as on a cluster
            folder = self.claims.get((namespace, claim["claimName"]))
            if folder is None:
                raise CannotRun("FailedMount", f"no local folder backs claim {namespace}/{claim['claimName']}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(folder)
        elif "secret" in volume:
            self._write_files(target, self._data(body, "secret", volume["secret"]))
        elif "configMap" in volume:
            self._write_files(target, self._data(body, "configMap", volume["configMap"]))
        elif "projected" in volume:
            for source in volume["projected"]["sources"]:
                if token := source.get("serviceAccountToken"):
                    self._write_files(target, {token["path"]: self._token(body, token)})
                    if token.get("audience"):  # the API token's own projection is left as written
                        self._spawn_thread(self._refresh_tokens, body, pod, target, token)
                elif "downwardAPI" in source:
                    items = source["downwardAPI"]["items"]
                    self._write_files(target, {i["path"]: field_value(body, i["fieldRef"]["fieldPath"]) for i in items})
                else:
                    kind = "secret" if "secret" in source else "configMap"
                    self._write_files(target, self._data(body, kind, source[kind]))
        else:
            raise CannotRun("FailedMount", f"volume {volume['name']!r}: kind not supported by the stand-in kubelet")

    def _refresh_tokens(self, body: dict[str, Any], pod: Pod, folder: Path, token: dict[str, Any]) -> None:
        """Write the projected token again at 80% of its lifetime, as the kubelet does, until the pod goes."""
        while not pod.deleted.wait(0.8 * token.get("expirationSeconds", 3600)):
            try:
                self._write_files(folder, {token["path"]: self._token(body, token)})
            except kubernetes.client.ApiException as exc:  # the pod is gone; its deletion ends this loop
                self._note(f"token of {pod.namespace}/{pod.name}: {exc.status}")

    def _token(self, body: dict[str, Any], source: dict[str, Any]) -> str:
        """A token of the pod's ServiceAccount bound to the pod, as the kubelet requests for a projected volume."""
        meta = body["metadata"]
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [source["audience"]] if source.get("audience") else None,
                "expirationSeconds": source.get("expirationSeconds", 3600),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
            },
        }
        account = body["spec"].get("serviceAccountName", "default")
        answer = self.core.create_namespaced_service_account_token(account, meta["namespace"], request)
        return str(answer.status.token)

    def _service_addresses(self, values: list[str]) -> dict[str, str]:
        """`<service>.<namespace>.svc` names in `values` (with a port, else 80), each with the loopback
        address of a forwarder to the pods behind that Service (started on first use)."""
        found: dict[str, str] = {}
        for value in values:
            for match in SERVICE_NAME.finditer(value):
                service, namespace, port = match["service"], match["namespace"], int(match["port"] or 80)
                if f"{service}.{namespace}.svc" == IN_CLUSTER_API:
                    continue
                key = (namespace, service, port)
                with self._lock:
                    if key not in self._services:
                        forwarder = Forwarder(functools.partial(self._service_target, *key), port=port, note=self._note)
                        forwarder.start()
                        self._services[key] = forwarder
                    address = self._services[key].address
                for name in (f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"):
                    if found.setdefault(name, address) != address:
                        raise CannotRun("Unsupported", f"{name} is named with two ports; the stand-in serves one")
        return found

    def _service_target(self, namespace: str, service: str, port: int) -> tuple[str, int] | None:
        """The local address of a running pod behind the Service's `port`; None (noted) when there is none."""
        try:
            svc = self.core.read_namespaced_service(service, namespace)
        except kubernetes.client.ApiException as exc:
            self._note(f"service {namespace}/{service}: {exc.status}")
            return None
        spec_port = next((p for p in svc.spec.ports or [] if p.port == port), None)
        if spec_port is None:
            self._note(f"service {namespace}/{service} has no port {port}")
            return None
        selector = svc.spec.selector or {}
        for pod in self.running(namespace):
            if selector.items() <= pod.body["metadata"].get("labels", {}).items():
                target = spec_port.target_port if spec_port.target_port is not None else port
                local = pod.ports.get(self._container_port(pod.body, target))
                if local is not None:
                    return "127.0.0.1", local
        self._note(f"service {namespace}/{service}:{port}: no running pod behind it")
        return None

    def _api_address(self) -> str:
        """A loopback address whose port 443 forwards to the API server (started on first use).

        In-image pods reach `https://kubernetes.default.svc` (port 443) through it, named in their /etc/hosts.
        Each kubelet picks its own address in 127.0.0.0/8, so several test sessions on one machine never
        contend for a port."""
        with self._lock:
            if self._forwarder is None:
                api = urlsplit(self.api_url)
                self._forwarder = Forwarder((str(api.hostname), int(api.port or 443)))
                self._forwarder.start()
            return self._forwarder.address

    # --- Secrets, ConfigMaps and fields -------------------------------------------------------------

    def _read(self, kind: str, name: str, namespace: str) -> Any:
        try:
            return getattr(self.core, f"read_namespaced_{kind}")(name, namespace)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                raise CannotRun("CreateContainerConfigError", f'{kind.replace("_", " ")} "{name}" not found') from exc
            raise

    def _data(self, body: dict[str, Any], kind: str, source: dict[str, Any]) -> dict[str, str]:
        """A Secret's or ConfigMap's data as text, `items` applied (key -> path); {} when optional and missing."""
        name = source.get("secretName") or source["name"]
        try:
            found = self._read("secret" if kind == "secret" else "config_map", name, body["metadata"]["namespace"])
        except CannotRun:
            if source.get("optional"):
                return {}
            raise
        data = found.data or {}
        if kind == "secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        if "items" in source:
            return {item["path"]: data[item["key"]] for item in source["items"]}
        return dict(data)

    def _env_from(self, body: dict[str, Any], source: dict[str, Any]) -> dict[str, str]:
        kind = "secret" if "secretRef" in source else "configMap"
        return self._data(body, kind, source[f"{kind}Ref"])

    def _env_value(self, body: dict[str, Any], var: dict[str, Any], env: dict[str, str]) -> str | None:
        if "valueFrom" not in var:
            return expand(var.get("value", ""), env)
        source = var["valueFrom"]
        for kind, ref in (("secret", source.get("secretKeyRef")), ("configMap", source.get("configMapKeyRef"))):
            if ref is not None:
                data = self._data(body, kind, ref)
                if ref["key"] not in data and not ref.get("optional"):
                    raise CannotRun("CreateContainerConfigError", f"couldn't find key {ref['key']} in {ref['name']}")
                return data.get(ref["key"])
        if "fieldRef" in source:
            return field_value(body, source["fieldRef"]["fieldPath"])
        raise CannotRun("CreateContainerConfigError", f"env {var['name']}: a source the stand-in kubelet lacks")

    @staticmethod
    def _write_files(folder: Path, files: dict[str, str]) -> None:
        for relative, content in files.items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)

    @staticmethod
    def _container_port(body: dict[str, Any], port: int | str, container: dict[str, Any] | None = None) -> int:
        """A probe's or Service's port (a number or a port name) as the containerPort it names."""
        container = container or body["spec"]["containers"][0]
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        return int(next(p["containerPort"] for p in container.get("ports", []) if p.get("name") == port))


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` references in env values and arguments."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)


def field_value(body: dict[str, Any], path: str) -> str:
    """A downward-API fieldPath: metadata.name, metadata.labels['x'], spec.nodeName, status.podIP, ..."""
    if match := re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path):
        return str(body["metadata"].get(match[1], {}).get(match[2], ""))
    if path in ("status.podIP", "status.hostIP"):
        return "127.0.0.1"
    value: Any = body
    for part in path.split("."):
        value = value.get(part, "") if isinstance(value, dict) else ""
    return str(value)


class Forwarder:
    """TCP from a free 127.x.y.z:`port` to `target`: a Service's address (the API server's, or one whose
    pods this kubelet runs). `target` is an address, or a function giving one at each connection (None:
    nothing serves now, and the connection is closed, as a Service without endpoints refuses)."""

    def __init__(
        self,
        target: tuple[str, int] | Callable[[], tuple[str, int] | None],
        *,
        port: int = 443,
        note: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.target = target
        self.note = note
        self.listener = socket.socket()
        for _ in range(50):
            address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
            try:
                self.listener.bind((address, port))
                break
            except OSError:
                continue
        else:
            raise OSError(f"no free loopback address with port {port} for a Service")
        self.address = address
        self.listener.listen(64)

    def start(self) -> None:
        threading.Thread(target=self._accept, name="kubelet-api-forward", daemon=True).start()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # stopped
            try:
                target = self.target() if callable(self.target) else self.target
                if target is None:
                    raise OSError("no endpoint")
                upstream = socket.create_connection(target)
            except Exception as exc:  # the accept loop outlives any one connection
                self.note(f"forwarder {self.address}: {exc!r}")
                client.close()
                continue
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                source.shutdown(socket.SHUT_RD)
