"""The ingest service as tests run it: the real app and server, with worker identities a test hands out
(`Identities`) instead of TokenReviews (the Kubernetes authenticator is tested on a real control plane in
test_worker_auth.py)."""

import asyncio
import json
import os
import secrets
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from headrace.api.auth import Admit, Unauthenticated
from headrace.ingest.auth import WorkerIdentity
from headrace.ingest.settings import IngestSettings
from headrace.store.jobs import JobRecord
from tests.sockets import free_port


def _admit_all() -> None:
    pass


class Identities:
    """A `WorkerAuthenticator` whose tokens a test issues: each names one worker pod of one job. Kept in a
    file, read at every request, so a service in another process sees tokens issued after it started."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            path.write_text("{}")

    def issue(self, job: JobRecord, *, pod: str = "worker-0") -> str:
        token = secrets.token_urlsafe(24)
        known = json.loads(self.path.read_text())
        known[token] = {
            "namespace": job.namespace,
            "job_name": job.name,
            "job_uid": str(job.uid),
            "pod_name": pod,
            "pod_uid": str(uuid.uuid4()),
        }
        self.path.write_text(json.dumps(known))
        return token

    def revoke(self, token: str) -> None:
        known = json.loads(self.path.read_text())
        known.pop(token, None)
        self.path.write_text(json.dumps(known))

    async def identify(self, token: str | None, *, admit: Admit = _admit_all) -> WorkerIdentity:
        known = json.loads(self.path.read_text())
        if not token or token not in known:
            admit()
            raise Unauthenticated("not a token of a worker of this test")
        found = known[token]
        return WorkerIdentity(**{**found, "job_uid": uuid.UUID(found["job_uid"])})

    async def aclose(self) -> None:
        pass


def settings(dsn: str, **overrides: object) -> IngestSettings:
    return IngestSettings(database_url=dsn, kube_api_url="https://unused.invalid", **overrides)  # type: ignore[arg-type]


class ServiceProcess:
    """`headrace.ingest.server.run` in a process of its own on a fixed port, which a test may kill -9 and
    start again."""

    def __init__(self, dsn: str, identities: Path, port: int) -> None:
        self.dsn, self.identities, self.port = dsn, identities, port
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.ingest.serve", self.dsn, str(self.port), str(self.identities), env=env
        )
        async with httpx.AsyncClient(base_url=self.url) as client:
            while True:  # until it answers (or died)
                assert self.process.returncode is None, "the ingest service exited at start"
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        """kill -9: requests under way are cut off, whatever they had done."""
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM: a clean stop; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 30)


@asynccontextmanager
async def service_process(dsn: str, tmp_path: Path) -> AsyncIterator[tuple[ServiceProcess, Identities]]:
    identities = Identities(tmp_path / "identities.json")
    service = ServiceProcess(dsn, identities.path, free_port())
    await service.start()
    try:
        yield service, identities
    finally:
        if service.process is not None and service.process.returncode is None:
            await service.kill()
