"""What routes depend on: the pool, the caller, and a namespace the caller may read."""

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from headrace.api.auth import Authenticator, Forbidden, Principal, Unauthenticated
from headrace.api.limits import RateLimiter
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
    streams: "StreamCount" = field(default_factory=lambda: StreamCount())


class StreamCount:
    """How many event streams this process holds open."""

    def __init__(self) -> None:
        self.open = 0


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_pool(services: ServicesDep) -> Pool:
    return services.pool


PoolDep = Annotated[Pool, Depends(get_pool)]

_bearer = HTTPBearer(auto_error=False, description="A Kubernetes ServiceAccount or user token (or the static token).")


async def get_principal(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The authenticated caller, within their rate limit."""
    token = credentials.credentials if credentials else None
    try:
        principal = await services.auth.authenticate(token)
    except Unauthenticated:
        # Failed attempts are limited per client address, so guessing tokens is slow.
        services.limiter.check(f"address:{request.client.host if request.client else ''}")
        raise
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


def reject_unknown_query(request: Request) -> None:
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
