"""The autoscaling/v2 HorizontalPodAutoscaler that scales an IngestionJob through its /scale subresource."""

from typing import Any

from headrace.model import API_VERSION, KIND, IngestionJob
from headrace.operator.resources.labels import object_labels, owner_reference

EXTERNAL_METRIC = "headrace_tasks_pending"


def hpa_name(ingestion_job: str) -> str:
    """The HPA is named after its IngestionJob (a different kind, so no clash)."""
    return ingestion_job


def build_hpa(job: IngestionJob) -> dict[str, Any]:
    """The HPA of a job in `autoscaling.mode: hpa`: CPU always, the pending-task backlog when asked for."""
    workers = job.spec.workers
    autoscaling = workers.autoscaling
    metrics: list[dict[str, Any]] = [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": autoscaling.target_cpu_utilization},
            },
        }
    ]
    if autoscaling.tasks_pending_per_worker is not None:
        metrics.append(
            {
                "type": "External",
                "external": {
                    "metric": {
                        "name": EXTERNAL_METRIC,
                        "selector": {
                            "matchLabels": {"namespace": job.metadata.namespace, "ingestionjob": job.metadata.name}
                        },
                    },
                    "target": {"type": "AverageValue", "averageValue": str(autoscaling.tasks_pending_per_worker)},
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": hpa_name(job.metadata.name),
            "namespace": job.metadata.namespace,
            "labels": object_labels(job),
            "ownerReferences": [owner_reference(job)],
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": KIND, "name": job.metadata.name},
            # An HPA cannot go below one replica (scale-to-zero is an alpha feature gate); min 0 means 1 here.
            "minReplicas": max(1, workers.min),
            "maxReplicas": workers.max,
            "metrics": metrics,
        },
    }
