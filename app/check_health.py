"""Use case: is the node well? For the local ``/health`` endpoint."""
from __future__ import annotations

import asyncio

from v6node.domain.errors import NodeError
from v6node.ports.clock import Clock
from v6node.ports.container_runtime import ContainerRuntime
from v6node.ports.event_stream import EventStream
from v6node.ports.monitoring_server import Health
from v6node.ports.server_api import ServerApi

ENGINE_ANSWERS_WITHIN = 5.0


class CheckHealth:
    """Healthy when logged in with a token that has not expired, the websocket is connected
    and the Docker engine answers (within a few seconds); each part says what was found."""

    def __init__(self, server: ServerApi, events: EventStream, runtime: ContainerRuntime, clock: Clock) -> None:
        self.server = server
        self.events = events
        self.runtime = runtime
        self.clock = clock

    async def __call__(self) -> Health:
        parts: dict[str, str] = {}
        expires = self.server.token_expires_at()
        logged_in = bool(self.server.access_token()) and expires > self.clock.now().timestamp()
        parts["server"] = "logged in" if logged_in else "not logged in (or the token expired)"
        connected = self.events.connected
        parts["websocket"] = "connected" if connected else "not connected"
        try:
            async with asyncio.timeout(ENGINE_ANSWERS_WITHIN):
                await self.runtime.ping()
            engine = True
            parts["docker"] = "answers"
        except (NodeError, TimeoutError) as exc:
            engine = False
            parts["docker"] = f"does not answer ({exc or 'timed out'})"
        return Health(logged_in and connected and engine, parts)
