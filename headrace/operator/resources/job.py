"""The batch/v1 Job that runs one run's worker pods, in the work-queue pattern.

`completions` stays unset: the workers share one queue, the first to find it drained exits 0, and the
Job completes when every pod has stopped. `parallelism` is the desired worker count (0 while suspended).
"""

import hashlib
from typing import Any

from headrace.model import IngestionJob
from headrace.model.contract import (
    DATABASE_URL_ENV,
    VOLUME_ROOT_ENV,
    WORKER_EXIT_STOPPED,
    WORKER_SECRETS_DIR,
    WORKER_VOLUME_ROOT,
)
from headrace.operator.resources.labels import RUN_LABEL, object_labels, owner_reference

CONTAINER = "worker"
MAX_NAME = 63  # the Job controller copies the name into a label value on its pods


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
    """Worker pods wanted now: none while suspended, else the desired replicas, never more than `max`
    (`kubectl scale` through /scale is not bounded by it, an HPA is)."""
    workers = job.spec.workers
    return 0 if job.spec.suspend else min(workers.desired, workers.max)


def build_worker_job(
    job: IngestionJob,
    *,
    run: int,
    image: str,
    database_secret: str,
    database_secret_key: str,
    backoff_limit: int,
    ttl_seconds_after_finished: int,
) -> dict[str, Any]:
    """The worker Job of `run`. Raises InvalidSpec when the spec cannot run in a cluster."""
    check_cluster_spec(job)
    spec = job.spec
    labels = {**object_labels(job), RUN_LABEL: str(run)}
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    env: list[dict[str, Any]] = [
        {
            "name": DATABASE_URL_ENV,
            "valueFrom": {"secretKeyRef": {"name": database_secret, "key": database_secret_key}},
        },
        {"name": "HEADRACE_LOG_FORMAT", "value": "json"},
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
        "imagePullPolicy": "IfNotPresent",
        "command": ["headrace", "worker", "--job", job.metadata.uid],
        "env": env,
        "resources": spec.workers.resources.to_wire(),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
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
