"""MonitoringServer: Starlette on uvicorn inside the node's loop, serving /health and /metrics."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from v6node.adapters.proxy.embedded import EmbeddedServer, listen_socket
from v6node.domain.errors import NodeError
from v6node.ports.monitoring_server import Health, MonitoringServer
from v6node.ports.node_metrics import NodeMetrics

log = logging.getLogger("v6node.monitoring")


class StarletteMonitoringServer(MonitoringServer):
    """``/health``: 200 ``{"status": "ok", ...parts}`` or 503 ``{"status": "unhealthy", ...}``;
    ``/metrics``: the node's ``NodeMetrics`` in the Prometheus text format. Meant for loopback
    (the default host): it tells the node's state to whoever can reach it, nothing else."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self._metrics = metrics
        self._health: Callable[[], Awaitable[Health]] | None = None
        self._refresh: Callable[[], Awaitable[None]] | None = None
        self._server: EmbeddedServer | None = None
        self._serving: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[Route("/health", self._health_route, methods=["GET"]), Route("/metrics", self._metrics_route, methods=["GET"])]
        )

    async def start(
        self, host: str, port: int, health: Callable[[], Awaitable[Health]], refresh: Callable[[], Awaitable[None]]
    ) -> int:
        try:
            sock = listen_socket(host, port)
        except OSError as exc:
            raise NodeError(f"the monitoring endpoint cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self._health, self._refresh = health, refresh
        config = uvicorn.Config(
            self.app, lifespan="off", log_config=None, access_log=False, server_header=False, http="h11", ws="none"
        )
        self._server = EmbeddedServer(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[sock]), name="v6node-monitoring")
        ready = asyncio.create_task(self._server.ready.wait())
        await asyncio.wait({self._serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            sock.close()
            raise NodeError(f"the monitoring endpoint did not start on {host}:{port}")
        bound: int = sock.getsockname()[1]
        log.info("monitoring endpoint at http://%s:%d/health and /metrics", host, bound)
        return bound

    async def stop(self) -> None:
        server, serving, self._server, self._serving = self._server, self._serving, None, None
        if server is not None and serving is not None:
            server.should_exit = True
            await asyncio.wait({serving})

    async def _health_route(self, _request: Request) -> Response:
        assert self._health is not None
        health = await self._health()
        body = {"status": "ok" if health.ok else "unhealthy", **health.parts}
        return JSONResponse(body, status_code=200 if health.ok else 503)

    async def _metrics_route(self, _request: Request) -> Response:
        assert self._refresh is not None
        await self._refresh()
        body, content_type = self._metrics.exposition()
        return Response(body, media_type=content_type)
