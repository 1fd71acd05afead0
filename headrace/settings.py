"""The one way Headrace is configured: a pydantic-settings class per role, read from `HEADRACE_*` variables.

Field `x_y` of a role's class is read from `HEADRACE_X_Y`; the CLI passes the flags it was given as keyword
arguments, which win over the environment. Every role's class extends `Settings` (logging) and takes what
else it shares from here: the database URL (`DatabaseSettings`, or `DatabaseUrl` where it is optional) and
the listening address (`ListenSettings`, only for a role that listens on it). docs/settings.md lists every
setting, generated from these classes (scripts/gen-settings.py).
"""

from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from headrace.model.contract import DATABASE_URL_ENV as POD_DATABASE_URL_ENV

ENV_PREFIX = "HEADRACE_"
DATABASE_URL_VARIABLES = ("HEADRACE_DATABASE_URL", POD_DATABASE_URL_ENV)
"""Where the database URL is read from, first found first: ours, then the name a Secret usually gives it."""

LogFormat = Literal["json", "text"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "WARN", "FATAL", "NOTSET"]
"""The names Python's logging knows, in any case."""

_DATABASE_URL = AliasChoices(*DATABASE_URL_VARIABLES, "database_url")  # the field's name: a keyword argument

DatabaseUrl = Annotated[SecretStr, Field(validation_alias=_DATABASE_URL)]
"""A Postgres URL, from `HEADRACE_DATABASE_URL` or `DATABASE_URL`; `OptionalDatabaseUrl` where a role can do
without one."""

OptionalDatabaseUrl = Annotated[SecretStr | None, Field(validation_alias=_DATABASE_URL)]


class Settings(BaseSettings):
    """What every role is told: how it logs. Field `x_y` is read from `HEADRACE_X_Y`, validated once, frozen."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True, use_attribute_docstrings=True)

    log_format: LogFormat | None = None
    """Log format: `json` or `text`; unset, text on a terminal and JSON elsewhere."""

    log_level: LogLevel = "INFO"
    """Least severe log records written (`DEBUG`, `INFO`, `WARNING`, `ERROR`); commands a person reads at a
    terminal (`run`, `demo`, `search`, `local`) log warnings only unless told."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class DatabaseSettings(Settings):
    """A role that needs the database."""

    database_url: DatabaseUrl
    """Postgres URL, from `HEADRACE_DATABASE_URL` or `DATABASE_URL` (the release's database Secret)."""


class ListenSettings(Settings):
    """A role that serves HTTP on one address (the search API). Names avoid `HEADRACE_PORT` and
    `HEADRACE_API_PORT`: Kubernetes injects variables of that shape for Services named `headrace` or
    `headrace-api` into every pod of the namespace."""

    listen_host: str = "0.0.0.0"
    """Address to bind (`127.0.0.1` for a local API, which serves without authentication)."""

    listen_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    """Port to serve on (0: any free port)."""


class LocalSettings(Settings):
    """Local mode's commands (`run`, `demo`, `search`, `migrate`, `api --local`, ...): the embedded Postgres
    under `--data-dir`, unless a database URL is given."""

    database_url: OptionalDatabaseUrl = None
    """Postgres URL, from `HEADRACE_DATABASE_URL` or `DATABASE_URL`; unset, local mode starts its embedded
    Postgres (and says so when one is set: a URL left in the shell would send local commands elsewhere)."""


class CliSettings(Settings):
    """What the `headrace` command itself is told, whatever the subcommand."""

    debug: bool = False
    """Show the traceback of an error, not one line."""


def variables(settings: type[BaseSettings], field: str) -> list[str]:
    """The environment variables a settings class reads `field` from, in the order it looks."""
    alias = settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices if str(choice) != field]
    prefix = settings.model_config.get("env_prefix") or ""
    return [f"{prefix}{field}".upper()]


def errors(exc: ValidationError, settings: type[BaseSettings]) -> list[str]:
    """One line per refused setting, naming it as `--help` and docs/settings.md do: by its field's path
    (`worker_resources.requests.cpu: ...`; field `x_y` is variable `HEADRACE_X_Y`), or by its variable where
    that is named otherwise (`HEADRACE_DATABASE_URL`, `HEADRACE_LEADER_ELECTION_LEASE_DURATION`)."""
    lines = []
    for error in exc.errors():
        parts = [str(part) for part in error["loc"]]
        if (
            parts
            and parts[0] in settings.model_fields
            and variables(settings, parts[0])[0] != (f"{ENV_PREFIX}{parts[0]}".upper())
        ):
            parts[0] = variables(settings, parts[0])[0]
        path = "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in parts).removeprefix(".")
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}" if path else message)
    return lines
