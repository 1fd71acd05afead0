"""What the operator is told at start: where the database is, which image its workers run, and how often it looks."""

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from headrace.model.contract import DATABASE_URL_KEY
from headrace.operator.resources.job import WorkerPodSettings
from headrace.store.tenants import DEFAULT_ROLE_PREFIX, check_prefix

TenantCredentials = Literal["roles", "shared"]


@dataclass(frozen=True, kw_only=True)
class OperatorConfig:
    """Settings of one operator process; the CLI fills them from flags and environment variables."""

    database_url: str
    """Postgres URL the operator itself uses (registering jobs, reading progress)."""

    worker_image: str
    """Image of the worker pods (the headrace image; the chart passes its own)."""

    worker_pods: WorkerPodSettings = field(default_factory=WorkerPodSettings)
    """Pull policy and Secrets, security contexts, default resources and ServiceAccount of the worker pods."""

    tenant_credentials: TenantCredentials = "roles"
    """How workers reach Postgres. `roles`: the operator creates a Postgres role per namespace, confined to
    that namespace's rows by row-level security, and writes its URL into `worker_credentials_secret` in the
    namespace (the owner URL never leaves the operator). `shared`: workers read the installation's own URL
    from `database_secret`, which you copy into each namespace, for a Postgres where the operator's role
    may not create roles; every job then carries a TenantIsolated=False condition (docs/security.md)."""

    worker_credentials_secret: str = "headrace-worker-database"
    """Secret the operator writes into each IngestionJob's namespace in `roles` mode."""

    tenant_role_prefix: str = DEFAULT_ROLE_PREFIX
    """Prefix of the Postgres roles the operator creates (`<prefix>tenant`, `<prefix>ns_<namespace uid>`).
    Roles are shared by every database of a Postgres server: give each installation on one server its own."""

    tenant_password_max_age: timedelta | None = timedelta(days=7)
    """A namespace's password is replaced once it is older than this and none of the namespace's runs is
    unfinished; None rotates only when the Secret is lost or the namespace's jobs were all deleted."""

    database_secret: str = "headrace-database"
    """Secret, in each IngestionJob's namespace, whose `database_secret_key` the workers get as DATABASE_URL
    in `shared` mode."""

    database_secret_key: str = DATABASE_URL_KEY
    """Key of the database URL in `database_secret` (`shared` mode)."""

    observe_interval: float = 10.0
    """Seconds between two looks at a job's progress."""

    backoff_limit: int = 6
    """Worker pod failures (other than a stopped worker's exit 143) before a run's Job fails."""

    ttl_seconds_after_finished: int = 86_400
    """How long a finished worker Job stays for inspection before Kubernetes deletes it."""

    migrate: bool = True
    """Apply pending database migrations at start (they take an advisory lock, so this is safe)."""

    def __post_init__(self) -> None:
        check_prefix(self.tenant_role_prefix)
