"""The Secret holding a namespace's worker database credential (tenant credentials mode `roles`).

One per namespace, shared by the namespace's IngestionJobs. Each of them is an owner (none is the
controller), so the garbage collector deletes the Secret only when the last of them is gone, and never
while a job might still start workers that read it.
"""

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from headrace.model import API_VERSION, KIND, IngestionJob
from headrace.model.contract import DATABASE_URL_KEY
from headrace.operator.resources.labels import COMPONENT_LABEL, MANAGED_BY_LABEL, NAME_LABEL

ROLE_ANNOTATION = "headrace.io/database-role"
ROTATED_ANNOTATION = "headrace.io/rotated-at"


def secret_owner(job: IngestionJob) -> dict[str, Any]:
    """An owner reference to the job that neither controls the Secret nor blocks the job's deletion."""
    assert job.metadata.uid is not None
    return {"apiVersion": API_VERSION, "kind": KIND, "name": job.metadata.name, "uid": job.metadata.uid}


def build_worker_secret(
    owners: Sequence[IngestionJob], *, name: str, database_url: str, role: str, rotated_at: datetime
) -> dict[str, Any]:
    """The namespace's worker credential Secret, owned by `owners` (jobs of one namespace; more may join)."""
    job = owners[0]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": job.metadata.namespace,
            "labels": {NAME_LABEL: "headrace", COMPONENT_LABEL: "worker", MANAGED_BY_LABEL: "headrace-operator"},
            "annotations": {ROLE_ANNOTATION: role, ROTATED_ANNOTATION: rotated_at.isoformat()},
            "ownerReferences": list({owner.metadata.uid: secret_owner(owner) for owner in owners}.values()),
        },
        "data": {DATABASE_URL_KEY: base64.b64encode(database_url.encode()).decode()},
    }
