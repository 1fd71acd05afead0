"""The `headrace` command: one entry point for every role (demo, run, worker, migrate, search, ...)."""

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import click
from rich.console import Console
from rich.markup import escape

from headrace import logs
from headrace.model.contract import DATABASE_URL_ENV as POD_DATABASE_URL_ENV
from headrace.model.contract import SECRETS_DIR_ENV, VOLUME_ROOT_ENV, WORKER_SECRETS_DIR

if TYPE_CHECKING:
    from headrace.operator.resources.job import WorkerPodSettings

T = TypeVar("T")

DATABASE_URL_ENV = ["HEADRACE_DATABASE_URL", POD_DATABASE_URL_ENV]
database_url_option = click.option(
    "--database-url",
    envvar=DATABASE_URL_ENV,
    help="Postgres URL (env HEADRACE_DATABASE_URL or DATABASE_URL).",
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


@contextmanager
def _database(url: str | None, data_dir: Path) -> Iterator[str]:
    """The given database, or the embedded one under data_dir."""
    if url:
        yield url
        return
    from headrace.local import embedded_postgres

    with embedded_postgres(data_dir) as embedded:
        yield embedded


def _with_pool(dsn: str, work: Callable[[Any], Awaitable[T]], *, max_size: int = 4) -> T:
    from headrace.store.db import open_pool

    async def go() -> T:
        async with open_pool(dsn, max_size=max_size) as pool:
            return await work(pool)

    return _run(go())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-format",
    type=click.Choice(["json", "text"]),
    envvar="HEADRACE_LOG_FORMAT",
    default=None,
    help="Log format; defaults to text on a terminal and JSON elsewhere.",
)
@click.option("--log-level", envvar="HEADRACE_LOG_LEVEL", default="INFO", show_default=True)
@click.version_option(package_name="headrace")
def main(log_format: str | None, log_level: str) -> None:
    """Headrace: document ingestion on Kubernetes, and on your laptop."""
    logs.configure(log_format or ("text" if sys.stderr.isatty() else "json"), log_level)  # type: ignore[arg-type]


@main.command()
@database_url_option
@data_dir_option
def migrate(database_url: str | None, data_dir: Path) -> None:
    """Apply the database migrations (safe to run concurrently)."""
    from headrace.store import migrate as migrations

    with _database(database_url, data_dir) as dsn:
        applied = _with_pool(dsn, migrations.migrate)
    click.echo(f"Applied {len(applied)} migrations; schema is at version {migrations.expected_version()}.")


@main.command()
@click.option("--job", "job_uid", required=True, type=click.UUID, help="uid of the IngestionJob to work on.")
@database_url_option
@click.option(
    "--volume-root",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=VOLUME_ROOT_ENV,
    default=Path("/"),
    show_default=True,
    help="Folder that spec.source.volume.path is relative to.",
)
@click.option(
    "--secrets-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=SECRETS_DIR_ENV,
    default=Path(WORKER_SECRETS_DIR),
    show_default=True,
    help="Folder holding one sub-folder per referenced Secret, one file per key.",
)
@click.option(
    "--extract-memory-mib",
    type=click.IntRange(64, 1024 * 1024),
    envvar="HEADRACE_EXTRACT_MEMORY_MIB",
    default=1024,
    show_default=True,
    help="Address-space limit of the extraction child process, which parses documents.",
)
@click.option("--lease-seconds", type=click.FloatRange(1, 3600), default=30.0, show_default=True)
@click.option(
    "--grace-seconds",
    type=click.FloatRange(0, 3600),
    default=25.0,
    show_default=True,
    help="On SIGTERM, how long the current task may run before it is handed back.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    envvar="HEADRACE_METRICS_PORT",
    default=None,
    help="Serve Prometheus metrics on this port.",
)
def worker(
    job_uid: uuid.UUID,
    database_url: str | None,
    volume_root: Path,
    secrets_dir: Path,
    extract_memory_mib: int,
    lease_seconds: float,
    grace_seconds: float,
    metrics_port: int | None,
) -> None:
    """Lease and process the job's tasks until its queue is drained (exit 0) or SIGTERM (exit 143)."""
    from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

    from headrace.store.db import create_pool
    from headrace.worker.loop import Worker

    if not database_url:
        raise click.UsageError("a database URL is needed: --database-url or HEADRACE_DATABASE_URL")
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)

    # The database may come up after the pod does: keep trying for a minute before giving up.
    connect = retry(
        retry=retry_if_exception_type((OSError, ConnectionError)),
        wait=wait_exponential(multiplier=0.5, max=10),
        stop=stop_after_delay(60),
        reraise=True,
    )(create_pool)

    async def go() -> int:
        pool = await connect(database_url, min_size=1, max_size=3)
        try:
            loop = Worker(
                pool,
                job_uid,
                volume_root=volume_root,
                secrets_dir=secrets_dir,
                extract_memory_bytes=extract_memory_mib * 1024 * 1024,
                lease_seconds=lease_seconds,
                grace_seconds=grace_seconds,
            )
            loop.install_signal_handlers()
            return await loop.run()
        finally:
            await pool.close()

    sys.exit(_run(go()))


def _run_manifest(
    manifest: Path,
    workers: int,
    database_url: str | None,
    data_dir: Path,
    console: Console,
    secrets_dir: Path | None = None,
) -> uuid.UUID:
    from headrace.local import print_summary, run_job
    from headrace.model import InvalidManifest, load_manifest

    try:
        job = load_manifest(manifest)
    except InvalidManifest as exc:
        raise click.ClickException(str(exc)) from None
    with _database(database_url, data_dir) as dsn:
        result = _with_pool(
            dsn,
            lambda pool: run_job(
                pool,
                dsn,
                job,
                volume_root=manifest.resolve().parent,
                workers=workers,
                console=console,
                secrets_dir=secrets_dir.resolve() if secrets_dir else None,
            ),
        )
    print_summary(result, console)
    if result.state.error or any(code != 0 for code in result.worker_exit_codes):
        raise click.ClickException(f"run did not finish cleanly (worker exit codes {result.worker_exit_codes})")
    return result.job_uid


@main.command()
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
@database_url_option
@data_dir_option
def run(manifest: Path, workers: int, secrets_dir: Path | None, database_url: str | None, data_dir: Path) -> None:
    """Run an IngestionJob manifest locally, to the end, with N worker processes."""
    _run_manifest(manifest, workers, database_url, data_dir, Console(stderr=True), secrets_dir)


def print_hits(console: Console, query: str, hits: list[Any]) -> None:
    from headrace.store.search import SNIPPET_START, SNIPPET_STOP

    console.print(f"\n[bold]Search:[/bold] {escape(query)}  ({len(hits)} results)")
    for n, hit in enumerate(hits, 1):
        snippet = escape(" ".join(hit.snippet.split()))
        snippet = snippet.replace(escape(SNIPPET_START), "[bold yellow]").replace(escape(SNIPPET_STOP), "[/]")
        console.print(f"{n:>2}. [cyan]{escape(hit.uri)}[/cyan] [dim]#{hit.ordinal} score {hit.score:.3f}[/dim]")
        console.print(f"    {escape(hit.title)}", style="bold")
        console.print(f"    {snippet}")


@main.command()
@click.argument("query")
@click.option("--namespace", help="Only this namespace.")
@click.option("--job", help="Only this IngestionJob (by name).")
@click.option("--prefix", "uri_prefix", help="Only documents whose URI starts with this.")
@click.option("-n", "--limit", type=click.IntRange(1, 100), default=5, show_default=True)
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
    mode: str | None,
    database_url: str | None,
    data_dir: Path,
) -> None:
    """Search the index by words (websearch syntax: "quoted phrase", or, -not) and meaning, with snippets."""
    from headrace.store import search as store_search

    where = store_search.SearchFilter(namespaces=[namespace] if namespace else None, job=job, uri_prefix=uri_prefix)
    chosen = cast(store_search.Mode | None, mode)
    with _database(database_url, data_dir) as dsn:
        try:
            page = _with_pool(
                dsn,
                lambda pool: store_search.search(
                    pool, query, where=where, limit=limit, mode=chosen, embed=_embed_builtin_query
                ),
            )
        except store_search.SearchRefused as exc:
            raise click.UsageError(str(exc)) from exc
    Console(stderr=True).print(f"[dim]mode: {page.mode}[/dim]")
    print_hits(Console(), query, page.hits)


async def _embed_builtin_query(space: Any, text: str) -> list[float]:
    """The query's vector for `headrace search`, which embeds with the built-in model only."""
    from headrace.embedding.builtin import BuiltinEmbedder
    from headrace.model.spec import BUILTIN_EMBEDDING_MODEL
    from headrace.store.search import SearchRefused

    if space.model != BUILTIN_EMBEDDING_MODEL:
        raise SearchRefused(
            f"the jobs are embedded by the endpoint model {space.model}; `headrace search` embeds queries with the "
            "built-in model only: use --mode keyword, or the API with a `vector`"
        )
    return (await BuiltinEmbedder().embed([text]))[0]


DEMO_QUERIES = ["politics", '"hacker ethic"', "marriage -divorce"]


@main.command()
@click.option("-w", "--workers", type=click.IntRange(1, 64), default=2, show_default=True)
@data_dir_option
@click.option("--serve/--no-serve", default=True, show_default=True, help="Serve the API when the searches are done.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="Port of the API.")
def demo(workers: int, data_dir: Path, serve: bool, port: int) -> None:
    """Ingest the bundled sample corpus into an embedded Postgres, search it, then serve the API on it."""
    from headrace.store import search as store_search

    console = Console()
    with resources.as_file(resources.files("headrace.samples") / "demo" / "job.yaml") as manifest:
        console.print(f"[bold]Ingesting the sample corpus[/bold] ({manifest.parent / 'corpus'})")
        _run_manifest(manifest, workers, None, data_dir, console)
    with _database(None, data_dir) as dsn:

        async def searches(pool: Any) -> None:
            for query in DEMO_QUERIES:
                page = await store_search.search(pool, query, limit=3)
                print_hits(console, query, page.hits)

        _with_pool(dsn, searches)
        console.print('\nTry your own: [bold]headrace search "your words here"[/bold]')
        if serve:
            _serve_demo(console, dsn, port)


def _serve_demo(console: Console, dsn: str, port: int) -> None:
    """Serve the API on loopback without authentication, with curl lines to paste, until Ctrl-C."""
    from headrace.api.server import serve
    from headrace.api.settings import ApiSettings

    base = f"http://127.0.0.1:{port}"
    job = f"{base}/v1/namespaces/default/ingestionjobs/demo"
    console.print(f"\n[bold]Serving the API on {base}[/bold] (no authentication: loopback only). Ctrl-C stops it.")
    for title, command in [
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
    ]:
        console.print(f"  [dim]# {title}[/dim]\n  {escape(command)}", highlight=False, soft_wrap=True)
    settings = ApiSettings(database_url=dsn, auth_mode="none", listen_host="127.0.0.1", listen_port=port)
    if not serve(settings):
        raise click.ClickException(f"the API did not start: is port {port} free? (try --port)")
    console.print("Stopped the API.")


@main.command()
@click.option("--host", envvar="HEADRACE_LISTEN_HOST", default="0.0.0.0", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), envvar="HEADRACE_LISTEN_PORT", default=8080, show_default=True)
@database_url_option
def api(host: str, port: int, database_url: str | None) -> None:
    """Serve the HTTP API: job status, live progress, search. Configured by HEADRACE_* variables (docs/api.md)."""
    from pydantic import ValidationError

    from headrace.api.server import serve
    from headrace.api.settings import ApiSettings

    if not database_url:
        raise click.UsageError("a database URL is needed: --database-url, HEADRACE_DATABASE_URL or DATABASE_URL")
    try:
        settings = ApiSettings(database_url=database_url, listen_host=host, listen_port=port)
    except (ValidationError, ValueError) as exc:
        raise click.ClickException(f"invalid API settings: {exc}") from None
    if not serve(settings):
        sys.exit(3)


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


class JsonObject(click.ParamType[dict[str, Any], Any]):
    """A JSON object on the command line or in an environment variable (the chart passes its values so)."""

    name = "json"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            self.fail(f"not JSON: {exc}", param, ctx)
        if not isinstance(parsed, dict):
            self.fail(f"must be a JSON object, got {type(parsed).__name__}", param, ctx)
        return parsed


@main.command()
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
    envvar="HEADRACE_NAMESPACES",
    help="Watch only this namespace (repeatable; env HEADRACE_NAMESPACES, space-separated).",
)
@database_url_option
@click.option(
    "--worker-image",
    envvar="HEADRACE_WORKER_IMAGE",
    required=True,
    help="Image of the worker pods (env HEADRACE_WORKER_IMAGE).",
)
@click.option(
    "--database-secret",
    envvar="HEADRACE_DATABASE_SECRET",
    default="headrace-database",
    show_default=True,
    help="Secret, in each IngestionJob's namespace, holding the workers' DATABASE_URL (env HEADRACE_DATABASE_SECRET).",
)
@click.option(
    "--worker-image-pull-policy",
    type=click.Choice(["Always", "IfNotPresent", "Never"]),
    envvar="HEADRACE_WORKER_IMAGE_PULL_POLICY",
    default="IfNotPresent",
    show_default=True,
    help="imagePullPolicy of the worker pods (env HEADRACE_WORKER_IMAGE_PULL_POLICY).",
)
@click.option(
    "--worker-image-pull-secret",
    "worker_image_pull_secrets",
    multiple=True,
    envvar="HEADRACE_WORKER_IMAGE_PULL_SECRETS",
    help="Secret, in each IngestionJob's namespace, to pull the worker image with (repeatable; env "
    "HEADRACE_WORKER_IMAGE_PULL_SECRETS, space-separated).",
)
@click.option(
    "--worker-pod-security-context",
    type=JsonObject(),
    envvar="HEADRACE_WORKER_POD_SECURITY_CONTEXT",
    default=None,
    help="securityContext of the worker pods as JSON; must meet Pod Security restricted (env "
    "HEADRACE_WORKER_POD_SECURITY_CONTEXT). Default: runAsNonRoot, seccomp RuntimeDefault.",
)
@click.option(
    "--worker-security-context",
    type=JsonObject(),
    envvar="HEADRACE_WORKER_SECURITY_CONTEXT",
    default=None,
    help="securityContext of the worker container as JSON; must meet Pod Security restricted (env "
    "HEADRACE_WORKER_SECURITY_CONTEXT). Default: restricted with a read-only root filesystem.",
)
@click.option(
    "--worker-resources",
    type=JsonObject(),
    envvar="HEADRACE_WORKER_RESOURCES",
    default=None,
    help="Resources (requests, limits) of a worker container as JSON, for IngestionJobs that set no "
    "spec.workers.resources (env HEADRACE_WORKER_RESOURCES). Default: requests cpu 500m, memory 512Mi; "
    "limits memory 1Gi.",
)
@click.option(
    "--worker-service-account",
    envvar="HEADRACE_WORKER_SERVICE_ACCOUNT",
    default=None,
    help="ServiceAccount, in each IngestionJob's namespace, of the worker pods, e.g. for IRSA (env "
    "HEADRACE_WORKER_SERVICE_ACCOUNT). Default: the namespace's default one.",
)
@click.option(
    "--liveness",
    "liveness_endpoint",
    envvar="HEADRACE_LIVENESS",
    default=None,
    help="Serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz (env HEADRACE_LIVENESS).",
)
@click.option(
    "--observe-interval",
    type=click.FloatRange(1, 3600),
    envvar="HEADRACE_OBSERVE_INTERVAL",
    default=10.0,
    show_default=True,
    help="Seconds between two looks at each job's progress.",
)
@click.option(
    "--migrate/--no-migrate",
    default=True,
    show_default=True,
    help="Apply pending database migrations at start; with --no-migrate, refuse to start on a stale schema.",
)
def operator(
    all_namespaces: bool,
    namespaces: tuple[str, ...],
    database_url: str | None,
    worker_image: str,
    database_secret: str,
    worker_image_pull_policy: Literal["Always", "IfNotPresent", "Never"],
    worker_image_pull_secrets: tuple[str, ...],
    worker_pod_security_context: dict[str, Any] | None,
    worker_security_context: dict[str, Any] | None,
    worker_resources: dict[str, Any] | None,
    worker_service_account: str | None,
    liveness_endpoint: str | None,
    observe_interval: float,
    migrate: bool,
) -> None:
    """Run the Kubernetes operator: IngestionJobs in, worker Jobs, HPAs and status out."""
    from headrace.operator.config import OperatorConfig
    from headrace.operator.main import run as run_operator

    if not database_url:
        raise click.UsageError("a database URL is needed: --database-url or HEADRACE_DATABASE_URL")
    if all_namespaces and namespaces:
        raise click.UsageError("-A and --namespace exclude each other")
    worker_pods = worker_pod_settings(
        pull_policy=worker_image_pull_policy,
        pull_secrets=[n for spec in worker_image_pull_secrets for n in spec.split()],
        pod_security_context=worker_pod_security_context,
        security_context=worker_security_context,
        resources=worker_resources,
        service_account=worker_service_account or None,
    )
    config = OperatorConfig(
        database_url=database_url,
        worker_image=worker_image,
        worker_pods=worker_pods,
        database_secret=database_secret,
        observe_interval=observe_interval,
        migrate=migrate,
    )
    run_operator(
        config, namespaces=[n for spec in namespaces for n in spec.split()], liveness_endpoint=liveness_endpoint
    )


def worker_pod_settings(
    *,
    pull_policy: Literal["Always", "IfNotPresent", "Never"],
    pull_secrets: list[str],
    pod_security_context: dict[str, Any] | None,
    security_context: dict[str, Any] | None,
    resources: dict[str, Any] | None,
    service_account: str | None,
) -> "WorkerPodSettings":
    """The operator's worker pod settings from its options; a usage error names what is refused."""
    import pydantic

    from headrace.model import Resources, field_errors
    from headrace.operator.resources.job import WorkerPodSettings

    given: dict[str, Any] = {}
    if pod_security_context is not None:
        given["pod_security_context"] = pod_security_context
    if security_context is not None:
        given["security_context"] = security_context
    try:
        if resources is not None:
            given["resources"] = Resources.model_validate(_quantities_as_strings(resources))
        return WorkerPodSettings(
            image_pull_policy=pull_policy,
            image_pull_secrets=tuple(pull_secrets),
            service_account=service_account,
            **given,
        )
    except pydantic.ValidationError as exc:
        raise click.UsageError("--worker-resources: " + "; ".join(field_errors(exc))) from exc
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def _quantities_as_strings(resources: dict[str, Any]) -> dict[str, Any]:
    """`cpu: 1` in Helm values arrives as a JSON number; Kubernetes reads it as the quantity "1", so do we."""
    return {
        key: {
            name: str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
            for name, value in amounts.items()
        }
        if isinstance(amounts, dict)
        else amounts
        for key, amounts in resources.items()
    }
