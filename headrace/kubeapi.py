"""Asking the Kubernetes API server from a Headrace service: where it is, how its certificate is trusted,
and which token goes with each request (this pod's own ServiceAccount token, re-read as the kubelet rotates it).

Two services ask it about their callers: the search API (who is this, may they read that namespace;
`headrace/api/auth.py`) and the worker API (which IngestionJob does this worker pod work for;
`headrace/ingest/auth.py`). Both keep answers briefly in a `TtlCache` and ask each question once however
many requests wait for its answer (`Singleflight`).
"""

import asyncio
import logging
import os
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import httpx

from headrace.settings import Settings

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

K = TypeVar("K")
V = TypeVar("V")


class KubeSettings(Settings):
    """Where the API server is and how to reach it; the settings of services that ask it extend this."""

    kube_api_url: str | None = None
    """Kubernetes API server; defaults to the in-cluster address from KUBERNETES_SERVICE_HOST/PORT."""

    kube_token_file: Path = SERVICE_ACCOUNT_DIR / "token"
    """This pod's ServiceAccount token, sent with every request to the API server."""

    kube_ca_file: Path = SERVICE_ACCOUNT_DIR / "ca.crt"
    """CA bundle that signs the API server's certificate."""

    def kubernetes_url(self) -> str:
        """The API server to ask; a ValueError outside a cluster when none is configured."""
        if self.kube_api_url:
            return self.kube_api_url.rstrip("/")
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ValueError("outside a cluster needs HEADRACE_KUBE_API_URL")
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{port}"


class KubeConnection(Protocol):
    """What `KubeApi.from_settings` reads: `KubeSettings` and every settings class extending it."""

    @property
    def kube_token_file(self) -> Path: ...

    @property
    def kube_ca_file(self) -> Path: ...

    def kubernetes_url(self) -> str: ...


class KubeUnavailable(Exception):
    """The API server could not be asked, or did not answer the question (5xx, our own RBAC missing): retry shortly."""


class KubeApi:
    """An httpx client of one API server, sending this pod's ServiceAccount token; JSON in, JSON out."""

    TOKEN_REFRESH_SECONDS = 60.0
    """Projected ServiceAccount tokens rotate: the file is read again this often."""

    def __init__(self, client: httpx.AsyncClient, *, token_file: Path) -> None:
        self._client = client
        self._token_file = token_file
        self._token: tuple[float, str] | None = None

    @classmethod
    def from_settings(cls, settings: KubeConnection, *, timeout: float = 5.0) -> "KubeApi":
        url = settings.kubernetes_url()
        verify: ssl.SSLContext | bool = True
        if url.startswith("https://") and settings.kube_ca_file.exists():
            verify = ssl.create_default_context(cafile=str(settings.kube_ca_file))
        client = httpx.AsyncClient(base_url=url, verify=verify, timeout=httpx.Timeout(timeout))
        return cls(client, token_file=settings.kube_token_file)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _credentials(self) -> dict[str, str]:
        now = time.monotonic()
        if self._token is None or self._token[0] < now:
            self._token = (now + self.TOKEN_REFRESH_SECONDS, self._token_file.read_text().strip())
        return {"Authorization": f"Bearer {self._token[1]}"}

    async def _send(self, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        try:
            headers = await asyncio.to_thread(self._credentials)
            return await self._client.request(method, path, json=body, headers=headers)
        except (httpx.HTTPError, OSError) as exc:
            log.warning("Failed Kubernetes request", extra={"method": method, "path": path, "error": str(exc)})
            raise KubeUnavailable(f"the Kubernetes API server could not be asked ({type(exc).__name__})") from exc

    @staticmethod
    def _refused(method: str, path: str, response: httpx.Response) -> KubeUnavailable:
        log.warning(
            "Refused Kubernetes request", extra={"method": method, "path": path, "status": response.status_code}
        )
        return KubeUnavailable(f"the Kubernetes API server refused a request ({response.status_code})")

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST an object (a review) and return the server's answer."""
        response = await self._send("POST", path, body)
        if response.status_code not in (200, 201):
            raise self._refused("POST", path, response)
        answer: dict[str, Any] = response.json()
        return answer

    async def get(self, path: str) -> dict[str, Any] | None:
        """GET an object; None when it does not exist (404)."""
        response = await self._send("GET", path, None)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._refused("GET", path, response)
        answer: dict[str, Any] = response.json()
        return answer


class TtlCache(Generic[K, V]):
    """A small LRU map whose entries expire; enough for a few thousand callers."""

    def __init__(self, ttl: float, *, size: int = 4096) -> None:
        self.ttl, self.size = ttl, size
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._entries.pop(key, None)
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: K, value: V, *, ttl: float | None = None) -> None:
        """Keep `value` for the cache's ttl, or for `ttl` seconds if shorter (an answer that expires sooner)."""
        seconds = self.ttl if ttl is None else min(ttl, self.ttl)
        if seconds <= 0:
            return
        self._entries[key] = (time.monotonic() + seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class Singleflight:
    """Runs one piece of work per key at a time; concurrent callers with the same key share its answer or error.

    A burst of requests with a token not yet cached then costs one review, not one per request.
    """

    def __init__(self) -> None:
        self._inflight: dict[Hashable, asyncio.Future[Any]] = {}

    async def run(self, key: Hashable, work: Callable[[], Awaitable[V]]) -> V:
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(work())
            self._inflight[key] = pending

            def forget(done: "asyncio.Future[Any]") -> None:
                self._inflight.pop(key, None)
                if not done.cancelled():
                    done.exception()  # retrieved here, so an answer nobody waits for any more is not logged

            pending.add_done_callback(forget)
        # Shielded: one caller going away must not cancel the work the others wait for.
        answer: V = await asyncio.shield(pending)
        return answer
