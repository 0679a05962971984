"""The algorithm proxy's connection limits on the real uvicorn server, on loopback (no Docker needed)."""
from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
from collections.abc import AsyncIterator, Iterable

import httpx
import pytest

from v6node.adapters.crypto.base64_cryptor import Base64Cryptor
from v6node.adapters.proxy.starlette_proxy import StarletteProxyServer

API = "http://server.test/api"
TOKEN = "container-token-of-run-3"
# Linux routes all of 127.0.0.0/8 over loopback: sockets bound to these are other peers.
GREEDY_PEER = "127.0.0.2"
OTHER_PEER = "127.0.0.3"
PATIENCE = 60  # a shared 2-core machine: deadlines are generous, nothing is timed


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
async def start_proxy() -> AsyncIterator:
    """Factory: a proxy on 127.0.0.1 in front of a fake server that knows ``task/1``; TOKEN authorized."""
    started: list[StarletteProxyServer] = []

    async def start(**limits: float) -> StarletteProxyServer:
        server = httpx.MockTransport(lambda request: httpx.Response(200, json={"id": 1}))
        proxy = StarletteProxyServer(API, transport=server, **limits)  # type: ignore[arg-type]
        await proxy.start("127.0.0.1", Base64Cryptor())
        proxy.authorize(TOKEN)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.stop()


@pytest.fixture
def clients() -> Iterable[list[socket.socket]]:
    """Client sockets a test opens; all closed at the end."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


async def connect_idle(port: int, count: int, source: str, into: list[socket.socket]) -> list[socket.socket]:
    """``count`` TCP connections from ``source`` that never send a byte."""
    loop = asyncio.get_running_loop()
    made = []
    for _ in range(count):
        sock = socket.socket()
        into.append(sock)
        sock.setblocking(False)
        sock.bind((source, 0))
        await loop.sock_connect(sock, ("127.0.0.1", port))
        made.append(sock)
    return made


async def closed_by_the_proxy(sock: socket.socket) -> bytes:
    """What the proxy sent on ``sock`` until it closed it (end of stream or a reset)."""
    received = b""
    while True:
        try:
            data = await asyncio.get_running_loop().sock_recv(sock, 65536)
        except ConnectionResetError:
            return received
        if not data:
            return received
        received += data


async def all_closed(socks: list[socket.socket]) -> list[bytes]:
    return await asyncio.wait_for(asyncio.gather(*(closed_by_the_proxy(s) for s in socks)), PATIENCE)


async def authorized_get(port: int) -> httpx.Response:
    async with httpx.AsyncClient(timeout=PATIENCE) as algorithm:
        return await algorithm.get(f"http://127.0.0.1:{port}/task/1", headers={"Authorization": f"Bearer {TOKEN}"})


async def test_400_idle_connections_from_one_peer_neither_lock_others_out_nor_pile_up_descriptors(
    start_proxy, clients: list[socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await start_proxy(max_connections_per_peer=32, header_timeout=600)  # only the cap closes here
    caplog.set_level(logging.INFO, logger="v6node.proxy")
    before = open_fds()

    idle = await connect_idle(proxy.port, 400, GREEDY_PEER, clients)
    answer = await authorized_get(proxy.port)
    refused_at_once = await all_closed(idle[32:])  # connections are accepted in the order they were made
    proxy_side = open_fds() - len(clients)

    assert (answer.status_code, answer.json()) == (200, {"id": 1})
    assert set(refused_at_once) == {b""}  # closed without a word
    assert proxy_side <= before + 32 + 4  # the 32 the peer may keep, and a little slack
    refused = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(refused) == 1 and GREEDY_PEER in refused[0] and "per peer" in refused[0], refused


async def test_connections_that_send_no_request_head_in_time_are_closed(
    start_proxy, clients: list[socket.socket]
) -> None:
    proxy = await start_proxy(header_timeout=3, keep_alive_timeout=1)
    before = open_fds()
    idle = await connect_idle(proxy.port, 30, GREEDY_PEER, clients)
    [half_head] = await connect_idle(proxy.port, 1, OTHER_PEER, clients)
    await asyncio.get_running_loop().sock_sendall(half_head, b"GET /task/1 HTTP/1.1\r\nHost: proxy\r\n")
    [kept_alive] = await connect_idle(proxy.port, 1, OTHER_PEER, clients)
    request = f"GET /task/1 HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    await asyncio.get_running_loop().sock_sendall(kept_alive, request)
    # A refused request whose body is still coming: the proxy answers 401 and waits for no body.
    [trickling] = await connect_idle(proxy.port, 1, OTHER_PEER, clients)
    await asyncio.get_running_loop().sock_sendall(
        trickling, b"POST /task HTTP/1.1\r\nHost: proxy\r\nContent-Length: 1000000\r\n\r\n{"
    )

    said = await all_closed([*idle, half_head, kept_alive, trickling])
    for sock in clients:
        sock.close()
    clients.clear()

    assert set(said[:31]) == {b""}
    assert said[31].startswith(b"HTTP/1.1 200 ") and said[32].startswith(b"HTTP/1.1 401 ")
    assert open_fds() <= before + 2
    assert (await authorized_get(proxy.port)).status_code == 200


async def test_past_the_total_cap_a_new_connection_is_closed_at_once(
    start_proxy, clients: list[socket.socket]
) -> None:
    proxy = await start_proxy(max_connections=40, max_connections_per_peer=32, header_timeout=600)

    greedy = await connect_idle(proxy.port, 32, GREEDY_PEER, clients)
    other = await connect_idle(proxy.port, 10, OTHER_PEER, clients)
    [third] = await connect_idle(proxy.port, 1, "127.0.0.4", clients)
    await all_closed([*other[8:], third])

    with pytest.raises(httpx.TransportError):
        await authorized_get(proxy.port)  # from a third address, with a token: no slot is left
    closed_meanwhile, _, _ = select.select([*greedy, *other[:8]], [], [], 0)
    assert closed_meanwhile == []  # the 40 admitted connections are still there
