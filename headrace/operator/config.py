"""What the operator is told at start: where the database is, which image its workers run, and how often it looks."""

from dataclasses import dataclass, field

from headrace.model.contract import DATABASE_URL_KEY
from headrace.operator.resources.job import WorkerPodSettings


@dataclass(frozen=True, kw_only=True)
class OperatorConfig:
    """Settings of one operator process; the CLI fills them from flags and environment variables."""

    database_url: str
    """Postgres URL the operator itself uses (registering jobs, reading progress)."""

    worker_image: str
    """Image of the worker pods (the headrace image; the chart passes its own)."""

    worker_pods: WorkerPodSettings = field(default_factory=WorkerPodSettings)
    """Pull policy and Secrets, security contexts, default resources and ServiceAccount of the worker pods."""

    database_secret: str = "headrace-database"
    """Secret, in each IngestionJob's namespace, whose `database_secret_key` the workers get as DATABASE_URL."""

    database_secret_key: str = DATABASE_URL_KEY
    """Key of the database URL in `database_secret`."""

    observe_interval: float = 10.0
    """Seconds between two looks at a job's progress."""

    backoff_limit: int = 6
    """Worker pod failures (other than a stopped worker's exit 143) before a run's Job fails."""

    ttl_seconds_after_finished: int = 86_400
    """How long a finished worker Job stays for inspection before Kubernetes deletes it."""

    metrics_port: int | None = None
    """Serve the operator's Prometheus metrics on this port (None: not at all)."""

    migrate: bool = True
    """Apply pending database migrations at start (they take an advisory lock, so this is safe)."""
