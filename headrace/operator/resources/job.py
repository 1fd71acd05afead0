"""The batch/v1 Job that runs one run's worker pods, in the work-queue pattern.

`completions` stays unset: the workers share one queue, the first to find it drained exits 0, and the
Job completes when every pod has stopped. `parallelism` is the desired worker count (0 while suspended).
"""

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from headrace.model import IngestionJob, Resources
from headrace.model.contract import (
    INGEST_TOKEN_DIR,
    INGEST_TOKEN_FILE_ENV,
    INGEST_TOKEN_PATH,
    INGEST_TOKEN_SECONDS,
    INGEST_URL_ENV,
    METRICS_PORT_ENV,
    VOLUME_ROOT_ENV,
    WORKER_EXIT_STOPPED,
    WORKER_METRICS_PORT,
    WORKER_METRICS_PORT_NAME,
    WORKER_SECRETS_DIR,
    WORKER_VOLUME_ROOT,
)
from headrace.operator.resources.labels import RUN_LABEL, object_labels, owner_reference
from headrace.operator.resources.podsecurity import restricted_violations

CONTAINER = "worker"
MAX_NAME = 63  # the Job controller copies the name into a label value on its pods

PullPolicy = Literal["Always", "IfNotPresent", "Never"]


def restricted_pod_security_context() -> dict[str, Any]:
    """The worker pod's securityContext unless the operator is told otherwise: Pod Security "restricted"."""
    return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def restricted_security_context() -> dict[str, Any]:
    """The worker container's securityContext unless the operator is told otherwise: "restricted", plus a
    read-only root filesystem (the worker writes only to its /tmp emptyDir)."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def default_resources() -> Resources:
    """Resources of a worker container unless the operator is told otherwise."""
    return Resources(requests={"cpu": "500m", "memory": "512Mi"}, limits={"memory": "1Gi"})


@dataclass(frozen=True, kw_only=True)
class WorkerPodSettings:
    """What the operator's installer (the chart) decides about every worker pod, as opposed to what each
    IngestionJob decides. Construction refuses settings whose pods would break Pod Security "restricted"."""

    image_pull_policy: PullPolicy = "IfNotPresent"
    """imagePullPolicy of the worker container."""

    image_pull_secrets: tuple[str, ...] = ()
    """Secrets, in each IngestionJob's namespace, the kubelet pulls the worker image with."""

    pod_security_context: dict[str, Any] = field(default_factory=restricted_pod_security_context)
    """securityContext of the worker pod; replaces the built-in one as a whole."""

    security_context: dict[str, Any] = field(default_factory=restricted_security_context)
    """securityContext of the worker container; replaces the built-in one as a whole."""

    resources: Resources = field(default_factory=default_resources)
    """Requests and limits of the worker container for IngestionJobs that set none in `spec.workers.resources`."""

    service_account: str | None = None
    """ServiceAccount, in each IngestionJob's namespace, the worker pods run as (e.g. for IRSA or Workload
    Identity); unset means the namespace's `default`. Its API token is never mounted."""

    def __post_init__(self) -> None:
        problems = restricted_violations(self.pod_spec({"name": CONTAINER}), read_only_root=False)
        if problems:
            raise ValueError('worker pods would break Pod Security "restricted": ' + "; ".join(problems))
        if "cpu" not in (self.resources.requests or {}):
            raise ValueError("worker resources must request cpu: the HPA's CPU target is relative to it")

    def pod_spec(self, container: dict[str, Any]) -> dict[str, Any]:
        """The pod-level fields these settings decide, around `container` (which gets its own)."""
        pod: dict[str, Any] = {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": copy.deepcopy(self.pod_security_context),
            "containers": [{**container, "securityContext": copy.deepcopy(self.security_context)}],
        }
        if self.service_account is not None:
            pod["serviceAccountName"] = self.service_account
        if self.image_pull_secrets:
            pod["imagePullSecrets"] = [{"name": name} for name in self.image_pull_secrets]
        return pod


def worker_resources(job: IngestionJob, default: Resources) -> dict[str, Any]:
    """The job's requests and limits, each taken whole from the operator's `default` when the job sets none."""
    own = job.spec.workers.resources or Resources()
    return Resources(
        requests=default.requests if own.requests is None else own.requests,
        limits=default.limits if own.limits is None else own.limits,
    ).to_wire()


class InvalidSpec(ValueError):
    """A cross-field rule the schema cannot check; the message names the field."""


def job_name(ingestion_job: str, run: int) -> str:
    """`<name>-run-<N>`, shortened with a hash of the full name when that would exceed 63 characters."""
    suffix = f"-run-{run}"
    name = ingestion_job + suffix
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(ingestion_job.encode()).hexdigest()[:6]
    keep = MAX_NAME - len(suffix) - len(digest) - 1
    return f"{ingestion_job[:keep].rstrip('-')}-{digest}{suffix}"


def check_cluster_spec(job: IngestionJob) -> None:
    """Rules that hold in a cluster but not in local mode; raises InvalidSpec naming the field."""
    volume = job.spec.source.volume
    if volume is not None and volume.claim_name is None:
        raise InvalidSpec("spec.source.volume.claimName: required in a cluster (only `headrace run` reads local files)")


def parallelism(job: IngestionJob) -> int:
    """Worker pods wanted now: none while suspended, else the desired replicas (within [min, max])."""
    return 0 if job.spec.suspend else job.spec.workers.desired


def build_worker_job(
    job: IngestionJob,
    *,
    run: int,
    image: str,
    pods: WorkerPodSettings,
    ingest_url: str,
    ingest_audience: str,
    backoff_limit: int,
    ttl_seconds_after_finished: int,
) -> dict[str, Any]:
    """The worker Job of `run`. Raises InvalidSpec when the spec cannot run in a cluster.

    The pods hold no database credential: they call the ingest service at `ingest_url` with a projected
    ServiceAccount token of `ingest_audience`, bound to the pod, which the service trades (TokenReview)
    for this one IngestionJob and nothing else. The token is short-lived and the kubelet renews it."""
    check_cluster_spec(job)
    spec = job.spec
    labels = {**object_labels(job), RUN_LABEL: str(run)}
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {
            "name": "ingest-token",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": ingest_audience,
                            "expirationSeconds": INGEST_TOKEN_SECONDS,
                            "path": INGEST_TOKEN_PATH.rsplit("/", 1)[1],
                        }
                    }
                ]
            },
        },
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "ingest-token", "mountPath": INGEST_TOKEN_DIR, "readOnly": True},
    ]
    env: list[dict[str, Any]] = [
        {"name": INGEST_URL_ENV, "value": ingest_url},
        {"name": INGEST_TOKEN_FILE_ENV, "value": INGEST_TOKEN_PATH},
        {"name": "HEADRACE_LOG_FORMAT", "value": "json"},
        {"name": METRICS_PORT_ENV, "value": str(WORKER_METRICS_PORT)},
    ]
    if spec.source.volume is not None:
        volumes.append(
            {"name": "source", "persistentVolumeClaim": {"claimName": spec.source.volume.claim_name, "readOnly": True}}
        )
        mounts.append({"name": "source", "mountPath": WORKER_VOLUME_ROOT, "readOnly": True})
        env.append({"name": VOLUME_ROOT_ENV, "value": WORKER_VOLUME_ROOT})
    for index, secret in enumerate(spec.secret_names()):
        volumes.append({"name": f"secret-{index}", "secret": {"secretName": secret}})
        mounts.append({"name": f"secret-{index}", "mountPath": f"{WORKER_SECRETS_DIR}/{secret}", "readOnly": True})

    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": pods.image_pull_policy,
        "command": ["headrace", "worker", "--job", job.metadata.uid],
        "env": env,
        "ports": [{"name": WORKER_METRICS_PORT_NAME, "containerPort": WORKER_METRICS_PORT, "protocol": "TCP"}],
        "resources": worker_resources(job, pods.resources),
        "volumeMounts": mounts,
    }
    pod_spec = pods.pod_spec(container)
    pod_spec["volumes"] = volumes
    if spec.workers.node_selector:
        pod_spec["nodeSelector"] = dict(spec.workers.node_selector)
    if spec.workers.tolerations:
        pod_spec["tolerations"] = [toleration.to_wire() for toleration in spec.workers.tolerations]

    job_spec: dict[str, Any] = {
        "parallelism": parallelism(job),
        "backoffLimit": backoff_limit,
        "ttlSecondsAfterFinished": ttl_seconds_after_finished,
        "podFailurePolicy": {
            "rules": [
                # A worker stopped by SIGTERM (scale-down, eviction, node drain) hands its task back and
                # exits 143: not a failure of the run, so it must not use up backoffLimit.
                {
                    "action": "Ignore",
                    "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [WORKER_EXIT_STOPPED]},
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(job.metadata.name, run),
            "namespace": job.metadata.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(job)],
        },
        "spec": job_spec,
    }
