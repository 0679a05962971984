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
from v6node.adapters.proxy.starlette_proxy_server import StarletteProxyServer

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


class ChunkedUploadServer:
    """A server on loopback that reads chunked uploads and stores one only if its last chunk came."""

    def __init__(self) -> None:
        self.stored: list[bytes] = []
        self.cut_off: list[bytes] = []
        self.ended = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b""
        try:
            while size := int((await reader.readline()).strip() or b"-1", 16):
                if size < 0:
                    raise asyncio.IncompleteReadError(body, None)
                body += (await reader.readexactly(size + 2))[:-2]
            await reader.readline()
        except (asyncio.IncompleteReadError, ConnectionResetError):
            self.cut_off.append(body)
            self.ended.set()
            writer.close()
            return
        self.stored.append(body)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n")
        writer.write(b'{"uuid": ""}')
        await writer.drain()
        writer.close()


async def test_an_upload_past_its_cap_never_reaches_the_server_as_a_whole_blob() -> None:
    upstream = ChunkedUploadServer()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    api = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api"
    proxy = StarletteProxyServer(api, max_upload_size=200_000, chunk_size=16_384)
    port = await proxy.start("127.0.0.1", Base64Cryptor())
    proxy.authorize(TOKEN)

    async def upload(size: int) -> AsyncIterator[bytes]:
        for _ in range(size // 10_000):
            yield b"a" * 10_000

    headers = {"Authorization": f"Bearer {TOKEN}", "X-Public-Key": "unused by the base64 cryptor"}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=PATIENCE) as algorithm:
            over = await algorithm.post("/blobstream", content=upload(1_000_000), headers=headers)
            await asyncio.wait_for(upstream.ended.wait(), PATIENCE)
            within = await algorithm.post("/blobstream", content=upload(200_000), headers=headers)
    finally:
        await proxy.stop()
        server.close()
        await server.wait_closed()

    assert over.status_code == 413 and "200000 bytes" in over.json()["msg"]
    [partial] = upstream.cut_off
    assert partial  # streaming had begun when the cap was reached
    assert within.status_code == 201
    [whole] = upstream.stored
    assert Base64Cryptor().decrypt_bytes(whole) == b"a" * 200_000
