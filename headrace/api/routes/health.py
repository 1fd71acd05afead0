"""Liveness and readiness for the kubelet."""

import asyncio

from fastapi import APIRouter

from headrace.api.deps import PoolDep
from headrace.api.problems import ProblemError, responses
from headrace.api.schemas import Health
from headrace.store import vectors

VECTORS_MISSING = (
    "unavailable: the vector extension (pgvector) is not installed in the database; search is keyword-only "
    "until an admin runs CREATE EXTENSION vector (see docs/operations.md)"
)

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health()


@router.get("/readyz", summary="Readiness: Postgres answers", responses=responses(503))
async def readyz(pool: PoolDep) -> Health:
    """Ready when Postgres answers. `checks.vectors` says whether semantic search is possible: without
    the pgvector extension the API still serves, keyword search only."""
    try:
        async with asyncio.timeout(2):
            has_vectors = await vectors.available(pool)
    except Exception as exc:  # any failure of the ping means not ready
        raise ProblemError(503, f"postgres: {type(exc).__name__}: {exc}"[:300], headers={"Retry-After": "5"}) from exc
    return Health(checks={"postgres": "ok", "vectors": "ok" if has_vectors else VECTORS_MISSING})
