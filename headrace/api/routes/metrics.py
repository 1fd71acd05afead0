"""Prometheus metrics, including the backlog gauge the workers' HPA scales on."""

from fastapi import APIRouter, Response

from headrace.api import metrics
from headrace.api.deps import ServicesDep

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics text"}},
)
async def prometheus(services: ServicesDep) -> Response:
    body, content_type = await metrics.exposition(services.pool, services.metrics_lock)
    return Response(body, media_type=content_type)
