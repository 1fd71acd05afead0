"""Who is calling, and which namespaces they may read.

`kubernetes` mode asks the API server: a TokenReview says whose token it is, and a
SubjectAccessReview per namespace says whether they may `get` `ingestionjobs.headrace.io` there.
Answers are cached for a few seconds, keyed by a hash of the token (never the token itself).
"""

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from headrace.api.problems import ProblemError
from headrace.api.settings import ApiSettings
from headrace.kubeapi import KubeApi, KubeUnavailable, Singleflight, TtlCache

log = logging.getLogger(__name__)

GROUP = "headrace.io"
RESOURCE = "ingestionjobs"
VERB = "get"
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


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
        kube: KubeApi,
        *,
        cache_seconds: float,
        audiences: list[str] | None = None,
        cache_size: int = 4096,
    ) -> None:
        self._kube = kube
        self._audiences = audiences or []
        self._identities: TtlCache[str, Principal] = TtlCache(cache_seconds, size=cache_size)
        # Rejected tokens are remembered apart, so a flood of random tokens can only evict other
        # rejected tokens, never push a valid caller's identity out (and make them pay a review again).
        self._rejected: TtlCache[str, bool] = TtlCache(cache_seconds, size=cache_size)
        self._decisions: TtlCache[tuple[str, str, tuple[str, ...], str], bool] = TtlCache(cache_seconds, size=16384)
        self._once = Singleflight()

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> "KubernetesAuthenticator":
        return cls(
            KubeApi.from_settings(settings),
            cache_seconds=settings.auth_cache_seconds,
            audiences=settings.auth_audiences,
        )

    async def aclose(self) -> None:
        await self._kube.aclose()

    async def _review(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._kube.create(path, body)
        except KubeUnavailable as exc:
            raise AuthUnavailable(f"{exc}; retry shortly") from exc

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
            found: Principal | None = await self._once.run(("token", key), lambda: self._review_token(key, token))
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
            allowed = await self._once.run(("access", *key), lambda: self._review_access(key, principal, namespace))
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
