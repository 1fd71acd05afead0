"""What `headrace worker` is told, from `HEADRACE_*` environment variables (the operator's pod template
and `headrace run` set them) or keyword arguments (the CLI's flags): one pydantic-settings class, as
the API's `ApiSettings` and the operator's `OperatorSettings`."""

from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from headrace.model.contract import INGEST_TOKEN_PATH, WORKER_SECRETS_DIR
from headrace.settings import OptionalDatabaseUrl, Settings


class WorkerSettings(Settings):
    """Everything a worker can be told. Field `x_y` is read from `HEADRACE_X_Y`."""

    ingest_url: str | None = None
    """The ingest service (the worker API) a worker pod keeps its job's state through, e.g.
    `http://headrace-ingest.headrace-system.svc:8081` (`HEADRACE_INGEST_URL`, set by the operator). When
    set, the worker holds no database credential and `database_url` is not read."""

    ingest_token_file: Path = Path(INGEST_TOKEN_PATH)
    """The pod's projected ServiceAccount token for the ingest service (`HEADRACE_INGEST_TOKEN_FILE`), read
    again for every request: the kubelet replaces it before it expires."""

    database_url: OptionalDatabaseUrl = None
    """Postgres URL, from `HEADRACE_DATABASE_URL` or `DATABASE_URL`: local mode's workers (`headrace run`),
    which keep their job's state in the database directly."""

    volume_root: Path = Path("/")
    """Folder that spec.source.volume.path is relative to (`HEADRACE_VOLUME_ROOT`)."""

    secrets_dir: Path = Path(WORKER_SECRETS_DIR)
    """Folder holding one sub-folder per referenced Secret, one file per key (`HEADRACE_SECRETS_DIR`)."""

    extract_memory_mib: Annotated[int, Field(ge=64, le=1024 * 1024)] = 1024
    """Address-space limit of the extraction child process, which parses documents."""

    lease_seconds: Annotated[float, Field(ge=1, le=3600)] = 30.0
    """Lease length of a task; heartbeats renew it every third of it."""

    grace_seconds: Annotated[float, Field(ge=0, le=3600)] = 25.0
    """On SIGTERM, how long the current task may run before it is handed back."""

    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    """Serve Prometheus metrics on this port."""

    @model_validator(mode="after")
    def _somewhere_to_keep_state(self) -> "WorkerSettings":
        if self.ingest_url is None and self.database_url is None:
            raise ValueError(
                "the worker needs the ingest service's URL (HEADRACE_INGEST_URL) or, in local mode, "
                "a database URL (--database-url, HEADRACE_DATABASE_URL)"
            )
        return self
