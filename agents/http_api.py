"""The worker's HTTP API (stream_app.http) on HTTP_PORT, served on the worker's event loop: a
loop that stops answering fails /healthz, which is the point of a liveness probe."""

from __future__ import annotations

from agents.context import WorkerContext
from stream_app.http import HttpServer, create_app


class WorkerState:
    """The HTTP API's view of this worker (stream_app.http.probe.WorkerProbe)."""

    def __init__(self, context: WorkerContext) -> None:
        self._context = context

    def consumer_groups(self) -> dict[str, bool]:
        return {consumer.group_id: consumer.joined for consumer in self._context.consumers}

    async def partition_lag(self) -> dict[tuple[str, int], int]:
        lags: dict[tuple[str, int], int] = {}
        for consumer in self._context.consumers:
            lags |= await consumer.lag()
        return lags

    def circuit_states(self) -> dict[str, str]:
        return {platform: str(state) for platform, state in self._context.service.engine.circuit_states().items()}

    def stuck_circuits(self) -> list[str]:
        return sorted(self._context.service.engine.stuck_circuits())

    def unknown_key_ids(self) -> list[str]:
        return sorted(self._context.service.cipher.unknown_key_ids())

    def spooled_tokens(self) -> int:
        return self._context.service.engine.spooled_tokens()


def attach(context: WorkerContext) -> None:
    settings = context.settings
    if not settings.http_port:
        return
    # Bound now, before Faust starts: a port in use stops the start-up with one line.
    server = HttpServer(create_app(context.service, WorkerState(context)), settings.http_host, settings.http_port)

    @context.app.task
    async def serve_http() -> None:
        server.start()

    context.on_stop(server.stop)
