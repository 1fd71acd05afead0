"""What routes depend on: the pool, the caller, and a namespace the caller may read."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from headrace.api.auth import Authenticator, Forbidden, Principal
from headrace.api.limits import RateLimiter
from headrace.api.problems import ProblemError
from headrace.api.rerank import Reranker
from headrace.api.schemas import NAME_PATTERN, NAMESPACE_PATTERN
from headrace.api.settings import ApiSettings
from headrace.store.db import Pool


@dataclass(frozen=True)
class Services:
    """What the lifespan opened, shared by every request."""

    settings: ApiSettings
    pool: Pool
    auth: Authenticator
    limiter: RateLimiter
    streams: "StreamSlots" = field(default_factory=lambda: StreamSlots(total=1000, per_caller=20))
    reranker: Reranker | None = None
    """The platform's reranker, when `rerank_url` is set."""


class StreamSlots:
    """The event streams this process holds open, in total and per caller.

    A slot is reserved in the request handler, before the response starts, and released exactly once
    when the stream ends; so a burst of requests cannot all pass the check before any stream counts.
    """

    def __init__(self, *, total: int, per_caller: int) -> None:
        self.total, self.per_caller = total, per_caller
        self.open = 0
        self._by_caller: dict[str, int] = {}

    def reserve(self, caller: str) -> Callable[[], None]:
        """Take a slot for `caller`, or raise a problem (429 for the caller, 503 for the process);
        returns the function that gives the slot back (calling it twice is harmless)."""
        if self._by_caller.get(caller, 0) >= self.per_caller:
            raise ProblemError(
                429, f"{caller!r} has {self.per_caller} event streams open already", headers={"Retry-After": "10"}
            )
        if self.open >= self.total:
            raise ProblemError(
                503, "this API process has as many event streams open as it may", headers={"Retry-After": "10"}
            )
        self.open += 1
        self._by_caller[caller] = self._by_caller.get(caller, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.open -= 1
            left = self._by_caller[caller] - 1
            if left:
                self._by_caller[caller] = left
            else:
                del self._by_caller[caller]

        return release

    def held_by(self, caller: str) -> int:
        return self._by_caller.get(caller, 0)


# Dependencies are `async def` even when they await nothing: FastAPI runs a plain `def` dependency
# in its thread pool, and three thread hand-offs per request cost more than the search itself on a
# busy machine (profiled: a third of the API's CPU per search went to them).


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_pool(services: ServicesDep) -> Pool:
    return services.pool


PoolDep = Annotated[Pool, Depends(get_pool)]

_bearer = HTTPBearer(auto_error=False, description="A Kubernetes ServiceAccount or user token (or the static token).")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def get_principal(
    request: Request,
    services: ServicesDep,
    credentials: BearerDep,
) -> Principal:
    """The authenticated caller, within their rate limit."""
    token = credentials.credentials if credentials else None
    address = f"address:{request.client.host if request.client else ''}"
    # A token the API does not know yet costs a TokenReview (or, in token mode, is a guess): the
    # caller's address is charged first, so random tokens cannot make the API flood the API server.
    principal = await services.auth.authenticate(token, admit=lambda: services.limiter.check(address))
    services.limiter.check(f"principal:{principal.name}")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def readable_namespace(
    ns: Annotated[str, Path(pattern=NAMESPACE_PATTERN, max_length=63, description="A namespace.")],
    principal: PrincipalDep,
    services: ServicesDep,
) -> str:
    """The namespace of the path, once the caller is known to be allowed to read it."""
    if not await services.auth.may_read(principal, ns):
        raise Forbidden(principal, ns)
    return ns


NamespaceDep = Annotated[str, Depends(readable_namespace)]
JobNamePath = Annotated[str, Path(pattern=NAME_PATTERN, max_length=253, description="An IngestionJob name.")]


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def reject_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not take: a misspelt filter must not silently widen a search."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    known = _query_names(dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise RequestValidationError(
            [{"loc": ("query", name), "msg": "unknown parameter", "type": "extra_forbidden"} for name in unknown]
        )
