"""Schemathesis over the OpenAPI schema: no 5xx, and every answer matches the schema it documents.

The app runs under uvicorn on a loopback port (in a thread, with its own event loop), over a
database seeded by the real worker, in `token` auth mode so generated requests get past auth.
"""

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator

import asyncpg
import hypothesis
import pytest
import schemathesis
import uvicorn

from headrace.api.app import create_app
from headrace.api.settings import ApiSettings
from headrace.store.db import open_pool
from tests.api.conftest import TEAM_A, TEAM_B, ingest
from tests.conftest import _TEMPLATE, with_database

TOKEN = "schemathesis-token"

# The schema does not depend on settings: build it from an app that is never started.
_offline = ApiSettings(database_url="postgresql://unused", auth_mode="none", listen_host="127.0.0.1")
# A schema-valid request may still be refused with a 400: an opaque cursor this server never handed out,
# or a `limit` above the deployment's configured maximum, are things the schema cannot express.
_config = schemathesis.config.SchemathesisConfig.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", 400, 401, 403, 404, 429]}}}
)
schema = schemathesis.openapi.from_dict(create_app(_offline).openapi(), config=_config)

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def api_url(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = f"schema_{uuid.uuid4().hex[:8]}"
    dsn = with_database(postgres_server, name)
    root = tmp_path_factory.mktemp("volumes")

    async def seed() -> None:
        conn = await asyncpg.connect(postgres_server)
        try:
            await conn.execute(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE}")
        finally:
            await conn.close()
        async with open_pool(dsn) as pool:
            await ingest(pool, root, namespace="team-a", name="docs", files=TEAM_A)
            await ingest(pool, root, namespace="team-b", name="docs", files=TEAM_B)

    asyncio.run(seed())
    settings = ApiSettings(
        database_url=dsn,
        listen_host="127.0.0.1",
        listen_port=0,
        auth_mode="token",
        auth_token=TOKEN,
        rate_limit_per_second=0,
        events_poll_seconds=0.05,
    )
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:  # bounded by the test timeout
        assert thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join()


@schema.parametrize()
@hypothesis.settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
    database=None,
)
def test_api_matches_its_schema(case: schemathesis.Case, api_url: str) -> None:
    case.call_and_validate(base_url=api_url, headers={"Authorization": f"Bearer {TOKEN}"})


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


JOBS = "/v1/namespaces/{ns}/ingestionjobs"
# Inputs a hostile caller sends that the schema allows but the database would choke on (issue 12):
# each must be a documented 4xx problem, never a 500.
HOSTILE_CASES = [
    (JOBS, {"ns": "team-a"}, {"cursor": _cursor("docs\x00")}, {}),
    (JOBS, {"ns": "team-a"}, {"cursor": _cursor(2**63)}, {}),
    (JOBS + "/{name}/documents", {"ns": "team-a", "name": "docs"}, {"cursor": _cursor(2**63)}, {}),
    (JOBS + "/{name}/documents", {"ns": "team-a", "name": "docs"}, {"cursor": _cursor(-5)}, {}),
    (JOBS + "/{name}/documents", {"ns": "team-a", "name": "docs"}, {"cursor": _cursor("docs\x00")}, {}),
    (JOBS + "/{name}/events", {"ns": "team-a", "name": "docs"}, {}, {"Last-Event-ID": "\xb2"}),
    (
        JOBS + "/{name}/events",
        {"ns": "team-a", "name": "docs"},
        {},
        {"Last-Event-ID": "\u0663".encode().decode("latin-1")},
    ),
    ("/v1/search", {}, {"q": "zephyr", "cursor": _cursor([1e308, 2**70])}, {}),
    ("/v1/search", {}, {"q": "zephyr", "cursor": _cursor(["NaN", "x\x00"])}, {}),
    ("/v1/search", {}, {"q": "zephyr", "highlight": "none"}, {}),
]


@pytest.mark.parametrize(("path", "parameters", "query", "headers"), HOSTILE_CASES)
def test_hostile_inputs_get_documented_answers(
    api_url: str, path: str, parameters: dict[str, str], query: dict[str, str], headers: dict[str, str]
) -> None:
    case = schema[path]["GET"].Case(path_parameters=parameters, query=query, headers=headers)
    response = case.call_and_validate(base_url=api_url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code < 500
    if response.status_code >= 400:
        assert response.headers["content-type"] == ["application/problem+json"]
