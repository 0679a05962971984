"""ProxyServer: the Starlette proxy on loopback and the memory proxy keep one contract."""
from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from v6node.adapters.crypto.base64_cryptor import Base64Cryptor
from v6node.adapters.memory.proxy import MemoryProxyServer
from v6node.adapters.proxy.starlette_proxy_server import StarletteProxyServer
from v6node.domain.errors import NodeError
from v6node.ports.proxy_server import ProxyServer

HOST = "127.0.0.1"


def upstream(request: httpx.Request) -> httpx.Response:
    """The server behind the proxy: every forwarded request is answered 200."""
    return httpx.Response(200, json={"path": request.url.path})


@pytest.fixture(params=["memory", "starlette"])
async def proxy_and_probe(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[ProxyServer, Callable[[str], Awaitable[bool]]]]:
    """The proxy, and how to ask whether it lets a request with a given token through."""
    if request.param == "memory":
        memory = MemoryProxyServer()

        async def memory_accepts(token: str) -> bool:
            return token in memory.tokens

        yield memory, memory_accepts
        return
    real = StarletteProxyServer("http://server.invalid/api", transport=httpx.MockTransport(upstream))

    async def real_accepts(token: str) -> bool:
        assert real.port is not None
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://{HOST}:{real.port}/organization/1", headers={"Authorization": f"Bearer {token}"})
        return answer.status_code == 200

    yield real, real_accepts
    await real.stop()


def test_both_proxies_keep_to_the_port(proxy_and_probe) -> None:
    assert isinstance(proxy_and_probe[0], ProxyServer)


async def test_only_authorized_tokens_get_through_until_they_are_revoked(proxy_and_probe) -> None:
    proxy, accepts = proxy_and_probe
    await proxy.start(HOST, Base64Cryptor(), 0)
    assert not await accepts("tok-1")
    proxy.authorize("tok-1")
    assert await accepts("tok-1") and not await accepts("tok-2")
    proxy.revoke("tok-1")
    assert not await accepts("tok-1")


async def test_a_port_that_is_taken_is_a_node_error(proxy_and_probe) -> None:
    proxy, _ = proxy_and_probe
    if isinstance(proxy, MemoryProxyServer):
        proxy.taken_ports.add(18766)
        taken = 18766
        with pytest.raises(NodeError, match="cannot listen"):
            await proxy.start(HOST, Base64Cryptor(), taken)
        return
    holder = socket.create_server((HOST, 0))
    try:
        with pytest.raises(NodeError, match="cannot listen"):
            await proxy.start(HOST, Base64Cryptor(), holder.getsockname()[1])
    finally:
        holder.close()


async def test_it_starts_again_after_a_stop_and_stopping_twice_is_fine(proxy_and_probe) -> None:
    proxy, _ = proxy_and_probe
    port = await proxy.start(HOST, Base64Cryptor(), 0)
    assert port > 0
    await proxy.stop()
    await proxy.stop()
    assert await proxy.start(HOST, Base64Cryptor(), 0) > 0
