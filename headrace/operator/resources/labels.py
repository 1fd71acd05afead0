"""Labels and owner references shared by every object built for an IngestionJob."""

from typing import Any

from headrace.model import API_VERSION, KIND, IngestionJob

NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
JOB_LABEL = "headrace.io/ingestionjob"
UID_LABEL = "headrace.io/ingestionjob-uid"
RUN_LABEL = "headrace.io/run"


def selector_labels(job: IngestionJob) -> dict[str, str]:
    """The labels that pick out this IngestionJob's worker pods, and nothing else."""
    return {NAME_LABEL: "headrace", COMPONENT_LABEL: "worker", UID_LABEL: _uid(job)}


def selector(job: IngestionJob) -> str:
    """`selector_labels` in the string form of status.workers.selector (read by the HPA through /scale)."""
    return ",".join(f"{key}={value}" for key, value in selector_labels(job).items())


def object_labels(job: IngestionJob) -> dict[str, str]:
    """The labels of everything built for the job: the selector labels plus the job's name for people."""
    return {**selector_labels(job), MANAGED_BY_LABEL: "headrace-operator", JOB_LABEL: job.metadata.name}


def owner_reference(job: IngestionJob) -> dict[str, Any]:
    """Makes the IngestionJob the controller of a child, so deleting it garbage-collects the child."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": job.metadata.name,
        "uid": _uid(job),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _uid(job: IngestionJob) -> str:
    if job.metadata.uid is None:
        raise ValueError("an IngestionJob from the API server has a uid; this one has none")
    return job.metadata.uid
