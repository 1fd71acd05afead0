"""Liveness and readiness for the kubelet."""

import asyncio

from fastapi import APIRouter

from headrace.api.deps import PoolDep
from headrace.api.problems import ProblemError, responses
from headrace.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health()


@router.get("/readyz", summary="Readiness: Postgres answers", responses=responses(503))
async def readyz(pool: PoolDep) -> Health:
    try:
        async with asyncio.timeout(2):
            await pool.fetchval("SELECT 1")
    except Exception as exc:  # any failure of the ping means not ready
        raise ProblemError(503, f"postgres: {type(exc).__name__}: {exc}"[:300], headers={"Retry-After": "5"}) from exc
    return Health(checks={"postgres": "ok"})
