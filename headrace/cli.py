"""The `headrace` command: one entry point for every role (demo, run, worker, migrate, search, ...)."""

import asyncio
import importlib
import os
import signal
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import click
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsError
from rich.console import Console
from rich.markup import escape

from headrace import cli_errors, logs, signals
from headrace.model.contract import WORKER_SECRETS_DIR
from headrace.settings import DATABASE_URL_VARIABLES, CliSettings, ListenSettings, LocalSettings, Settings, variables
from headrace.settings import errors as settings_errors

T = TypeVar("T")
S = TypeVar("S", bound=BaseSettings)

COMMANDLINE = click.core.ParameterSource.COMMANDLINE

database_url_option = click.option(
    "--database-url", help="Postgres URL (HEADRACE_DATABASE_URL or DATABASE_URL); unset, local mode's embedded one."
)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".headrace"),
    show_default=True,
    help="Where the embedded Postgres keeps its data when no --database-url is given.",
)


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


class Configured(click.Command):
    """A command configured by settings classes (`settings`: "module:Class" names, imported only when asked):
    its `--help` ends with the variables they read, and docs/settings.md lists them under its name."""

    def __init__(self, *args: Any, settings: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings

    def settings_classes(self) -> list[type[BaseSettings]]:
        found = []
        for name in self.settings:
            module, _, attribute = name.partition(":")
            found.append(getattr(importlib.import_module(module), attribute))
        return found

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = {
            name: None
            for cls in self.settings_classes()
            for field in cls.model_fields
            for name in variables(cls, field)
        }
        with formatter.section("Environment (flags override it; every setting in docs/settings.md)"):
            formatter.write_text(", ".join(names))
        super().format_epilog(ctx, formatter)


def _default(settings: type[BaseSettings], field: str) -> str:
    """A setting's default, for an option's help."""
    return str(settings.model_fields[field].default)


API_SETTINGS = "headrace.api.settings:ApiSettings"
LOCAL_SETTINGS = "headrace.settings:LocalSettings"


def _given(*names: str) -> dict[str, Any]:
    """The current command's options that its command line gave: passed to a settings class, they win over
    the environment, which the class reads for everything else."""
    context = click.get_current_context()
    return {name: context.params[name] for name in names if context.get_parameter_source(name) == COMMANDLINE}


def _settings(
    cls: type[S], given: dict[str, Any], *, what: str = "", refusal: type[click.ClickException] = click.UsageError
) -> S:
    """`cls` from the environment and `given`; a missing or refused setting is one line naming it (and the flag
    that sets it), raised as `refusal`, after `what` when given."""
    try:
        return cls(**given)
    except SettingsError as exc:  # a variable that should hold JSON does not
        problems = [f"{exc}: {exc.__cause__}"]
    except ValidationError as exc:
        missing = dict.fromkeys(str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing" and e["loc"])
        problems = [_needs(cls, name) for name in missing]
        problems += [line for line in settings_errors(exc, cls) if not line.endswith(": Field required")]
    raise refusal(f"{what}: " * bool(what) + "; ".join(problems))


def _needs(cls: type[BaseSettings], name: str) -> str:
    """What to give for a missing setting `name` (a field, or the variable it is read from): its flag, if the
    current command has one, or its variables."""
    field = next((f for f in cls.model_fields if name == f or name in variables(cls, f)), name)
    command = click.get_current_context().command
    flags = [opt for param in command.params if param.name == field for opt in param.opts if opt.startswith("--")]
    names = [*flags[:1], *(variables(cls, field) if field in cls.model_fields else [name])]
    either = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
    return f"needs a database URL ({either})" if field == "database_url" else f"needs {either}"


@contextmanager
def _database(settings: LocalSettings | None, data_dir: Path) -> Iterator[str]:
    """The database of `settings`, or the embedded one under data_dir (always, when None)."""
    url = settings.database_url.get_secret_value() if settings and settings.database_url else None
    if url:
        _say_which_database(url)
        cli_errors.remember_database(url)
        yield url
        return
    from headrace.local import LocalModeUnavailable, embedded_postgres

    try:
        with embedded_postgres(data_dir) as embedded:
            cli_errors.remember_database(embedded)
            yield embedded
    except LocalModeUnavailable as exc:  # raised on entry only: the one line a user needs, no traceback
        raise click.ClickException(str(exc)) from None


def _with_pool(dsn: str, work: Callable[[Any], Awaitable[T]], *, max_size: int = 4) -> T:
    from headrace.store.db import open_pool

    async def go() -> T:
        async with open_pool(dsn, max_size=max_size) as pool:
            return await work(pool)

    return _run(go())


def _say_which_database(url: str) -> None:
    """Say so when the database came from the environment: a DATABASE_URL left in the shell must not
    silently send local commands to another database than the embedded one."""
    context = click.get_current_context(silent=True)
    if context is None or context.get_parameter_source("database_url") == COMMANDLINE:
        return
    parts = urlsplit(url)
    where = f"{parts.hostname or 'localhost'}{f':{parts.port}' if parts.port else ''}{parts.path}"
    variable = next((name for name in DATABASE_URL_VARIABLES if os.environ.get(name)), DATABASE_URL_VARIABLES[0])
    click.echo(f"Using the database at {where} from ${variable}, not the embedded one (unset it for that).", err=True)


PERSONAL_COMMANDS = {"run", "demo", "search", "local"}
"""Commands a person reads at a terminal: they log warnings only, unless --log-level asks for more."""


@click.group(cls=cli_errors.Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-format",
    type=click.Choice(["json", "text"]),
    help="Log format (HEADRACE_LOG_FORMAT); defaults to text on a terminal and JSON elsewhere.",
)
@click.option(
    "--log-level",
    help="Least severe log records written: DEBUG, INFO, WARNING, ERROR (HEADRACE_LOG_LEVEL) "
    f"[default: {_default(Settings, 'log_level')}].",
)
@click.option("--debug", is_flag=True, help="Show the traceback of an error, not one line (HEADRACE_DEBUG).")
@click.version_option(package_name="headrace")
@click.pass_context
def main(ctx: click.Context, log_format: str | None, log_level: str | None, debug: bool) -> None:
    """Headrace: document ingestion on Kubernetes, and on your laptop.

    Every command is configured by HEADRACE_* environment variables, which its flags override (each
    command's --help names those it reads; docs/settings.md lists them all)."""
    settings = _settings(CliSettings, _given("log_format", "log_level", "debug"))
    level: str = settings.log_level
    if ctx.invoked_subcommand in PERSONAL_COMMANDS and "log_level" not in settings.model_fields_set:
        level = "WARNING"  # their own output says what happened; INFO lines would cut into it
    logs.configure(settings.log_format or ("text" if sys.stderr.isatty() else "json"), level)
    ctx.meta["headrace.debug"] = settings.debug
    if threading.current_thread() is threading.main_thread():  # not when a test invokes it from a thread
        # SIGTERM unwinds like Ctrl-C, so what a command started (the embedded Postgres) is stopped on the way out.
        signal.signal(signal.SIGTERM, signals.raise_interrupted)


@main.command(cls=Configured, settings=(LOCAL_SETTINGS,))
@database_url_option
@data_dir_option
def migrate(database_url: str | None, data_dir: Path) -> None:
    """Apply the database migrations (safe to run concurrently)."""
    from headrace.store import migrate as migrations

    async def go(pool: Any) -> tuple[list[Any], Any]:
        applied = await migrations.migrate(pool)
        return applied, await migrations.schema_state(pool)

    with _database(_settings(LocalSettings, _given("database_url")), data_dir) as dsn:
        applied, state = _with_pool(dsn, go)
    built_for = migrations.expected_version()
    click.echo(f"Applied {len(applied)} migrations; schema is at version {state.version}.")
    if state.version > built_for:
        # A newer release migrated this database: nothing of ours was left to apply. Whether this release's
        # API and operator may run on it is the schema's say; fail here, in the migration hook, if not.
        if state.compatible_from > built_for:
            raise click.ClickException(
                f"this headrace is built for schema {built_for} and cannot run on it: migration {state.breaking} "
                f"needs code for schema {state.compatible_from} or later (docs/operations.md, Upgrades and rollbacks)"
            )
        click.echo(f"This headrace is built for version {built_for}, which the newer schema declares compatible.")


@main.command(cls=Configured, settings=("headrace.worker.settings:WorkerSettings",))
@click.option("--job", "job_uid", required=True, type=click.UUID, help="uid of the IngestionJob to work on.")
@database_url_option
@click.option(
    "--volume-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder that spec.source.volume.path is relative to (HEADRACE_VOLUME_ROOT; default /).",
)
@click.option(
    "--secrets-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Folder with one sub-folder per referenced Secret, one file per key (HEADRACE_SECRETS_DIR; "
    f"default {WORKER_SECRETS_DIR}).",
)
@click.option(
    "--extract-memory-mib",
    type=int,
    help="Address-space limit of the extraction child process (HEADRACE_EXTRACT_MEMORY_MIB; default 1024).",
)
@click.option("--lease-seconds", type=float, help="Lease length of a task (HEADRACE_LEASE_SECONDS; default 30).")
@click.option(
    "--grace-seconds",
    type=float,
    help="On SIGTERM, how long the current task may run before it is handed back (HEADRACE_GRACE_SECONDS; default 25).",
)
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics on this port (HEADRACE_METRICS_PORT).")
def worker(job_uid: uuid.UUID, **flags: Any) -> None:
    """Lease and process the job's tasks until its queue is drained (exit 0), SIGTERM (exit 143) or Ctrl-C (130).

    Configured by HEADRACE_* environment variables (WorkerSettings); flags override them."""
    # A signal before the loop is running (while the pool or the source opens) is noted, not raised: the
    # loop then stops at once, as it would have, with 128 + the signal and no second message (`headrace
    # run` stops its workers with SIGTERM and speaks for them). A second one, say while the database is
    # still not answering, interrupts the wait.
    with signals.stopping(interrupt_while_starting=True) as stop:
        code = _work(job_uid, _given(*flags), stop)
    sys.exit(code)


def _work(job_uid: uuid.UUID, given: dict[str, Any], stop: signals.Stopping) -> int:
    """`headrace worker`'s work, with the stop signals taken over (`stop`); the exit code."""
    import logging

    from headrace.store.db import close_pool, create_pool
    from headrace.store.outage import ride_out
    from headrace.worker.loop import EXIT_REFUSED, Worker
    from headrace.worker.remote import IngestRefused, RemoteStore
    from headrace.worker.sandbox import cap_malloc_arenas
    from headrace.worker.settings import WorkerSettings
    from headrace.worker.store import DirectStore, WorkerStore

    cap_malloc_arenas()  # before the metrics server's thread, or any other
    settings = _settings(WorkerSettings, given)
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port)

    async def work(store: WorkerStore) -> int:
        loop = Worker(
            store,
            volume_root=settings.volume_root,
            secrets_dir=settings.secrets_dir,
            extract_memory_bytes=settings.extract_memory_mib * 1024 * 1024,
            lease_seconds=settings.lease_seconds,
            grace_seconds=settings.grace_seconds,
        )
        loop.install_signal_handlers()
        stop.then(loop.stop)  # at once, for a signal that came while starting
        try:
            return await loop.run()
        except IngestRefused as exc:  # a token that is not this job's worker's, a request the service refuses
            logging.getLogger("headrace.worker.loop").error("Refused by the ingest service", extra={"reason": str(exc)})
            return EXIT_REFUSED

    async def go() -> int:
        if stop.first is not None:
            return 128 + stop.first
        if settings.ingest_url is not None:
            remote = RemoteStore(settings.ingest_url, job_uid, token_file=settings.ingest_token_file)
            try:
                return await work(remote)
            finally:
                await remote.aclose()
        assert settings.database_url is not None
        cli_errors.remember_database(settings.database_url.get_secret_value())  # its address, should it stay down
        # The database may come up after the pod does, or be failing over: wait for it.
        pool = await ride_out(create_pool, settings.database_url.get_secret_value(), min_size=1, max_size=3)
        try:
            return await work(DirectStore(pool, job_uid))
        finally:
            await close_pool(pool)

    return _run(go())


def _run_manifest(
    manifest: Path,
    workers: int,
    database: LocalSettings | None,
    data_dir: Path,
    console: Console,
    secrets_dir: Path | None = None,
    retry_failed: bool = False,
) -> uuid.UUID:
    from headrace.local import ManifestConflict, NothingToRetry, local_uid, print_summary, run_job
    from headrace.model import InvalidManifest, load_manifest

    try:
        job = load_manifest(manifest)
    except InvalidManifest as exc:
        raise click.ClickException(str(exc)) from None
    volume = job.spec.source.volume
    # Workers open spec.source.volume.path beneath this root: the manifest's folder, or the filesystem's
    # root for an absolute path (local mode reads the user's own files).
    volume_root = Path("/") if volume and Path(volume.path).is_absolute() else manifest.resolve().parent
    if volume is not None:
        folder = volume_root / volume.path
        if not folder.is_dir():
            # A folder that is not there will not appear on a retry: say so now, not after the workers' retries.
            what = "is not a folder" if folder.exists() else "does not exist"
            raise click.ClickException(
                f"spec.source.volume.path: {folder} {what} (a relative path is taken from the manifest's folder)"
            )
    with _database(database, data_dir) as dsn:
        try:
            result = _with_pool(
                dsn,
                lambda pool: run_job(
                    pool,
                    dsn,
                    job,
                    volume_root=volume_root,
                    workers=workers,
                    console=console,
                    secrets_dir=secrets_dir.resolve() if secrets_dir else None,
                    retry_failed=retry_failed,
                    manifest=manifest.resolve(),
                ),
            )
        except ManifestConflict as exc:
            raise click.ClickException(str(exc)) from None
        except NothingToRetry as exc:
            console.print(f"{exc}.")
            return local_uid(job)
    print_summary(result, console)
    if not result.state.succeeded or any(code != 0 for code in result.worker_exit_codes):
        raise click.ClickException(f"run did not finish cleanly (worker exit codes {result.worker_exit_codes})")
    return result.job_uid


@main.command(cls=Configured, settings=(LOCAL_SETTINGS,))
@click.option(
    "-f",
    "--filename",
    "manifest",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="IngestionJob manifest (the same YAML you would kubectl apply).",
)
@click.option("-w", "--workers", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option(
    "--secrets-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Stand-in for the Secrets the manifest references: a folder with one sub-folder per Secret "
    "name and one file per key (e.g. s3-creds/AWS_ACCESS_KEY_ID).",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Re-process only the documents that failed in the last run (what the "
    "headrace.io/retry-failed-requested-at annotation does in a cluster).",
)
@database_url_option
@data_dir_option
def run(
    manifest: Path,
    workers: int,
    secrets_dir: Path | None,
    retry_failed: bool,
    database_url: str | None,
    data_dir: Path,
) -> None:
    """Run an IngestionJob manifest locally, to the end, with N worker processes.

    Every invocation is a new run, even with an unchanged manifest (what the headrace.io/run-requested-at
    annotation does in a cluster): unchanged documents are skipped by content hash."""
    database = _settings(LocalSettings, _given("database_url"))
    _run_manifest(manifest, workers, database, data_dir, Console(stderr=True), secrets_dir, retry_failed)


@main.command(cls=Configured, settings=(LOCAL_SETTINGS,))
@click.argument("query")
@click.option("-n", "--namespace", help="Only this namespace.")
@click.option("--job", help="Only this IngestionJob (by name).")
@click.option("--prefix", "uri_prefix", help="Only documents whose URI starts with this.")
@click.option("-l", "--limit", type=click.IntRange(1, 100), default=5, show_default=True, help="Most hits to show.")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "wide", "json", "yaml"]),
    default="text",
    show_default=True,
    help="text for people; wide adds chunk ids and metadata; json and yaml for programs.",
)
@click.option("--full", is_flag=True, help="Print whole passages, not snippets.")
@click.option(
    "--mode",
    type=click.Choice(["keyword", "semantic", "hybrid"]),
    help="keyword (full text), semantic (embeddings) or hybrid (both, fused). Default: hybrid when the jobs "
    "have embeddings, else keyword.",
)
@database_url_option
@data_dir_option
def search(
    query: str,
    namespace: str | None,
    job: str | None,
    uri_prefix: str | None,
    limit: int,
    output: str,
    full: bool,
    mode: str | None,
    database_url: str | None,
    data_dir: Path,
) -> None:
    """Search the index by words (websearch syntax: "quoted phrase", or, -not) and meaning, with snippets.

    Each hit names its job (namespace/name) and score; a hit with none of the query's words in it is
    marked weak (only its meaning ranked it)."""
    from headrace.embedding.query import EndpointModel, query_vector
    from headrace.hits import print_hits
    from headrace.model import search_defaults
    from headrace.store import search as store_search

    if not query.strip():
        raise click.UsageError('the query is empty: give words to search for, e.g. headrace search "hacker ethic"')
    where = store_search.SearchFilter(namespaces=[namespace] if namespace else None, job=job, uri_prefix=uri_prefix)
    chosen = cast(store_search.Mode | None, mode)
    with _database(_settings(LocalSettings, _given("database_url")), data_dir) as dsn:
        try:
            page = _with_pool(
                dsn,
                lambda pool: store_search.search(
                    pool,
                    query,
                    where=where,
                    limit=limit,
                    mode=chosen,
                    embed=query_vector,
                    ranked_matches=search_defaults.RANKED_MATCHES,  # as the API ranks by default
                ),
            )
        except store_search.SearchRefused as exc:
            raise click.UsageError(str(exc)) from exc
        except EndpointModel as exc:
            raise click.UsageError(
                f"the jobs are embedded by the endpoint model {exc.model}; `headrace search` embeds queries with the "
                "built-in model only: use --mode keyword, or the API with a `vector`"
            ) from exc
    if output in ("text", "wide"):
        Console(stderr=True).print(f"[dim]mode: {page.mode}[/dim]")
    print_hits(Console(), query, page.hits, mode=page.mode, output=cast(Any, output), full=full)


DEMO_QUERIES = ["politics", '"hacker ethic"', "marriage -divorce"]


@main.command(cls=Configured, settings=(API_SETTINGS,))
@click.option("-w", "--workers", type=click.IntRange(1, 64), default=2, show_default=True)
@data_dir_option
@click.option("--serve/--no-serve", default=True, show_default=True, help="Serve the API when the searches are done.")
@click.option(
    "--port",
    "listen_port",
    type=click.IntRange(1, 65535),
    help="Port of the API (HEADRACE_LISTEN_PORT, as for `headrace api`) "
    f"[default: {_default(ListenSettings, 'listen_port')}].",
)
def demo(workers: int, data_dir: Path, serve: bool, listen_port: int | None) -> None:
    """Ingest the bundled sample corpus into an embedded Postgres, search it, then serve the API on it."""
    from headrace.hits import print_hits
    from headrace.model import search_defaults
    from headrace.store import search as store_search

    port = _settings(ListenSettings, _given("listen_port")).listen_port
    console = Console()
    with resources.as_file(resources.files("headrace.samples") / "demo" / "job.yaml") as manifest:
        console.print(f"[bold]Ingesting the sample corpus[/bold] ({manifest.parent / 'corpus'})")
        _run_manifest(manifest, workers, None, data_dir, console)
    with _database(None, data_dir) as dsn:

        async def searches(pool: Any) -> None:
            for query in DEMO_QUERIES:
                page = await store_search.search(pool, query, limit=3, ranked_matches=search_defaults.RANKED_MATCHES)
                print_hits(console, query, page.hits, mode=page.mode)

        _with_pool(dsn, searches)
        console.print('\nTry your own: [bold]headrace search "your words here"[/bold]')
        if serve:
            _serve_local(console, dsn, port, examples=_demo_examples)


def _demo_examples(base: str) -> list[tuple[str, str]]:
    job = f"{base}/v1/namespaces/default/ingestionjobs/demo"
    return [
        ("status and progress", f"curl -s {job}"),
        ("failed documents", f"curl -s '{job}/documents?state=failed'"),
        ("live events (SSE)", f"curl -sN {job}/events"),
        ("search", f"curl -s '{base}/v1/search?q=%22hacker+ethic%22&limit=3'"),
        (
            "search with filters",
            f"curl -s {base}/v1/search -H 'content-type: application/json' "
            '-d \'{"q": "politics", "uriPrefix": "devils-dictionary/", "limit": 3}\'',
        ),
        ("API reference", f"open {base}/docs"),
    ]


def _local_examples(base: str) -> list[tuple[str, str]]:
    return [
        ("jobs of a namespace", f"curl -s {base}/v1/namespaces/default/ingestionjobs"),
        ("search every job", f"curl -s '{base}/v1/search?q=your+words&limit=3'"),
        ("API reference", f"open {base}/docs"),
    ]


def _serve_local(
    console: Console, dsn: str, port: int, host: str = "127.0.0.1", *, examples: Callable[[str], list[tuple[str, str]]]
) -> None:
    """Serve the API on loopback without authentication, with curl lines to paste, until Ctrl-C."""
    from headrace.api.server import serve

    base = f"http://{host}:{port}"
    settings = _api_settings({"database_url": dsn, "auth_mode": "none", "listen_host": host, "listen_port": port})
    console.print(f"\n[bold]Serving the API on {base}[/bold] (no authentication: loopback only). Ctrl-C stops it.")
    for title, command in examples(base):
        console.print(f"  [dim]# {title}[/dim]\n  {escape(command)}", highlight=False, soft_wrap=True)
    if not serve(settings):
        raise click.ClickException(f"the API did not start: is port {port} free? (try --port)")
    console.print("Stopped the API.")


@main.command(cls=Configured, settings=(API_SETTINGS,))
@click.option(
    "--host", "listen_host", help="Address to bind (HEADRACE_LISTEN_HOST) [default: 0.0.0.0; 127.0.0.1 with --local]."
)
@click.option(
    "--port",
    "listen_port",
    type=click.IntRange(0, 65535),
    help=f"Port to serve on (HEADRACE_LISTEN_PORT) [default: {_default(ListenSettings, 'listen_port')}].",
)
@click.option(
    "--local",
    is_flag=True,
    help="Serve every job of `headrace run` and `headrace demo` from the embedded Postgres under --data-dir, "
    "on loopback without authentication (as `headrace demo` serves).",
)
@database_url_option
@data_dir_option
def api(
    listen_host: str | None, listen_port: int | None, local: bool, database_url: str | None, data_dir: Path
) -> None:
    """Serve the HTTP API: job status, live progress, search (docs/api.md)."""
    given = _given("listen_host", "listen_port", "database_url")
    if local:
        if "database_url" in given:
            raise click.UsageError("--local serves the embedded Postgres: give --local or --database-url, not both")
        listen = _settings(ListenSettings, given)
        host = listen.listen_host if "listen_host" in listen.model_fields_set else "127.0.0.1"
        with _database(None, data_dir) as dsn:
            _with_pool(dsn, _migrate)  # local mode owns its database, as `headrace run` does
            _serve_local(Console(), dsn, listen.listen_port, host, examples=_local_examples)
        return
    if _settings(LocalSettings, given).database_url is None:
        raise click.UsageError(
            "a database URL is needed: --database-url, HEADRACE_DATABASE_URL or DATABASE_URL "
            "(or --local for the embedded Postgres of `headrace run`)"
        )
    settings = _api_settings(given)
    database_url = settings.database_url.get_secret_value()
    if settings.auth_mode == "kubernetes":
        try:
            settings.kubernetes_url()
        except ValueError as exc:
            raise click.ClickException(
                f"auth mode 'kubernetes' {exc} (or HEADRACE_AUTH_MODE=token with HEADRACE_AUTH_TOKEN; "
                "`headrace api --local` serves local runs on loopback)"
            ) from None
    # Reach the database before serving, so a wrong URL is one line here rather than a failed startup.
    cli_errors.remember_database(database_url)
    _with_pool(database_url, _check_schema, max_size=1)
    from headrace.api.server import serve

    if not serve(settings):
        sys.exit(3)


@main.command("ingest-api", cls=Configured, settings=("headrace.ingest.settings:IngestSettings",))
def ingest_api() -> None:
    """Serve the worker API (the ingest service) that worker pods call instead of the database (docs/worker-api.md)."""
    from headrace.ingest.settings import IngestSettings

    settings = _settings(IngestSettings, {}, what="invalid ingest service settings", refusal=click.ClickException)
    try:
        settings.kubernetes_url()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    cli_errors.remember_database(settings.database_url.get_secret_value())
    _with_pool(settings.database_url.get_secret_value(), _check_schema, max_size=1)
    from headrace.ingest.server import serve

    if not serve(settings):
        sys.exit(3)


def _api_settings(given: dict[str, Any]) -> Any:
    from headrace.api.settings import ApiSettings

    return _settings(ApiSettings, given, what="invalid API settings", refusal=click.ClickException)


async def _check_schema(pool: Any) -> None:
    """Fail with the reason when the database cannot be reached or its schema is not this release's, as the
    API's own startup would, but in one line before serving."""
    from headrace.store import migrate as migrations

    await migrations.ensure_current(pool)


async def _migrate(pool: Any) -> None:
    from headrace.store import migrate as migrations

    await migrations.migrate(pool)


@main.command()
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("crds"),
    show_default=True,
    help="Folder to write the CRD manifest into.",
)
@click.option(
    "--chart",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write the CRD template of this Helm chart (e.g. charts/headrace).",
)
@click.option("--stdout", is_flag=True, help="Print the CRD instead of writing files.")
def crd(output_dir: Path, chart: Path | None, stdout: bool) -> None:
    """Generate the IngestionJob CustomResourceDefinition from the model."""
    from headrace.model import crd as crds

    if stdout:
        click.echo(crds.crd_yaml(), nl=False)
        return
    targets = [(output_dir / crds.CRD_FILENAME, crds.crd_yaml())]
    if chart is not None:
        targets.append((chart / crds.CHART_TEMPLATE, crds.chart_template()))
    for path, text in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        click.echo(f"Wrote {path}")


@main.group()
def local() -> None:
    """The embedded Postgres of local mode (`headrace run`, `demo`, `api --local`)."""


@local.command("status")
@data_dir_option
def local_status(data_dir: Path) -> None:
    """Whether the embedded Postgres under --data-dir runs, its URL, and which processes use it."""
    from headrace.local import server_state

    state = server_state(data_dir)
    if state.pid is None:
        click.echo(f"Stopped: no embedded Postgres runs under {state.pgdata}.")
        return
    click.echo(f"Running: the embedded Postgres under {state.pgdata} (pid {state.pid}).")
    click.echo(f"URL: {state.url}")
    users = ", ".join(str(pid) for pid in state.users) or "none (`headrace local stop` stops it)"
    click.echo(f"Used by: {users}")


@local.command("stop")
@data_dir_option
def local_stop(data_dir: Path) -> None:
    """Stop the embedded Postgres under --data-dir (its data stays); refused while a command uses it."""
    from headrace.local import ServerInUse, stop_server

    try:
        state = stop_server(data_dir)
    except ServerInUse as exc:
        raise click.ClickException(str(exc)) from None
    if state.pid is None:
        click.echo(f"Nothing to stop: no embedded Postgres runs under {state.pgdata}.")
    else:
        click.echo(f"Stopped the embedded Postgres under {state.pgdata} (pid {state.pid}).")


@main.command(cls=Configured, settings=(LOCAL_SETTINGS,))
@click.argument("namespace")
@click.option(
    "--namespace-uid",
    required=True,
    type=click.UUID,
    help="UID of the namespace as it exists now: kubectl get namespace NAMESPACE -o jsonpath='{.metadata.uid}'.",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be adopted.")
@database_url_option
def adopt(namespace: str, namespace_uid: uuid.UUID, dry_run: bool, database_url: str | None) -> None:
    """Hand the data retained from former namespaces named NAMESPACE to the namespace that has that name now.

    Stored data is tied to the UID of the namespace it was ingested in, so a namespace deleted and
    re-created (by anyone) sees none of it. An admin who knows the new namespace belongs to the same
    team adopts it with this command, run with the installation's database URL (docs/operations.md).
    Each retained job then waits, unserved, for an IngestionJob of the same name in NAMESPACE, whose
    first run takes it over and skips unchanged documents.
    """
    from headrace.store import jobs

    url = _settings(LocalSettings, _given("database_url")).database_url
    if url is None:
        raise click.UsageError("the installation's database URL is needed: --database-url or HEADRACE_DATABASE_URL")
    found = _with_pool(
        url.get_secret_value(), lambda pool: jobs.adopt_namespace(pool, namespace, namespace_uid, dry_run=dry_run)
    )
    if not found:
        click.echo(f"Nothing to adopt: no data of a former namespace {namespace!r} is retained.")
        return
    verb = "Would adopt" if dry_run else "Adopted"
    for job in found:
        former = job.namespace_uid or "unrecorded"
        click.echo(
            f"{verb} {namespace}/{job.name} (job uid {job.uid}, namespace uid {former}): {job.documents} documents"
        )
    if not dry_run:
        click.echo(f"Apply IngestionJobs of these names in {namespace} to take the data over.")


@main.command(
    cls=Configured,
    settings=("headrace.operator.settings:OperatorSettings", "headrace.operator.leader:ElectionSettings"),
)
@click.option(
    "-A",
    "--all-namespaces",
    is_flag=True,
    help="Watch IngestionJobs in every namespace (the default when no --namespace is given).",
)
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch only this namespace (repeatable; HEADRACE_NAMESPACES).",
)
@database_url_option
@click.option("--worker-image", help="Image of the worker pods (HEADRACE_WORKER_IMAGE).")
@click.option(
    "--liveness", help="Serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz (HEADRACE_LIVENESS)."
)
@click.option(
    "--ingest-url",
    help="Where worker pods reach the ingest service, e.g. http://headrace-ingest.headrace.svc:8081 "
    "(HEADRACE_INGEST_URL).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve the operator's Prometheus metrics on this port (HEADRACE_METRICS_PORT; default: not served).",
)
@click.option(
    "--observe-interval",
    type=click.FloatRange(1, 3600),
    help="Seconds between two looks at each job with a run in progress (HEADRACE_OBSERVE_INTERVAL; default 10).",
)
@click.option(
    "--allow-private-networks/--no-allow-private-networks",
    default=None,
    help="Honour allowPrivateNetworks in IngestionJobs; without it (the default) such specs are refused with a "
    "condition (HEADRACE_ALLOW_PRIVATE_NETWORKS).",
)
@click.option(
    "--migrate/--no-migrate",
    default=None,
    help="Apply pending database migrations at start (the default); with --no-migrate, refuse a stale schema.",
)
def operator(
    all_namespaces: bool,
    namespaces: tuple[str, ...],
    database_url: str | None,
    worker_image: str | None,
    liveness: str | None,
    ingest_url: str | None,
    metrics_port: int | None,
    observe_interval: float | None,
    allow_private_networks: bool | None,
    migrate: bool | None,
) -> None:
    """Run the Kubernetes operator: IngestionJobs in, worker Jobs, HPAs and status out.

    Configured by HEADRACE_* environment variables, which flags override (below; docs/settings.md)."""
    from headrace.operator.leader import ElectionSettings
    from headrace.operator.main import run as run_operator
    from headrace.operator.settings import OperatorSettings

    if all_namespaces and namespaces:
        raise click.UsageError("-A and --namespace exclude each other")
    given = _given(
        "database_url",
        "worker_image",
        "liveness",
        "ingest_url",
        "metrics_port",
        "observe_interval",
        "allow_private_networks",
        "migrate",
    )
    if namespaces or all_namespaces:
        given["namespaces"] = list(namespaces)
    settings = _settings(OperatorSettings, given)
    run_operator(settings, _settings(ElectionSettings, {}, what="leader election"))
