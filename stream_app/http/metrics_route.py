"""GET /metrics: Prometheus' text format, the operational gauges brought up to date first."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    await request.app.state.operational.set_gauges()
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
