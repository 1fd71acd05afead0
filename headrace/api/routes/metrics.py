"""Prometheus metrics, including the backlog gauge the workers' HPA scales on."""

from fastapi import APIRouter, Response

from headrace.api import metrics
from headrace.api.deps import PoolDep

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics text"}},
)
async def prometheus(pool: PoolDep) -> Response:
    body, content_type = await metrics.exposition(pool)
    return Response(body, media_type=content_type)
