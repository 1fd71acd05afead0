"""Who is calling, and which namespaces they may read.

`kubernetes` mode asks the API server: a TokenReview says whose token it is, and a
SubjectAccessReview per namespace says whether they may `get` `ingestionjobs.headrace.io` there.
Answers are cached for a few seconds, keyed by a hash of the token (never the token itself).
"""

import asyncio
import hashlib
import hmac
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import httpx

from headrace.api.problems import ProblemError
from headrace.api.settings import ApiSettings

log = logging.getLogger(__name__)

GROUP = "headrace.io"
RESOURCE = "ingestionjobs"
VERB = "get"
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `everywhere` means every namespace is readable without asking."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict, compare=False, hash=False)
    everywhere: bool = False


class Unauthenticated(ProblemError):
    def __init__(self, detail: str) -> None:
        super().__init__(401, detail, headers={"WWW-Authenticate": 'Bearer realm="headrace"'})


class Forbidden(ProblemError):
    def __init__(self, principal: Principal, namespace: str) -> None:
        super().__init__(403, f"{principal.name!r} may not {VERB} {RESOURCE}.{GROUP} in namespace {namespace!r}")


class AuthUnavailable(ProblemError):
    def __init__(self, detail: str) -> None:
        super().__init__(503, detail, headers={"Retry-After": "5"})


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

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        self._entries[key] = (time.monotonic() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


Admit = Callable[[], None]
"""Called before an authenticator spends anything on a token it does not know (a TokenReview, or a
failed comparison); raises (RateLimited) to refuse. The API passes its per-address rate limit."""


def _admit_all() -> None:
    pass


class Authenticator(Protocol):
    async def authenticate(self, token: str | None, *, admit: Admit = _admit_all) -> Principal:
        """The caller holding this bearer token; raises Unauthenticated."""

    async def may_read(self, principal: Principal, namespace: str) -> bool:
        """Whether the caller may read this namespace's jobs and data."""

    async def aclose(self) -> None: ...


class OpenAuthenticator:
    """`auth.mode: none`: everyone is the local user and reads everything (loopback only)."""

    LOCAL = Principal(name="local", everywhere=True)

    async def authenticate(self, token: str | None, *, admit: Admit = _admit_all) -> Principal:
        return self.LOCAL

    async def may_read(self, principal: Principal, namespace: str) -> bool:
        return True

    async def aclose(self) -> None:
        pass


class StaticTokenAuthenticator:
    """`auth.mode: token`: one shared secret grants reading every namespace."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the static API token is empty")
        self._token = token.encode()

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> "StaticTokenAuthenticator":
        if settings.auth_token_file:
            return cls(settings.auth_token_file.read_text().strip())
        assert settings.auth_token is not None
        return cls(settings.auth_token.get_secret_value())

    async def authenticate(self, token: str | None, *, admit: Admit = _admit_all) -> Principal:
        if token is None or not hmac.compare_digest(token.encode(), self._token):
            admit()  # guessing the token is limited per address
            raise Unauthenticated("a valid bearer token is required")
        return Principal(name="token", everywhere=True)

    async def may_read(self, principal: Principal, namespace: str) -> bool:
        return principal.everywhere

    async def aclose(self) -> None:
        pass


class KubernetesAuthenticator:
    """`auth.mode: kubernetes`: TokenReview for identity, SubjectAccessReview per namespace."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        own_token_file: Path,
        cache_seconds: float,
        audiences: list[str] | None = None,
        cache_size: int = 4096,
    ) -> None:
        self._client = client
        self._own_token_file = own_token_file
        self._own_token: tuple[float, str] | None = None
        self._audiences = audiences or []
        self._identities: TtlCache[str, Principal] = TtlCache(cache_seconds, size=cache_size)
        # Rejected tokens are remembered apart, so a flood of random tokens can only evict other
        # rejected tokens, never push a valid caller's identity out (and make them pay a review again).
        self._rejected: TtlCache[str, bool] = TtlCache(cache_seconds, size=cache_size)
        self._decisions: TtlCache[tuple[str, str, tuple[str, ...], str], bool] = TtlCache(cache_seconds, size=16384)
        self._inflight: dict[Hashable, asyncio.Future[Any]] = {}

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> "KubernetesAuthenticator":
        url = settings.kubernetes_url()
        verify: ssl.SSLContext | bool = True
        if url.startswith("https://") and settings.kube_ca_file.exists():
            verify = ssl.create_default_context(cafile=str(settings.kube_ca_file))
        client = httpx.AsyncClient(base_url=url, verify=verify, timeout=httpx.Timeout(5.0))
        return cls(
            client,
            own_token_file=settings.kube_token_file,
            cache_seconds=settings.auth_cache_seconds,
            audiences=settings.auth_audiences,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def _credentials(self) -> dict[str, str]:
        # Projected ServiceAccount tokens rotate: re-read the file every minute.
        now = time.monotonic()
        if self._own_token is None or self._own_token[0] < now:
            self._own_token = (now + 60, self._own_token_file.read_text().strip())
        return {"Authorization": f"Bearer {self._own_token[1]}"}

    async def _review(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(path, json=body, headers=await asyncio.to_thread(self._credentials))
        except (httpx.HTTPError, OSError) as exc:
            log.warning("Failed review", extra={"path": path, "error": str(exc)})
            raise AuthUnavailable("the Kubernetes API server could not be asked; retry shortly") from exc
        if response.status_code != 201 and response.status_code != 200:
            log.warning("Failed review", extra={"path": path, "status": response.status_code})
            raise AuthUnavailable(f"the Kubernetes API server refused a review ({response.status_code})")
        result: dict[str, Any] = response.json()
        return result

    async def _once(self, key: Hashable, work: Callable[[], Awaitable[Any]]) -> Any:
        """Run `work` once for all concurrent callers asking the same question; each gets its answer or error.

        A burst of requests with a token not yet cached then costs one review, not one per request.
        """
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(work())
            self._inflight[key] = pending

            def forget(done: "asyncio.Future[Any]") -> None:
                self._inflight.pop(key, None)
                if not done.cancelled():
                    done.exception()  # retrieved here, so an answer nobody waits for any more is not logged

            pending.add_done_callback(forget)
        # Shielded: one caller going away must not cancel the review the others wait for.
        return await asyncio.shield(pending)

    async def authenticate(self, token: str | None, *, admit: Admit = _admit_all) -> Principal:
        if not token:
            raise Unauthenticated("a bearer token is required: a ServiceAccount or user token of this cluster")
        key = hashlib.sha256(token.encode()).hexdigest()
        identity = self._identities.get(key)
        if identity is not None:
            return identity
        # Unknown or rejected: the caller's address pays before the API server is asked anything.
        admit()
        if self._rejected.get(key) is None:
            found: Principal | None = await self._once(("token", key), lambda: self._review_token(key, token))
            if found is not None:
                return found
        raise Unauthenticated("the bearer token was not accepted by the cluster")

    async def _review_token(self, key: str, token: str) -> Principal | None:
        spec: dict[str, Any] = {"token": token}
        if self._audiences:
            spec["audiences"] = self._audiences
        review = await self._review(
            TOKEN_REVIEWS, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        )
        status = review.get("status") or {}
        user = status.get("user") or {}
        if not (status.get("authenticated") and user.get("username")):
            self._rejected.put(key, True)
            return None
        identity = Principal(
            name=user["username"],
            uid=user.get("uid", ""),
            groups=tuple(user.get("groups") or ()),
            extra={k: list(v) for k, v in (user.get("extra") or {}).items()},
        )
        self._identities.put(key, identity)
        return identity

    async def may_read(self, principal: Principal, namespace: str) -> bool:
        """Whether a SubjectAccessReview allows `get ingestionjobs.headrace.io` here ('' = all namespaces)."""
        key = (principal.name, principal.uid, principal.groups, namespace)
        allowed = self._decisions.get(key)
        if allowed is None:
            allowed = await self._once(("access", *key), lambda: self._review_access(key, principal, namespace))
        return bool(allowed)

    async def _review_access(
        self, key: tuple[str, str, tuple[str, ...], str], principal: Principal, namespace: str
    ) -> bool:
        attributes = {"verb": VERB, "group": GROUP, "resource": RESOURCE}
        if namespace:
            attributes["namespace"] = namespace
        spec: dict[str, Any] = {
            "resourceAttributes": attributes,
            "user": principal.name,
            "groups": list(principal.groups),
        }
        if principal.uid:
            spec["uid"] = principal.uid
        if principal.extra:
            spec["extra"] = principal.extra
        review = await self._review(
            ACCESS_REVIEWS,
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec},
        )
        allowed = bool((review.get("status") or {}).get("allowed"))
        self._decisions.put(key, allowed)
        return allowed


def build(settings: ApiSettings) -> Authenticator:
    """The authenticator the settings ask for."""
    if settings.auth_mode == "none":
        return OpenAuthenticator()
    if settings.auth_mode == "token":
        return StaticTokenAuthenticator.from_settings(settings)
    return KubernetesAuthenticator.from_settings(settings)


async def readable(
    auth: Authenticator, principal: Principal, namespaces: Callable[[], Awaitable[list[str]]]
) -> list[str] | None:
    """Which of the namespaces the caller may read; None when every namespace is readable.

    One cluster-wide review first: a caller allowed everywhere costs one review, not one per namespace,
    and `namespaces` (a database query) is not even asked.
    """
    if principal.everywhere or await auth.may_read(principal, ""):
        return None
    candidates = await namespaces()
    semaphore = asyncio.Semaphore(8)

    async def check(namespace: str) -> bool:
        async with semaphore:
            return await auth.may_read(principal, namespace)

    decisions = await asyncio.gather(*(check(ns) for ns in candidates))
    return [ns for ns, ok in zip(candidates, decisions, strict=True) if ok]
