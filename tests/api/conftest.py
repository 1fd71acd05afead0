"""API test fixtures: a fake cluster answering reviews (kmock), data ingested by the real worker, the app."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import kmock
import pytest
from asgi_lifespan import LifespanManager

from headrace.api.app import create_app
from headrace.api.settings import ApiSettings
from headrace.store import jobs, runs
from headrace.store.db import Pool
from headrace.store.jobs import JobRecord
from headrace.worker.loop import Worker
from headrace.worker.store import DirectStore
from tests.conftest import volume_spec

API_SA_TOKEN = "api-serviceaccount-token"

pytestmark = pytest.mark.postgres


@dataclass
class Cluster:
    """Who holds which token, and who may `get ingestionjobs.headrace.io` where ('*' = everywhere)."""

    users: dict[str, str] = field(default_factory=dict)
    grants: dict[str, set[str]] = field(default_factory=dict)
    unauthorized_calls: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    """Reviews are answered once this is set (it starts set)."""

    def __post_init__(self) -> None:
        self.gate.set()

    async def token_review(self, request: kmock.Request) -> Any:
        await self.gate.wait()
        if request.headers.get("Authorization") != f"Bearer {API_SA_TOKEN}":
            self.unauthorized_calls += 1
            return kmock.Response(status=401, payload={"kind": "Status", "code": 401})
        user = self.users.get(request.data["spec"]["token"])
        if user is None:
            return {"kind": "TokenReview", "status": {"authenticated": False, "error": "invalid bearer token"}}
        user_info = {"username": user, "uid": f"uid-{user}", "groups": ["system:authenticated"]}
        return {"kind": "TokenReview", "status": {"authenticated": True, "user": user_info}}

    async def access_review(self, request: kmock.Request) -> Any:
        await self.gate.wait()
        if request.headers.get("Authorization") != f"Bearer {API_SA_TOKEN}":
            self.unauthorized_calls += 1
            return kmock.Response(status=401, payload={"kind": "Status", "code": 401})
        spec = request.data["spec"]
        attributes = spec["resourceAttributes"]
        assert (attributes["verb"], attributes["group"], attributes["resource"]) == (
            "get",
            "headrace.io",
            "ingestionjobs",
        )
        granted = self.grants.get(spec["user"], set())
        namespace = attributes.get("namespace", "")
        allowed = "*" in granted or (namespace != "" and namespace in granted)
        return {"kind": "SubjectAccessReview", "status": {"allowed": allowed}}


@pytest.fixture
def kmock_options() -> dict[str, Any]:
    """A plain HTTP mock: the reviews are answered by `Cluster`, not stored as objects by the emulator."""
    return {"cls": kmock.RawHandler}


@pytest.fixture
def cluster(kmock: kmock.RawHandler) -> Cluster:
    """alice reads team-a, bob reads team-b, admin reads everything, eve reads nothing."""
    fake = Cluster(
        users={"alice-token": "alice", "bob-token": "bob", "admin-token": "admin", "eve-token": "eve"},
        grants={"alice": {"team-a"}, "bob": {"team-b"}, "admin": {"*"}},
    )
    kmock["post /apis/authentication.k8s.io/v1/tokenreviews"] << fake.token_review
    kmock["post /apis/authorization.k8s.io/v1/subjectaccessreviews"] << fake.access_review
    return fake


def reviews(handler: kmock.RawHandler, kind: str) -> list[kmock.Request]:
    """The review requests the API sent to the fake cluster, of one kind."""
    return [r for r in handler if r.resource is not None and r.resource.plural == kind]


@pytest.fixture
def settings(dsn: str, kmock: kmock.RawHandler, cluster: Cluster, tmp_path: Path) -> Callable[..., ApiSettings]:
    """Settings for the app under test, `kubernetes` auth against the fake cluster unless overridden."""
    token_file = tmp_path / "serviceaccount-token"
    token_file.write_text(API_SA_TOKEN + "\n")

    def make(**overrides: Any) -> ApiSettings:
        values: dict[str, Any] = {
            "database_url": dsn,
            "listen_host": "127.0.0.1",
            "kube_api_url": str(kmock.url),
            "kube_token_file": token_file,
            "events_poll_seconds": 0.05,
        }
        return ApiSettings(**{**values, **overrides})

    return make


@asynccontextmanager
async def serve(settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a freshly started app (lifespan run), over ASGI."""
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://headrace") as client,
    ):
        yield client


@pytest.fixture
async def client(settings: Callable[..., ApiSettings]) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings()) as client:
        yield client


class Tap:
    """The app, with what it has sent of its responses' bodies so far readable as it is sent.

    httpx's ASGITransport hands a test the body only once the response ended; a test that must act at a
    point of an open event stream (after its first `phase` frame, say) waits for that text here instead
    of sleeping and hoping the stream got there.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sent = ""
        self._more = asyncio.Condition()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def tapped(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body":
                async with self._more:
                    self.sent += message.get("body", b"").decode()
                    self._more.notify_all()

        await self.app(scope, receive, tapped)

    async def wait_for(self, text: str) -> None:
        """Until `text` was sent (the test's timeout bounds the wait)."""
        async with self._more:
            await self._more.wait_for(lambda: text in self.sent)


@pytest.fixture
async def tapped(settings: Callable[..., ApiSettings]) -> AsyncIterator[tuple[httpx.AsyncClient, Tap]]:
    """A client of the app, and the tap showing what the app has sent so far."""
    app = create_app(settings())
    async with LifespanManager(app) as manager:
        tap = Tap(manager.app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(tap), base_url="http://headrace") as client:
            yield client, tap


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def ingest(
    pool: Pool, root: Path, *, namespace: str, name: str, files: dict[str, str], metadata: Any = None, **spec: Any
) -> JobRecord:
    """Register a job over `files` and run it to the end with the real worker, in this process."""
    folder = root / namespace / name
    for relative, text in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    job = await jobs.register_job(
        pool,
        uid=uuid.uuid4(),
        namespace=namespace,
        name=name,
        generation=1,
        spec=volume_spec(f"{namespace}/{name}", workers={"batchSize": 2}, **spec),
    )
    await runs.start_run(pool, job, reason="test")
    # One task at a time: the answers list documents and events in the order they were stored.
    worker = Worker(DirectStore(pool, job.uid), volume_root=root, poll_seconds=0.02, lease_seconds=10, tasks_at_once=1)
    code = await worker.run()
    assert code == 0
    found = await jobs.get_job(pool, job.uid)
    assert found is not None
    return found


TEAM_A = {
    "reports/glacier.txt": "The zephyr crossed the glacier at dawn. Team A measured the ice and wrote a report.",
    "reports/river.md": "# River\n\nA zephyr rippled the river. The headrace channel fed the mill wheel.",
    "notes/empty.txt": "",
}
TEAM_B = {
    "secret.txt": "Team B keeps its zephyr secret: the combination is under the mill.",
}


@pytest.fixture
async def seeded(pool: Pool, tmp_path: Path) -> dict[str, JobRecord]:
    """team-a/docs (two documents and one that fails) and team-b/docs, ingested by the real worker."""
    root = tmp_path / "volumes"
    return {
        "team-a": await ingest(pool, root, namespace="team-a", name="docs", files=TEAM_A),
        "team-b": await ingest(pool, root, namespace="team-b", name="docs", files=TEAM_B),
    }
