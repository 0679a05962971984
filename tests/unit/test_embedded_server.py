"""uvicorn embedded in the node's loop: no timer while idle, a current Date header, stops when told."""
from __future__ import annotations

import asyncio
import time
from email.utils import parsedate_to_datetime

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from v6node.adapters.proxy.embedded import EmbeddedServer, listen_socket

PROMPTLY = 5  # a bound on waits that end at once when the code is right


async def _hello(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def _server() -> EmbeddedServer:
    app = Starlette(routes=[Route("/", _hello)])
    return EmbeddedServer(uvicorn.Config(app, lifespan="off", log_config=None, access_log=False, http="h11", ws="none"))


def _timers(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    return [handle for handle in getattr(loop, "_scheduled") if not handle.cancelled()]


async def test_an_idle_server_schedules_no_timer_and_stops_when_told() -> None:
    loop = asyncio.get_running_loop()
    before = _timers(loop)
    server = _server()
    sock = listen_socket("127.0.0.1", 0)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(PROMPTLY):
        await server.ready.wait()
    await asyncio.sleep(0)  # the serving task reaches its main loop
    # uvicorn's own main loop keeps a 0.1 s sleep scheduled at all times.
    assert _timers(loop) == before
    server.should_exit = True
    async with asyncio.timeout(PROMPTLY):
        await serving
    assert server.should_exit


async def test_responses_carry_the_current_date() -> None:
    server = _server()
    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(PROMPTLY):
            await server.ready.wait()
        async with httpx.AsyncClient() as client:
            for _ in range(2):
                earliest = int(time.time())
                response = await client.get(f"http://127.0.0.1:{port}/")
                latest = int(time.time())
                assert response.text == "hello"
                assert earliest <= parsedate_to_datetime(response.headers["date"]).timestamp() <= latest
    finally:
        server.should_exit = True
        async with asyncio.timeout(PROMPTLY):
            await serving
