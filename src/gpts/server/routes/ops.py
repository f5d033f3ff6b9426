"""Operations: /health for load balancers (open to all), /metrics for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gpts.server.errors import ApiError

router = APIRouter(include_in_schema=False)


@router.get("/health")
async def health(request: Request) -> dict[str, str]:
    """200 once the models named at startup are loaded, 503 until then."""
    serving = getattr(request.app.state, "serving", None)
    if serving is None or not serving.ready:
        raise ApiError(503, "The server is loading its models.", code="loading", headers={"Retry-After": "1"})
    return {"status": "ok"}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
