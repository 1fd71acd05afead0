"""Prometheus metrics, one definition for every process that records them.

The worker's counters live in the pod that counts them: a pod that exits takes its unscraped counts
with it, so they measure throughput, not totals. Totals (runs, documents, tasks by state) are read
from Postgres by the API (`headrace.api.metrics`). docs/metrics.md lists every metric and says which
process serves it.

Per-IngestionJob series name the job with the label `ingestionjob` (never `job`, which is
Prometheus' own label for the scrape job).
"""

from prometheus_client import Counter, Histogram

# The label that names an IngestionJob on every per-job series.
INGESTIONJOB_LABEL = "ingestionjob"

TASKS_LEASED = Counter("headrace_tasks_leased_total", "Tasks leased by workers.", ["kind"])
TASKS_ACKED = Counter("headrace_tasks_acked_total", "Tasks completed and acknowledged.", ["kind"])
TASKS_FAILED = Counter("headrace_tasks_failed_total", "Task attempts that failed.", ["kind", "outcome"])
TASK_DURATION = Histogram(
    "headrace_task_duration_seconds",
    "Time from lease to ack or failure.",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
DOCUMENTS = Counter("headrace_documents_total", "Documents processed, by outcome.", ["outcome"])
DOCUMENT_BYTES = Counter("headrace_document_bytes_total", "Bytes of documents ingested.")
CHUNKS = Counter("headrace_chunks_total", "Chunks written.")
EXTRACTION_SECONDS = Histogram(
    "headrace_extraction_duration_seconds",
    "Time to extract and chunk one document, by its format (measured in the extraction sandbox).",
    ["format"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
EMBEDDED_CHUNKS = Counter("headrace_embedded_chunks_total", "Chunks embedded by workers.")
EMBED_SECONDS = Histogram(
    "headrace_embed_duration_seconds",
    "Time to embed one document's chunks (one or more requests to the model).",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
