"""What the operator is told at start, from `HEADRACE_*` environment variables (the chart sets them) or
keyword arguments (the CLI's flags, tests): one pydantic-settings class, like the API's `ApiSettings`."""

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from headrace.model import Resources
from headrace.model.contract import INGEST_AUDIENCE
from headrace.operator.resources.job import PullPolicy, WorkerPodSettings
from headrace.settings import DatabaseSettings

SpaceSeparated = Annotated[list[str], NoDecode]


class OperatorSettings(DatabaseSettings):
    """Everything `headrace operator` can be told. Field `x_y` is read from `HEADRACE_X_Y`; leader election
    has its own (`ElectionSettings`)."""

    worker_image: str
    """Image of the worker pods (the headrace image; the chart passes its own)."""

    namespaces: SpaceSeparated = []
    """Namespaces to watch (space-separated); every namespace when empty."""

    liveness: str | None = None
    """Serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz."""

    ingest_url: str
    """Where worker pods reach the ingest service, e.g. http://headrace-ingest.headrace.svc:8081 (the chart
    sets it). Workers hold no database credential: every write they make goes through it."""

    ingest_audience: str = INGEST_AUDIENCE
    """Audience of the projected ServiceAccount token worker pods present to the ingest service; it must be
    the one the service accepts (its own `ingest_audience`)."""

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
    """Resources (requests, limits) of a worker container (JSON), for IngestionJobs that set none. Default:
    requests cpu 500m, memory 512Mi; limits memory 1Gi."""

    worker_service_account: str | None = None
    """ServiceAccount, in each IngestionJob's namespace, of the worker pods (e.g. for IRSA); unset, the
    namespace's `default`."""

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

    @field_validator("ingest_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/")

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
