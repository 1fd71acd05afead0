"""What `headrace ingest-api` is told, from `HEADRACE_*` environment variables (the chart sets them)."""

from typing import Annotated

from pydantic import Field, field_validator

from headrace.kubeapi import KubeSettings
from headrace.settings import DatabaseSettings
from headrace.worker.wire import MAX_REQUEST_BYTES


class IngestSettings(DatabaseSettings, KubeSettings):
    """Everything the ingest service can be told. Field `x_y` is read from `HEADRACE_X_Y`.

    It listens on `ingest_host` and `ingest_port`, not the API's `listen_host` and `listen_port`: the chart
    sets these names, and the one Kubernetes service link that collides with them is handled below."""

    database_pool_size: Annotated[int, Field(ge=1, le=200)] = 20
    """Connections this process opens at most, however many workers call it: the bound on Postgres
    connections that worker pods no longer hold themselves."""

    database_acquire_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Longest a request waits for a free connection before it is answered 503 with Retry-After
    (workers ride that out)."""

    ingest_host: str = "0.0.0.0"
    """Address to bind."""

    ingest_port: Annotated[int, Field(ge=0, le=65535)] = 8081
    """The port served. Kubernetes gives every pod of a namespace `<SERVICE>_PORT=tcp://<ip>:<port>` for
    each Service there (unless `enableServiceLinks: false`): for a release named `headrace`, its Service
    `headrace-ingest` sets `HEADRACE_INGEST_PORT` so. A value of that form is Kubernetes', not the
    user's, and is not read as this setting."""

    @field_validator("ingest_port", mode="before")
    @classmethod
    def _not_a_service_link(cls, value: object) -> object:
        if isinstance(value, str) and value.startswith(("tcp://", "udp://")):
            return 8081
        return value

    ingest_audience: Annotated[str, Field(min_length=1)] = "headrace-ingest"
    """The audience a worker's projected ServiceAccount token must be issued for."""

    ingest_max_body_bytes: Annotated[int, Field(ge=MAX_REQUEST_BYTES)] = 2 * MAX_REQUEST_BYTES
    """Largest request body; more is a 413. Workers send at most `MAX_REQUEST_BYTES` (16 MiB) per request."""

    ingest_header_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Longest a request's line and headers may take to arrive, from the connection or the previous
    answer on it; then the connection is closed."""

    ingest_body_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 60.0
    """Longest a request's body may take to arrive after its headers; then a 408 and the connection is
    closed. A worker sends at most 16 MiB per request, from inside the cluster."""

    ingest_max_connections: Annotated[int, Field(ge=1)] = 1000
    """Open connections (or requests under way) past which a new request is answered 503 problem+json,
    with Retry-After (workers ride that out). Each worker holds a few connections; stalled ones are closed
    by the timeouts above."""

    ingest_rate_limit_per_second: Annotated[float, Field(ge=0)] = 2000.0
    """Sustained requests per second per job (all its workers together); 0 turns the limit off. A busy
    worker makes about 30 a second (small documents, docs/worker-api.md): this admits about 60 of them."""

    ingest_rate_limit_burst: Annotated[int, Field(ge=1)] = 4000
    """Requests a job's workers may make at once before the sustained rate applies."""

    auth_cache_seconds: Annotated[float, Field(ge=0, le=600)] = 10.0
    """How long a token's decision (which job it may work on) is reused."""

    shutdown_grace_seconds: Annotated[float, Field(ge=0, le=300)] = 20.0
    """On SIGTERM, how long open requests get to finish before they are closed (workers retry the rest)."""
