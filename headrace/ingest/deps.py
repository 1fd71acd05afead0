"""What the worker API's routes depend on: the authenticated worker, and the store of its one job."""

import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from headrace.api.limits import RateLimiter
from headrace.api.problems import ProblemError
from headrace.ingest.auth import WorkerAuthenticator
from headrace.ingest.settings import IngestSettings
from headrace.store.db import Pool
from headrace.worker.store import DirectStore


class JobStores:
    """A `DirectStore` per job, kept while the job is busy (each remembers its job's current run, so a
    run number is checked without a query): at most `size`, least recently used dropped first."""

    def __init__(self, pool: Pool, *, size: int = 10_000) -> None:
        self.pool, self.size = pool, size
        self._stores: OrderedDict[uuid.UUID, DirectStore] = OrderedDict()

    def get(self, job_uid: uuid.UUID) -> DirectStore:
        store = self._stores.get(job_uid)
        if store is None:
            # Workers ride out outages themselves (RemoteStore): a request fails fast with 503 instead.
            store = self._stores[job_uid] = DirectStore(self.pool, job_uid, ride_out_outages=False)
            while len(self._stores) > self.size:
                self._stores.popitem(last=False)
        self._stores.move_to_end(job_uid)
        return store


@dataclass(frozen=True)
class Services:
    """What every request shares."""

    settings: IngestSettings
    pool: Pool
    auth: WorkerAuthenticator
    stores: JobStores
    limiter: RateLimiter
    """Per job: all its workers together."""
    reviews: RateLimiter = field(default_factory=lambda: RateLimiter(10.0, 20))
    """Per client address, charged only for a token not known yet (it costs a TokenReview)."""


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

_bearer = HTTPBearer(
    auto_error=False, description="The worker pod's projected ServiceAccount token (audience headrace-ingest)."
)


async def job_store(
    job_uid: Annotated[uuid.UUID, Path(description="The IngestionJob's uid (metadata.uid).")],
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> DirectStore:
    """The store of the path's job, once the caller is known to be one of that job's workers, within
    the job's rate limit."""
    token = credentials.credentials if credentials else None
    address = f"address:{request.client.host if request.client else ''}"
    identity = await services.auth.identify(token, admit=lambda: services.reviews.check(address))
    if identity.job_uid != job_uid:
        raise ProblemError(
            403,
            f"this token is a worker's of IngestionJob {identity.namespace}/{identity.job_name} "
            f"({identity.job_uid}), not of job {job_uid}",
        )
    services.limiter.check(f"job:{job_uid}")
    return services.stores.get(job_uid)


StoreDep = Annotated[DirectStore, Depends(job_store)]
