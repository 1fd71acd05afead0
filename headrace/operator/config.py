"""What the operator is told at start, from `HEADRACE_*` environment variables (the chart sets them) or
keyword arguments (the CLI's flags, tests): one pydantic-settings class, like the API's `ApiSettings`."""

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from headrace.model import Resources
from headrace.model.contract import DATABASE_URL_KEY
from headrace.operator.resources.job import PullPolicy, WorkerPodSettings
from headrace.store.tenants import DEFAULT_ROLE_PREFIX, check_prefix

SpaceSeparated = Annotated[list[str], NoDecode]
TenantCredentials = Literal["roles", "shared"]


class OperatorSettings(BaseSettings):
    """Everything `headrace operator` can be told. Field `x_y` is read from `HEADRACE_X_Y`."""

    model_config = SettingsConfigDict(env_prefix="HEADRACE_", extra="ignore", frozen=True)

    database_url: SecretStr = Field(
        validation_alias=AliasChoices("HEADRACE_DATABASE_URL", "DATABASE_URL", "database_url")
    )
    """Postgres URL the operator itself uses (registering jobs, reading progress)."""

    worker_image: str
    """Image of the worker pods (the headrace image; the chart passes its own)."""

    namespaces: SpaceSeparated = []
    """Namespaces to watch (space-separated); every namespace when empty."""

    liveness: str | None = None
    """Serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz."""

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

    tenant_password_max_age_hours: Annotated[float, Field(ge=0)] = 168.0
    """Hours after which a namespace's password is replaced, once none of the namespace's runs is unfinished;
    0 rotates only when the Secret is lost or the namespace's jobs were all deleted."""

    database_secret: str = "headrace-database"
    """Secret, in each IngestionJob's namespace, whose `database_secret_key` the workers get as DATABASE_URL
    in `shared` mode."""

    database_secret_key: str = DATABASE_URL_KEY
    """Key of the database URL in `database_secret` (`shared` mode)."""

    worker_image_pull_policy: PullPolicy = "IfNotPresent"
    """imagePullPolicy of the worker container."""

    worker_image_pull_secrets: SpaceSeparated = []
    """Secrets (space-separated), in each IngestionJob's namespace, to pull the worker image with."""

    worker_pod_security_context: dict[str, Any] | None = None
    """securityContext of the worker pods (JSON); must meet Pod Security restricted. Default: runAsNonRoot,
    seccomp RuntimeDefault."""

    worker_security_context: dict[str, Any] | None = None
    """securityContext of the worker container (JSON); must meet Pod Security restricted. Default:
    restricted with a read-only root filesystem."""

    worker_resources: Resources | None = None
    """Resources (requests, limits) of a worker container (JSON), for IngestionJobs that set none."""

    worker_service_account: str | None = None
    """ServiceAccount, in each IngestionJob's namespace, of the worker pods (e.g. for IRSA)."""

    database_pool_size: Annotated[int, Field(ge=1, le=100)] = 5
    """Most connections the operator holds to Postgres at once (each reconcile step borrows one per query)."""

    observe_interval: Annotated[float, Field(gt=0, le=3600)] = 10.0
    """Seconds between two looks at a job with a run in progress or a schedule."""

    backoff_limit: Annotated[int, Field(ge=0)] = 6
    """Worker pod failures (other than a stopped worker's exit 143) before a run's Job fails."""

    ttl_seconds_after_finished: Annotated[int, Field(ge=0)] = 86_400
    """How long a finished worker Job stays for inspection before Kubernetes deletes it."""

    allow_private_networks: bool = False
    """Whether IngestionJobs may set `allowPrivateNetworks`; when not, such specs are refused (InvalidSpec)."""

    metrics_port: int | None = None
    """Serve the operator's Prometheus metrics on this port (None: not at all)."""

    migrate: bool = True
    """Apply pending database migrations at start (they take an advisory lock, so this is safe)."""

    @field_validator("namespaces", "worker_image_pull_secrets", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return value.split() if isinstance(value, str) else [n for item in value for n in str(item).split()]

    @field_validator("worker_resources", mode="before")
    @classmethod
    def _quantities_as_strings(cls, value: Any) -> Any:
        """`cpu: 1` in Helm values arrives as a JSON number; Kubernetes reads it as the quantity "1", so do we."""
        if not isinstance(value, dict):
            return value
        return {
            key: {
                n: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for n, v in amounts.items()
            }
            if isinstance(amounts, dict)
            else amounts
            for key, amounts in value.items()
        }

    @model_validator(mode="after")
    def _pods_are_restricted(self) -> "OperatorSettings":
        self.worker_pods()  # refuses settings whose pods would break Pod Security "restricted"
        return self

    def worker_pods(self) -> WorkerPodSettings:
        """Pull policy and Secrets, security contexts, default resources and ServiceAccount of the worker pods."""
        given: dict[str, Any] = {}
        if self.worker_pod_security_context is not None:
            given["pod_security_context"] = self.worker_pod_security_context
        if self.worker_security_context is not None:
            given["security_context"] = self.worker_security_context
        if self.worker_resources is not None:
            given["resources"] = self.worker_resources
        return WorkerPodSettings(
            image_pull_policy=self.worker_image_pull_policy,
            image_pull_secrets=tuple(self.worker_image_pull_secrets),
            service_account=self.worker_service_account or None,
            **given,
        )

    @field_validator("tenant_role_prefix")
    @classmethod
    def _usable_prefix(cls, value: str) -> str:
        check_prefix(value)
        return value

    @property
    def worker_database_secret(self) -> str:
        """The Secret, in each IngestionJob's namespace, that the workers read their database URL from."""
        return self.worker_credentials_secret if self.tenant_credentials == "roles" else self.database_secret

    @property
    def tenant_password_max_age(self) -> timedelta | None:
        """`tenant_password_max_age_hours` as a duration; None when passwords are not rotated on age."""
        hours = self.tenant_password_max_age_hours
        return timedelta(hours=hours) if hours else None
