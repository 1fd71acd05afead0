"""A tenant's secrets planted in a job, then looked for in every place an error can travel to.

The sinks: log lines (as the JSON formatter writes them), every row of every table, the API's
answers (job, runs, documents, event stream), and the status conditions and Events the operator
builds from what it reads in Postgres.
"""

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from headrace import redaction
from headrace.api.settings import ApiSettings
from headrace.logs import JsonFormatter
from headrace.model import IngestionJob, IngestionJobSpec, IngestionJobStatus, Retries, WorkerStatus
from headrace.operator import status as st
from headrace.redaction import REDACTED, redact
from headrace.store import jobs
from headrace.store.db import Pool
from headrace.worker.errors import DocumentError
from headrace.worker.sources.http import checked_headers
from tests.api.conftest import serve as serve_api
from tests.conftest import JobFactory
from tests.sources.helpers import run_once, write_secret
from tests.sources.test_http import http_spec
from tests.sources.webserver import Site, redirect
from tests.sources.webserver import serve as serve_site

PLANTED = ("s3cr3t-VALUE", "k3y-PLANTED-0001", "pa55-PLANTED")


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    redaction.forget_all()
    yield
    redaction.forget_all()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Every log record, as the JSON formatter prints it in a pod."""
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)
    yield sink
    root.removeHandler(handler)
    root.setLevel(level)


def failing(request: BaseHTTPRequestHandler) -> None:
    request.send_response(500)
    request.send_header("Content-Length", "0")
    request.end_headers()


def test_spec_urls_cannot_carry_credentials() -> None:
    with pytest.raises(ValueError, match="should match pattern"):
        http_spec(urls=["https://robot:pa55@example.com/doc"])
    assert http_spec(urls=["https://example.com/@team/doc"]).source.http is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HTTP 500 from http://robot:pa55@host/doc", f"HTTP 500 from http://{REDACTED}@host/doc"),
        ("GET https://h/x?access_token=abc123&page=2", f"GET https://h/x?access_token={REDACTED}&page=2"),
        ("Authorization: Bearer eyJhbGciOi.x.y", f"Authorization: Bearer {REDACTED}"),
        ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: Basic {REDACTED}"),
        ("password=hunter2 rest", f"password={REDACTED} rest"),
        ("s3/k?X-Amz-Signature=deadbeef&X-Amz-Date=1", f"s3/k?X-Amz-Signature={REDACTED}&X-Amz-Date=1"),
        # Ordinary prose and URLs without credentials are left alone.
        ("the bearer token was not accepted by the cluster", "the bearer token was not accepted by the cluster"),
        ("https://example.com/a@b/c", "https://example.com/a@b/c"),
    ],
)
def test_redact_patterns(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_a_remembered_secret_is_redacted_whole_and_by_its_token() -> None:
    redaction.remember(["Bearer s3cr3t-VALUE "])
    assert redact("Illegal header value b'Bearer s3cr3t-VALUE '") == f"Illegal header value b'{REDACTED}'"
    assert "s3cr3t-VALUE" not in redact("echoed: s3cr3t-VALUE")


def test_header_values_are_stripped_and_checked_up_front_without_quoting_them() -> None:
    assert checked_headers("auth", {"Authorization": "Bearer s3cr3t-VALUE \t"}) == {
        "Authorization": "Bearer s3cr3t-VALUE"
    }
    with pytest.raises(DocumentError) as bad_value:
        checked_headers("auth", {"Authorization": "Bearer s3cr3t\x01-VALUE"})
    assert "'Authorization'" in str(bad_value.value) and "s3cr3t" not in str(bad_value.value)
    with pytest.raises(DocumentError, match="not a valid HTTP header name"):
        checked_headers("auth", {"Bad Name": "x"})


@pytest.mark.postgres
async def test_planted_secrets_reach_no_sink(
    pool: Pool, make_job: JobFactory, tmp_path: Path, dsn: str, log_lines: io.StringIO
) -> None:
    secrets = tmp_path / "secrets"
    # The trigger of the issue: a trailing space, which httpx refuses with the value in its message.
    write_secret(secrets, "web-auth", {"Authorization": "Bearer s3cr3t-VALUE ", "X-Api-Key": "k3y-PLANTED-0001 "})
    # Spec URLs cannot carry credentials (the schema refuses them), but a server can redirect to one.
    site = Site()
    with serve_site(site):
        credentialed = f"http://robot:pa55-PLANTED@127.0.0.1:{site.port}/fail"
        site.handlers.update({"/doc": redirect(credentialed), "/sitemap.xml": redirect(credentialed), "/fail": failing})
        documents_job = await make_job(one_attempt(urls=[site.url("/doc")]), name="pages")
        sitemap_job = await make_job(one_attempt(sitemaps=[site.url("/sitemap.xml")]), name="sitemap")
        for job in (documents_job, sitemap_job):
            await run_once(pool, job, secrets_dir=secrets)
        sent = [headers for path, _, headers in site.log if path == "/doc"]
    # The headers went out, stripped of the trailing space that used to make httpx quote them.
    assert sent and sent[0]["Authorization"] == "Bearer s3cr3t-VALUE"
    assert sent[0]["X-Api-Key"] == "k3y-PLANTED-0001"

    sinks: dict[str, str] = {"logs": log_lines.getvalue()}
    for table in ("jobs", "runs", "tasks", "documents", "chunks", "job_events"):
        rows = await pool.fetch(f"SELECT row_to_json(t)::text AS row FROM headrace.{table} t")
        sinks[f"table {table}"] = "\n".join(r["row"] for r in rows)
    # Something did fail with a URL in its message, and it was redacted rather than dropped.
    assert REDACTED in sinks["table documents"] and REDACTED in sinks["table runs"]

    settings = ApiSettings(database_url=dsn, listen_host="127.0.0.1", auth_mode="none", events_poll_seconds=0.05)
    async with serve_api(settings) as api:
        for name in ("pages", "sitemap"):
            base = f"/v1/namespaces/default/ingestionjobs/{name}"
            for path in ("", "/documents", "/events"):
                response = await api.get(base + path)
                assert response.status_code == 200
                sinks[f"GET {base}{path}"] = response.text

    now = datetime.now(UTC)
    for job in (documents_job, sitemap_job):
        record = await jobs.get_job(pool, job.uid)
        assert record is not None
        state = await jobs.run_state(pool, job.uid, record.current_run)
        model = IngestionJob.model_validate(
            {
                "metadata": {"name": job.name, "namespace": job.namespace, "uid": str(job.uid)},
                "spec": job.spec.to_wire(),
            }
        )
        status, events = st.next_status(
            model,
            IngestionJobStatus(),
            run=record.current_run,
            job_name=f"{job.name}-run-{record.current_run}",
            state=state,
            workers=WorkerStatus(),
            now=now,
        )
        sinks[f"status of {job.name}"] = status.model_dump_json(by_alias=True)
        sinks[f"Events of {job.name}"] = json.dumps([event.message for event in events])
    assert '"phase":"Failed"' in sinks["status of sitemap"]

    for sink, text in sinks.items():
        for secret in PLANTED:
            assert secret not in text, f"{secret} leaked into {sink}"


def one_attempt(**http: object) -> IngestionJobSpec:
    """An HTTP job sending the planted headers, whose every task gets a single attempt."""
    spec = http_spec(headersSecretRef={"name": "web-auth"}, **http)
    return spec.model_copy(update={"retries": Retries(max_attempts=1, backoff_seconds=0.1)})
