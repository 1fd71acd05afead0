"""Asking the Kubernetes API server, from any Headrace process: where it is, how its certificate is
trusted, which credentials go with each request, and which answers mean "later" and which "no".

Two services ask it about their callers: the search API (who is this, may they read that namespace;
`headrace/api/auth.py`) and the worker API (which IngestionJob does this worker pod work for;
`headrace/ingest/auth.py`), each with this pod's own ServiceAccount token (re-read as the kubelet rotates
it). Both keep answers briefly in a `TtlCache` and ask each question once however many requests wait for
its answer (`Singleflight`). The operator manages the objects it owns through the same client
(`headrace/operator/kube.py`, on the credentials kopf logged in with).
"""

import asyncio
import json
import logging
import os
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import httpx

from headrace.keepalive import CONNECTIONS
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


JSON = "application/json"

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers that say "try again later", not "this request is wrong": too many requests, and the 5xx."""


class KubeUnavailable(Exception):
    """The API server could not be asked, or did not answer the question (a timeout, 429, 5xx): retry shortly.

    `KubeApi.create` and `.get`, which services ask their questions with, raise it for a refusal too (a 403
    when our own RBAC is missing): a service that may not ask cannot answer its caller either."""


class KubeError(Exception):
    """The API server refused the request (a 4xx other than 429): asking again will not change the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class KubeApi:
    """An async httpx client of one API server: JSON in, JSON out; the one Kubernetes client of every
    Headrace process (the search API, the worker API, the operator; docs/architecture.md says why httpx).

    Credentials are fixed headers (what kopf's login found, for the operator), or this pod's
    ServiceAccount token file, read again as the kubelet rotates it. An httpx client belongs to the event
    loop it was first used in: a caller with several loops opens one `KubeApi` in each.
    """

    TOKEN_REFRESH_SECONDS = 60.0
    """Projected ServiceAccount tokens rotate: the file is read again this often."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        token_file: Path | None = None,
        timeout: float | None = None,
        answered: Callable[[str, str], None] | None = None,
    ) -> None:
        self._client = client
        self._token_file = token_file
        self._token: tuple[float, str] | None = None
        self._timeout = timeout
        self._answered = answered

    @classmethod
    def open(
        cls,
        server: str,
        *,
        verify: ssl.SSLContext | bool = True,
        headers: Mapping[str, str] | None = None,
        token_file: Path | None = None,
        timeout: float = 5.0,
        answered: Callable[[str, str], None] | None = None,
        trust_env: bool = True,
        proxy: str | None = None,
    ) -> "KubeApi":
        """A client of `server`. `timeout` bounds each call as a whole (connecting, sending, the answer);
        `answered(method, code)` is told of each call's outcome, its HTTP status or `error` (no answer).

        It speaks HTTP/2 where the server offers it (every API server does, as client-go expects): one
        connection carries every call in flight. Over HTTP/1.1 a burst of calls holds as many connections,
        and httpcore checks each of them for every call it assigns, so a burst of 300 new IngestionJobs cost
        the operator twice the CPU (docs/benchmarks.md, issue 26 item 1)."""
        client = httpx.AsyncClient(
            base_url=server.rstrip("/"),
            verify=verify,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(timeout),
            limits=CONNECTIONS,
            http2=True,
            trust_env=trust_env,
            proxy=proxy,
        )
        return cls(client, token_file=token_file, timeout=timeout, answered=answered)

    @classmethod
    def from_settings(cls, settings: KubeConnection, *, timeout: float = 5.0) -> "KubeApi":
        """A client of the configured API server (in a pod: the cluster's own) with this pod's token."""
        url = settings.kubernetes_url()
        verify: ssl.SSLContext | bool = True
        if url.startswith("https://") and settings.kube_ca_file.exists():
            verify = ssl.create_default_context(cafile=str(settings.kube_ca_file))
        return cls.open(url, verify=verify, token_file=settings.kube_token_file, timeout=timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _credentials(self) -> dict[str, str]:
        if self._token_file is None:
            return {}
        now = time.monotonic()
        if self._token is None or self._token[0] < now:
            token = (await asyncio.to_thread(self._token_file.read_text)).strip()
            self._token = (now + self.TOKEN_REFRESH_SECONDS, token)
        return {"Authorization": f"Bearer {self._token[1]}"}

    async def request(self, method: str, path: str, body: object = None, *, content_type: str = JSON) -> Any:
        """One API call: the decoded answer (None for an empty one). KubeUnavailable when it got no answer
        in time or one that says "later" (`TRANSIENT_STATUSES`); KubeError when the server refused it."""
        headers = {"Content-Type": content_type}
        content = None if body is None else json.dumps(body).encode()
        try:
            headers.update(await self._credentials())
            async with asyncio.timeout(self._timeout):
                response = await self._client.request(method, path, content=content, headers=headers)
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            self._tell(method, "error")
            log.warning("Failed Kubernetes request", extra={"method": method, "path": path, "error": repr(exc)})
            raise KubeUnavailable(f"the Kubernetes API server could not be asked ({type(exc).__name__})") from exc
        status = response.status_code
        self._tell(method, str(status))
        if status >= 400:
            message = _message(response)
            if status in TRANSIENT_STATUSES:
                log.warning(
                    "Failed Kubernetes request",
                    extra={"method": method, "path": path, "status": status, "error": message},
                )
                raise KubeUnavailable(f"the Kubernetes API server refused a request ({status})")
            raise KubeError(status, message)
        return response.json() if response.content else None

    def _tell(self, method: str, code: str) -> None:
        if self._answered is not None:
            self._answered(method, code)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST an object (a review) and return the server's answer; KubeUnavailable for any refusal."""
        try:
            answer: dict[str, Any] = await self.request("POST", path, body)
        except KubeError as exc:
            raise self._refused("POST", path, exc) from exc
        return answer

    async def get(self, path: str) -> dict[str, Any] | None:
        """GET an object; None when it does not exist (404), KubeUnavailable for any other refusal."""
        try:
            answer: dict[str, Any] = await self.request("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise self._refused("GET", path, exc) from exc
        return answer

    @staticmethod
    def _refused(method: str, path: str, exc: KubeError) -> KubeUnavailable:
        log.warning("Refused Kubernetes request", extra={"method": method, "path": path, "status": exc.status})
        return KubeUnavailable(f"the Kubernetes API server refused a request ({exc.status})")


def _message(response: httpx.Response) -> str:
    """The `message` of a Kubernetes Status answer, else the answer's text."""
    try:
        found = response.json()
    except ValueError:
        return response.text
    return str(found.get("message", response.text)) if isinstance(found, dict) else response.text


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
