"""The algorithm proxy's routes against a server faked with httpx.MockTransport."""
from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import httpx
import pytest
from attrs import define, field

from v6node.adapters.crypto.base64_cryptor import Base64Cryptor
from v6node.adapters.memory.manual_clock import ManualClock
from v6node.adapters.proxy.starlette_proxy_server import StarletteProxyServer
from v6node.domain.errors import CryptoError, NodeError
from v6node.ports.cryptor import Cryptor
from v6node.ports.proxy_server import ProxyServer

API = "http://server.test/api"
TOKEN = "container-token-of-run-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROMPTLY = 5


# --- fakes -----------------------------------------------------------------------------------------
def _xor(data: bytes, mask: int) -> bytes:
    return bytes(b ^ mask for b in data)


class XorCryptor:
    """Encrypts for a key by XOR with a byte derived from it, tagged with the key; decrypts only
    what was encrypted for ``own_key``. Records the chunk sizes its streams were fed."""

    encrypted = True

    def __init__(self, own_key: str = "key-self") -> None:
        self.own_key = own_key
        self.encrypt_chunks: list[int] = []
        self.decrypt_chunks: list[int] = []

    @staticmethod
    def mask(key: str) -> int:
        return sum(key.encode()) % 255 + 1

    def _check(self, key: str) -> int:
        if key != self.own_key:
            raise CryptoError(f"encrypted for {key!r}, not for {self.own_key!r}")
        return self.mask(key)

    def own_public_key(self) -> str:
        return self.own_key

    def encrypt_to_str(self, data: bytes, public_key: str) -> str:
        return f"{public_key}${base64.b64encode(_xor(data, self.mask(public_key))).decode()}"

    def decrypt_str(self, value: str) -> bytes:
        key, sep, body = value.partition("$")
        if not sep:
            raise CryptoError("no key tag")
        return _xor(base64.b64decode(body), self._check(key))

    def encrypt_to_bytes(self, data: bytes, public_key: str) -> bytes:
        return f"{public_key}$".encode() + _xor(data, self.mask(public_key))

    def decrypt_bytes(self, value: bytes) -> bytes:
        key, _, body = value.partition(b"$")
        return _xor(body, self._check(key.decode()))

    def encrypt_stream(self, chunks: Iterable[bytes], public_key: str) -> Iterator[bytes]:
        if not public_key.startswith("key-"):
            raise CryptoError("not a public key")
        yield f"{public_key}$".encode()
        for chunk in chunks:
            self.encrypt_chunks.append(len(chunk))
            yield _xor(chunk, self.mask(public_key))

    def encrypt_str_stream(self, chunks: Iterable[bytes], public_key: str) -> Iterator[bytes]:
        yield self.encrypt_to_str(b"".join(chunks), public_key).encode()

    def str_form_length(self, size: int, public_key: str) -> int:
        return len(public_key) + 1 + 4 * ((size + 2) // 3)

    def decrypt_stream(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        header, mask = b"", None
        for chunk in chunks:
            self.decrypt_chunks.append(len(chunk))
            if mask is None:
                header += chunk
                key, sep, chunk = header.partition(b"$")
                if not sep:
                    continue
                mask = self._check(key.decode())
            if chunk:
                yield _xor(chunk, mask)
        if mask is None:
            raise CryptoError("no header")


def test_the_fake_cryptor_keeps_to_the_port() -> None:
    cryptor = XorCryptor("key-one")
    assert isinstance(cryptor, Cryptor)
    assert cryptor.decrypt_str(cryptor.encrypt_to_str(b"secret", "key-one")) == b"secret"
    assert b"".join(cryptor.decrypt_stream([b"key-", b"one$" + _xor(b"ab", cryptor.mask("key-one"))])) == b"ab"
    with pytest.raises(CryptoError):
        cryptor.decrypt_str(cryptor.encrypt_to_str(b"secret", "key-two"))


class InstantClock:
    """Backoff without waiting; remembers each delay asked for."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def now(self) -> Any:
        raise NotImplementedError

    def monotonic(self) -> float:
        return float(len(self.slept))

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0)


@define
class Seen:
    method: str
    path: str  # after /api/
    query: str
    headers: httpx.Headers
    body: bytes
    chunks: list[bytes]

    def json(self) -> Any:
        return json.loads(self.body)


Reply = Callable[[httpx.Request], httpx.Response]


def reply(status: int, body: Any = None, **kwargs: Any) -> Reply:
    return lambda _request: httpx.Response(status, json=body, **kwargs)


def fail(exc: type[httpx.TransportError]) -> Reply:
    def raise_(request: httpx.Request) -> httpx.Response:
        raise exc("simulated", request=request)

    return raise_


@define
class FakeServer:
    """The vantage6 server as the proxy sees it: replies per (method, path), in turn, the last repeating."""

    routes: dict[tuple[str, str], list[Reply]] = field(factory=dict)
    seen: list[Seen] = field(factory=list)

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def to(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if (s.method, s.path) == (method, path)]

    def handle(self, request: httpx.Request, chunks: list[bytes]) -> httpx.Response:
        path = request.url.path.removeprefix("/api/")
        self.seen.append(
            Seen(request.method, path, request.url.query.decode(), request.headers, b"".join(chunks), chunks)
        )
        replies = self.routes.get((request.method, path))
        if not replies:
            return httpx.Response(404, json={"msg": f"no fake route for {request.method} {path}"})
        current = replies.pop(0) if len(replies) > 1 else replies[0]
        return current(request)


class ChunkRecordingTransport(httpx.MockTransport):
    """MockTransport that keeps the request body's chunks as they were sent."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        super().__init__(lambda request: server.handle(request, request.chunks))  # type: ignore[attr-defined]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.chunks = [bytes(c) async for c in request.stream]  # type: ignore[attr-defined]
        request.stream = httpx.ByteStream(b"".join(request.chunks))  # type: ignore[attr-defined]
        return await super().handle_async_request(request)


class Pieces(httpx.AsyncByteStream):
    """A response body sent in the given pieces; ``closed`` is set when the reader closes it."""

    def __init__(self, pieces: Iterable[bytes], forever: bool = False) -> None:
        self.pieces = list(pieces)
        self.forever = forever
        self.closed = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece
        while self.forever:
            yield b"x" * 1024
            await asyncio.sleep(0)

    async def aclose(self) -> None:
        self.closed.set()


# --- fixtures --------------------------------------------------------------------------------------
@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def clock() -> InstantClock:
    return InstantClock()


@pytest.fixture
async def start_proxy(server: FakeServer, clock: InstantClock):
    """Factory: a started proxy (on loopback) in front of the fake server, TOKEN authorized."""
    started: list[StarletteProxyServer] = []

    async def start(cryptor: Cryptor | None = None, **kwargs: Any) -> StarletteProxyServer:
        proxy = StarletteProxyServer(API, transport=ChunkRecordingTransport(server), **{"clock": clock, **kwargs})
        await proxy.start("127.0.0.1", cryptor or Base64Cryptor())
        started.append(proxy)
        proxy.authorize(TOKEN)
        return proxy

    yield start
    for proxy in started:
        await proxy.stop()


def client_of(
    proxy: StarletteProxyServer, headers: dict[str, str] | None = None, peer: str = "127.0.0.1"
) -> httpx.AsyncClient:
    """An algorithm (at address ``peer``) talking to the proxy's ASGI app."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=proxy.app, client=(peer, 40000)),
        base_url="http://proxy",
        headers=AUTH if headers is None else headers,
    )


def uid(n: int) -> str:
    """A blob id as the server makes them (a UUID)."""
    return f"7c9e6679-7425-40de-944b-{n:012d}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def subtask(*org_ids: int, input_: bytes = b'{"method": "partial"}') -> dict[str, Any]:
    return {
        "name": "subtask",
        "image": "127.0.0.1:5999/v6-algo:1",
        "collaboration_id": 3,
        "description": "from a container",
        "organizations": [{"id": org_id, "input": b64(input_)} for org_id in org_ids],
        "databases": [{"label": "default"}],
    }


# --- the port and its lifecycle -----------------------------------------------------------------------
async def test_it_is_a_proxy_server_that_serves_health_on_a_real_socket_until_stopped() -> None:
    proxy = StarletteProxyServer(API)
    assert isinstance(proxy, ProxyServer)

    port = await proxy.start("127.0.0.1", Base64Cryptor())
    try:
        assert port > 0 and proxy.port == port
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{port}/health")
        assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
    finally:
        await proxy.stop()

    assert proxy.port is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=PROMPTLY).close()
    await proxy.stop()  # idempotent


async def test_start_on_a_port_in_use_raises_a_node_error() -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        proxy = StarletteProxyServer(API, port=taken.getsockname()[1])
        with pytest.raises(NodeError, match="cannot listen on 127.0.0.1"):
            await proxy.start("127.0.0.1", Base64Cryptor())
        await proxy.stop()
    finally:
        taken.close()


async def test_a_second_start_is_refused(start_proxy) -> None:
    proxy = await start_proxy()
    with pytest.raises(NodeError, match="already running"):
        await proxy.start("127.0.0.1", Base64Cryptor())


# --- who may call --------------------------------------------------------------------------------------
_EVERY_KIND_OF_ROUTE = [("GET", "/task/1"), ("POST", "/task"), ("GET", "/result?task_id=1"), ("GET", "/result/1"),
                        ("POST", "/blobstream"), ("GET", f"/blobstream/{uid(1)}"), ("PATCH", "/run/1"),
                        ("DELETE", "/x")]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "}, {"Authorization": "Bearer not-ours"}],
    ids=["none", "basic", "empty", "unknown"],
)
async def test_callers_without_an_authorized_token_get_401_and_nothing_is_forwarded(
    start_proxy, server: FakeServer, headers: dict[str, str]
) -> None:
    proxy = await start_proxy(XorCryptor())
    async with client_of(proxy, {**headers, "X-Public-Key": "key-one"}) as algorithm:
        for method, path in _EVERY_KIND_OF_ROUTE:
            answer = await algorithm.request(method, path, json={"organizations": [{"id": 1, "input": "e30="}]})

            assert answer.status_code == 401, (method, path)
            assert "token" in answer.json()["msg"].lower() or "authorization" in answer.json()["msg"].lower()
    assert server.seen == []


async def test_a_revoked_token_is_refused(start_proxy, server: FakeServer) -> None:
    server.on("GET", "task/1", reply(200, {"id": 1}))
    proxy = await start_proxy()
    async with client_of(proxy) as algorithm:
        assert (await algorithm.get("/task/1")).status_code == 200
        proxy.revoke(TOKEN)
        assert (await algorithm.get("/task/1")).status_code == 401
    assert len(server.seen) == 1


async def test_health_needs_no_token(start_proxy, server: FakeServer) -> None:
    proxy = await start_proxy()
    async with client_of(proxy, headers={}) as anyone:
        answer = await anyone.get("/health")
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
    assert server.seen == []


async def test_access_is_logged_without_the_token(
    start_proxy, server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.on("GET", "task/1", reply(200, {"id": 1}))
    proxy = await start_proxy()
    caplog.set_level(logging.DEBUG)
    async with client_of(proxy) as algorithm:
        await algorithm.get("/task/1?secret_looking=1")
    async with client_of(proxy, {"Authorization": "Bearer stolen-token"}) as intruder:
        await intruder.get("/task/1")

    lines = [r.getMessage() for r in caplog.records if r.name == "v6node.proxy"]
    assert any(line.startswith("GET /task/1 -> 200") for line in lines), lines
    assert any(line.startswith("GET /task/1 -> 401") for line in lines), lines
    ours = "\n".join(lines)
    assert TOKEN not in ours and "stolen-token" not in ours and "secret_looking" not in ours


# --- POST /task --------------------------------------------------------------------------------------
async def test_task_inputs_are_encrypted_for_each_organization_with_its_own_key(
    start_proxy, server: FakeServer
) -> None:
    server.on("GET", "blobstream/status", reply(200, {"blob_store_enabled": False}))
    server.on("GET", "organization/1", reply(200, {"id": 1, "public_key": "key-one"}))
    server.on("GET", "organization/2", reply(200, {"id": 2, "public_key": "key-two"}))
    server.on("POST", "task", reply(201, {"id": 99, "name": "subtask"}))
    proxy = await start_proxy(XorCryptor())
    task = subtask(1, 2, input_=b'{"method": "partial_mean"}')

    async with client_of(proxy) as algorithm:
        answer = await algorithm.post("/task", json=task)

    assert (answer.status_code, answer.json()) == (201, {"id": 99, "name": "subtask"})
    [posted] = server.to("POST", "task")
    sent = posted.json()
    assert {k: v for k, v in sent.items() if k != "organizations"} == {
        k: v for k, v in task.items() if k != "organizations"
    }
    by_org = {org["id"]: org["input"] for org in sent["organizations"]}
    assert by_org[1].startswith("key-one$") and by_org[2].startswith("key-two$")
    assert XorCryptor("key-one").decrypt_str(by_org[1]) == b'{"method": "partial_mean"}'
    assert XorCryptor("key-two").decrypt_str(by_org[2]) == b'{"method": "partial_mean"}'
    with pytest.raises(CryptoError):
        XorCryptor("key-one").decrypt_str(by_org[2])
    assert all(s.headers["authorization"] == f"Bearer {TOKEN}" for s in server.seen)


@pytest.mark.parametrize("body", [{}, {"organizations": []}, {"organizations": None}, {"name": "x"}])
async def test_a_task_without_organizations_is_refused(start_proxy, server: FakeServer, body: dict) -> None:
    proxy = await start_proxy(XorCryptor())
    async with client_of(proxy) as algorithm:
        answer = await algorithm.post("/task", json=body)

    assert (answer.status_code, answer.json()) == (400, {"msg": "Organizations missing from input"})
    assert server.seen == []


async def test_unencrypted_task_inputs_pass_unchanged(start_proxy, server: FakeServer) -> None:
    server.on("POST", "task", reply(201, {"id": 5}))
    proxy = await start_proxy(Base64Cryptor())
    task = subtask(1, 2)

    async with client_of(proxy) as algorithm:
        answer = await algorithm.post("/task", json=task)

    assert answer.status_code == 201
    assert [(s.method, s.path) for s in server.seen] == [("POST", "task")]
    assert server.seen[0].json() == task


async def test_with_the_blob_store_on_inputs_are_uuids_and_pass_unchanged(start_proxy, server: FakeServer) -> None:
    server.on("GET", "blobstream/status", reply(200, {"blob_store_enabled": True}))
    server.on("POST", "task", reply(201, {"id": 6}))
    proxy = await start_proxy(XorCryptor())
    task = {**subtask(), "organizations": [{"id": 1, "input": "7c9e6679-7425-40de-944b-e07fc1f90ae7"}]}

    async with client_of(proxy) as algorithm:
        answer = await algorithm.post("/task", json=task)

    assert answer.status_code == 201
    assert server.to("POST", "task")[0].json() == task
    assert server.to("GET", "organization/1") == []


async def test_an_organization_without_a_public_key_stops_the_task(start_proxy, server: FakeServer) -> None:
    server.on("GET", "blobstream/status", reply(200, {"blob_store_enabled": False}))
    server.on("GET", "organization/1", reply(200, {"id": 1, "public_key": ""}))
    proxy = await start_proxy(XorCryptor())

    async with client_of(proxy) as algorithm:
        answer = await algorithm.post("/task", json=subtask(1))

    assert answer.status_code == 400
    assert "Organization 1 has no public key" in answer.json()["msg"]
    assert server.to("POST", "task") == []


async def test_a_refused_key_lookup_reaches_the_algorithm_as_the_server_said(start_proxy, server: FakeServer) -> None:
    server.on("GET", "blobstream/status", reply(200, {"blob_store_enabled": False}))
    server.on("GET", "organization/7", reply(404, {"msg": "Organization with id=7 not found"}))
    proxy = await start_proxy(XorCryptor())

    async with client_of(proxy) as algorithm:
        answer = await algorithm.post("/task", json=subtask(7))

    assert (answer.status_code, answer.json()) == (404, {"msg": "Organization with id=7 not found"})
    assert server.to("POST", "task") == []


async def test_a_task_input_that_is_not_base64_is_refused(start_proxy, server: FakeServer) -> None:
    server.on("GET", "blobstream/status", reply(200, {"blob_store_enabled": False}))
    proxy = await start_proxy(XorCryptor())
    task = {**subtask(), "organizations": [{"id": 1, "input": "{not base64}"}]}

    async with client_of(proxy) as algorithm:
        answer = await algorithm.post("/task", json=task)

    assert answer.status_code == 400 and "not base64" in answer.json()["msg"]
    assert server.to("POST", "task") == []


# --- results ---------------------------------------------------------------------------------------------
async def test_results_are_decrypted_to_base64_of_the_plaintext(
    start_proxy, server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    ours = XorCryptor("key-self")
    page = {
        "data": [
            {"id": 1, "result": ours.encrypt_to_str(b'{"sum": 3}', "key-self"), "blob_storage_used": False},
            {"id": 2, "result": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "blob_storage_used": True},
            {"id": 3, "result": None},
            {"id": 4, "result": ours.encrypt_to_str(b"for someone else", "key-other")},
            {"id": 5, "result": ours.encrypt_to_str(b'{"sum": 4}', "key-self")},  # no blob_storage_used
        ],
        "links": {"first": "/api/result?page=1", "self": "/api/result?page=2"},
    }
    server.on("GET", "result", reply(200, page))
    proxy = await start_proxy(ours)

    async with client_of(proxy) as algorithm:
        answer = await algorithm.get("/result", params={"task_id": 7, "page": 2})

    assert answer.status_code == 200
    items = answer.json()["data"]
    assert base64.b64decode(items[0]["result"]) == b'{"sum": 3}'
    assert items[1] == page["data"][1]
    assert items[2] == page["data"][2]
    assert items[3] == page["data"][3]  # undecryptable: kept as the server stored it
    assert base64.b64decode(items[4]["result"]) == b'{"sum": 4}'
    assert answer.json()["links"] == page["links"]
    assert server.seen[0].query == "task_id=7&page=2"
    assert any("result 4 could not be decrypted" in r.getMessage() for r in caplog.records)


async def test_results_of_an_unencrypted_collaboration_stay_base64(start_proxy, server: FakeServer) -> None:
    server.on("GET", "result", reply(200, {"data": [{"id": 1, "result": b64(b'{"a": 1}')}]}))
    proxy = await start_proxy(Base64Cryptor())

    async with client_of(proxy) as algorithm:
        answer = await algorithm.get("/result?task_id=1")

    assert answer.json()["data"][0]["result"] == b64(b'{"a": 1}')


async def test_results_need_a_task_id(start_proxy, server: FakeServer) -> None:
    proxy = await start_proxy()
    async with client_of(proxy) as algorithm:
        answer = await algorithm.get("/result?page=1")

    assert answer.status_code == 400 and "task_id" in answer.json()["msg"]
    assert server.seen == []


async def test_one_result_by_id_is_decrypted(start_proxy, server: FakeServer) -> None:
    ours = XorCryptor("key-self")
    item = {"id": 12, "result": ours.encrypt_to_str(b'{"mean": 2.5}', "key-self"), "blob_storage_used": False}
    server.on("GET", "result/12", reply(200, item))
    proxy = await start_proxy(ours)

    async with client_of(proxy) as algorithm:
        answer = await algorithm.get("/result/12")

    assert answer.status_code == 200
    assert base64.b64decode(answer.json()["result"]) == b'{"mean": 2.5}'
    assert answer.json()["id"] == 12


async def test_a_refused_result_request_is_relayed(start_proxy, server: FakeServer) -> None:
    server.on("GET", "result", reply(401, {"msg": "Container token expired"}))
    proxy = await start_proxy(XorCryptor())

    async with client_of(proxy) as algorithm:
        answer = await algorithm.get("/result?task_id=3")

    assert (answer.status_code, answer.json()) == (401, {"msg": "Container token expired"})


# --- blobs -------------------------------------------------------------------------------------------------
async def test_a_blob_is_decrypted_in_bounded_chunks_without_the_ciphertext_length(
    start_proxy, server: FakeServer
) -> None:
    ours = XorCryptor("key-self")
    plaintext = bytes(range(256)) * 40  # 10 KiB
    ciphertext = ours.encrypt_to_bytes(plaintext, "key-self")
    pieces = [ciphertext[:5], ciphertext[5:7000], ciphertext[7000:]]
    server.on("GET", f"blobstream/{uid(1)}", lambda _r: httpx.Response(
        200,
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(ciphertext)),
                 "Content-Disposition": "attachment; filename=result_u1.bin"},
        stream=Pieces(pieces),
    ))
    proxy = await start_proxy(ours, chunk_size=1000)

    async with client_of(proxy) as algorithm:
        answer = await algorithm.get(f"/blobstream/{uid(1)}")

    assert answer.status_code == 200
    assert answer.content == plaintext
    assert "content-length" not in answer.headers
    assert answer.headers["content-disposition"] == "attachment; filename=result_u1.bin"
    assert len(ours.decrypt_chunks) > 3 and max(ours.decrypt_chunks) <= 1000
    assert sum(ours.decrypt_chunks) == len(ciphertext)


async def test_a_blob_that_cannot_be_decrypted_gets_500_before_any_byte(start_proxy, server: FakeServer) -> None:
    blob = XorCryptor().encrypt_to_bytes(b"not for us", "key-other")
    server.on(
        "GET", f"blobstream/{uid(2)}", reply(200, headers={"Content-Type": "application/octet-stream"}, content=blob)
    )
    proxy = await start_proxy(XorCryptor("key-self"))

    async with client_of(proxy) as algorithm:
        answer = await algorithm.get(f"/blobstream/{uid(2)}")

    assert answer.status_code == 500
    assert "could not be decrypted" in answer.json()["msg"]


async def test_a_blob_error_is_relayed(start_proxy, server: FakeServer) -> None:
    server.on("GET", f"blobstream/{uid(3)}", reply(501, {"msg": "The large result store is not set to blob storage"}))
    proxy = await start_proxy(XorCryptor())

    async with client_of(proxy) as algorithm:
        answer = await algorithm.get(f"/blobstream/{uid(3)}")

    assert (answer.status_code, answer.json()) == (501, {"msg": "The large result store is not set to blob storage"})


async def test_blobstream_status_is_forwarded_as_is(start_proxy, server: FakeServer) -> None:
    server.on("GET", "blobstream/status", reply(200, {"blob_store_enabled": False}))
    proxy = await start_proxy(XorCryptor())

    async with client_of(proxy) as algorithm:
        answer = await algorithm.get("/blobstream/status")

    assert (answer.status_code, answer.json()) == (200, {"blob_store_enabled": False})


async def test_an_upload_is_encrypted_for_the_given_key_and_streamed_in_bounded_chunks(
    start_proxy, server: FakeServer
) -> None:
    server.on("POST", "blobstream", reply(201, {"uuid": "7c9e6679-7425-40de-944b-e07fc1f90ae7"}))
    ours = XorCryptor("key-self")
    proxy = await start_proxy(ours, chunk_size=1000)
    plaintext = b"0123456789" * 500

    async with client_of(proxy) as algorithm:
        answer = await algorithm.post(
            "/blobstream",
            content=plaintext,  # one piece, with its (plaintext) Content-Length
            headers={**AUTH, "X-Public-Key": "key-two", "Content-Type": "application/octet-stream"},
        )

    assert (answer.status_code, answer.json()) == (201, {"uuid": "7c9e6679-7425-40de-944b-e07fc1f90ae7"})
    [upload] = server.to("POST", "blobstream")
    assert upload.body == ours.encrypt_to_bytes(plaintext, "key-two")
    assert XorCryptor("key-two").decrypt_bytes(upload.body) == plaintext
    assert "content-length" not in upload.headers
    assert upload.headers["transfer-encoding"] == "chunked"
    assert "x-public-key" not in upload.headers
    assert upload.headers["content-type"] == "application/octet-stream"
    assert upload.headers["authorization"] == f"Bearer {TOKEN}"
    assert len(upload.chunks) > 5 and max(len(c) for c in upload.chunks) <= 1000
    assert max(ours.encrypt_chunks) <= 1000


async def test_an_upload_without_a_public_key_is_refused(start_proxy, server: FakeServer) -> None:
    proxy = await start_proxy(XorCryptor())
    async with client_of(proxy) as algorithm:
        answer = await algorithm.post("/blobstream", content=b"data")

    assert (answer.status_code, answer.json()) == (400, {"msg": "Missing X-Public-Key header"})
    assert server.seen == []


async def test_an_upload_for_an_unusable_key_is_refused_before_anything_is_sent(
    start_proxy, server: FakeServer
) -> None:
    proxy = await start_proxy(XorCryptor())
    async with client_of(proxy) as algorithm:
        answer = await algorithm.post("/blobstream", content=b"data", headers={**AUTH, "X-Public-Key": "garbage"})

    assert answer.status_code == 400 and "X-Public-Key" in answer.json()["msg"]
    assert server.seen == []


# --- over a real socket -----------------------------------------------------------------------------------
async def test_a_blob_streams_chunked_over_the_wire(start_proxy, server: FakeServer) -> None:
    plaintext = b"abc" * 100_000
    ciphertext = Base64Cryptor().encrypt_to_bytes(plaintext)
    server.on("GET", f"blobstream/{uid(4)}", lambda _r: httpx.Response(
        200, headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(ciphertext))},
        stream=Pieces([ciphertext[i:i + 4096] for i in range(0, len(ciphertext), 4096)]),
    ))
    proxy = await start_proxy(Base64Cryptor())

    async with httpx.AsyncClient(headers=AUTH) as algorithm:
        answer = await algorithm.get(f"http://127.0.0.1:{proxy.port}/blobstream/{uid(4)}")

    assert answer.status_code == 200
    assert answer.content == plaintext
    assert answer.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in answer.headers


def _crypto_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "v6node-proxy-crypto"]


async def test_a_reader_that_goes_away_closes_the_server_stream_and_the_crypto_thread(
    start_proxy, server: FakeServer
) -> None:
    endless = Pieces([Base64Cryptor().encrypt_to_bytes(b"start")], forever=True)
    server.on("GET", f"blobstream/{uid(5)}", lambda _r: httpx.Response(
        200, headers={"Content-Type": "application/octet-stream"}, stream=endless
    ))
    proxy = await start_proxy(Base64Cryptor())

    async with httpx.AsyncClient(headers=AUTH) as algorithm:
        async with algorithm.stream("GET", f"http://127.0.0.1:{proxy.port}/blobstream/{uid(5)}") as answer:
            async for _ in answer.aiter_raw():
                break

    await asyncio.wait_for(endless.closed.wait(), PROMPTLY)
    for thread in _crypto_threads():
        await asyncio.to_thread(thread.join, PROMPTLY)
    assert _crypto_threads() == []


class FailsMidStream(Base64Cryptor):
    def decrypt_stream(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for plain in super().decrypt_stream(chunks):
            yield plain
            raise CryptoError("damaged in the middle")


async def test_a_blob_that_fails_to_decrypt_midway_is_cut_off_not_truncated_silently(
    start_proxy, server: FakeServer
) -> None:
    sealed = Base64Cryptor().encrypt_to_bytes(b"x" * 50_000)
    server.on("GET", f"blobstream/{uid(6)}", lambda _r: httpx.Response(
        200, headers={"Content-Type": "application/octet-stream"},
        stream=Pieces([sealed[i:i + 4096] for i in range(0, len(sealed), 4096)]),
    ))
    proxy = await start_proxy(FailsMidStream())

    async with httpx.AsyncClient(headers=AUTH) as algorithm:
        with pytest.raises(httpx.RemoteProtocolError):
            await algorithm.get(f"http://127.0.0.1:{proxy.port}/blobstream/{uid(6)}")


# --- forwarding, errors and retries ---------------------------------------------------------------------
@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "PUT", "DELETE"])
async def test_any_other_call_is_forwarded_with_method_query_and_body(
    start_proxy, server: FakeServer, method: str
) -> None:
    server.on(method, "vpn/algorithm/addresses", reply(202, {"addresses": []}, headers={"X-Kept": "yes"}))
    proxy = await start_proxy()
    body = None if method in ("GET", "DELETE") else {"status": "active"}

    async with client_of(proxy) as algorithm:
        answer = await algorithm.request(
            method, "/vpn/algorithm/addresses?only_children=1&label=port%201", json=body
        )

    assert (answer.status_code, answer.json()) == (202, {"addresses": []})
    assert answer.headers["x-kept"] == "yes"
    [seen] = server.seen
    assert (seen.method, seen.path, seen.query) == (method, "vpn/algorithm/addresses", "only_children=1&label=port%201")
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"
    if body is None:
        assert seen.body == b""
    else:
        assert seen.json() == body and seen.headers["content-type"] == "application/json"


async def test_a_4xx_reaches_the_algorithm_with_its_own_status_and_body_at_once(
    start_proxy, server: FakeServer, clock: InstantClock
) -> None:
    server.on("GET", "task/5", reply(403, {"msg": "You lack the permission to do that!"}))
    proxy = await start_proxy()

    async with client_of(proxy) as algorithm:
        answer = await algorithm.get("/task/5")

    assert (answer.status_code, answer.json()) == (403, {"msg": "You lack the permission to do that!"})
    assert len(server.seen) == 1 and clock.slept == []


async def test_a_5xx_is_retried_with_backoff_then_answered_with_502(
    start_proxy, server: FakeServer, clock: InstantClock
) -> None:
    server.on("GET", "run/3", reply(503, {"msg": "down"}))
    proxy = await start_proxy(max_attempts=4, backoff_base=0.5, backoff_max=1.5)

    async with client_of(proxy) as algorithm:
        answer = await algorithm.get("/run/3")

    assert answer.status_code == 502
    assert "GET run/3" in answer.json()["msg"] and "503" in answer.json()["msg"]
    assert len(server.seen) == 4
    assert clock.slept == [0.5, 1.0, 1.5]


@pytest.mark.parametrize("failure", [reply(500, {"msg": "oops"}), fail(httpx.ConnectError), fail(httpx.ReadTimeout)])
async def test_an_idempotent_call_succeeds_after_passing_failures(
    start_proxy, server: FakeServer, failure: Reply
) -> None:
    server.on("GET", "task/1/status", failure, failure, reply(200, {"status": "completed"}))
    proxy = await start_proxy()

    async with client_of(proxy) as algorithm:
        answer = await algorithm.get("/task/1/status")

    assert (answer.status_code, answer.json()) == (200, {"status": "completed"})
    assert len(server.seen) == 3


async def test_a_task_is_posted_again_only_when_the_first_post_never_left(start_proxy, server: FakeServer) -> None:
    server.on("POST", "task", fail(httpx.ConnectError), reply(201, {"id": 8}))
    proxy = await start_proxy()

    async with client_of(proxy) as algorithm:
        answer = await algorithm.post("/task", json=subtask(1))

    assert (answer.status_code, answer.json()) == (201, {"id": 8})
    assert len(server.to("POST", "task")) == 2


@pytest.mark.parametrize(
    "failure, status", [(fail(httpx.ReadTimeout), 502), (fail(httpx.RemoteProtocolError), 502),
                        (reply(500, {"msg": "Internal error"}), 500)],
    ids=["read-timeout", "dropped", "500"],
)
async def test_a_task_post_that_may_have_arrived_is_never_repeated(
    start_proxy, server: FakeServer, clock: InstantClock, failure: Reply, status: int
) -> None:
    server.on("POST", "task", failure, reply(201, {"id": 9}))
    proxy = await start_proxy()

    async with client_of(proxy) as algorithm:
        answer = await algorithm.post("/task", json=subtask(1))

    assert answer.status_code == status
    assert "msg" in answer.json()
    assert len(server.to("POST", "task")) == 1 and clock.slept == []


async def test_hop_by_hop_and_stale_encoding_headers_do_not_pass(start_proxy, server: FakeServer) -> None:
    body = json.dumps({"id": 1, "name": "org"}).encode()
    packed = gzip.compress(body)
    server.on("GET", "organization/1", lambda _r: httpx.Response(200, content=packed, headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip", "Content-Length": str(len(packed)),
        "Connection": "keep-alive, X-Hop", "X-Hop": "1", "Keep-Alive": "timeout=5", "Proxy-Authenticate": "Basic",
        "Trailer": "X-Checksum", "Upgrade": "h2c", "X-End-To-End": "kept",
    }))
    proxy = await start_proxy()

    async with client_of(proxy, {**AUTH, "Connection": "X-Private", "X-Private": "p", "Proxy-Authorization": "Basic x",
                                 "TE": "trailers", "Cookie": "session=1"}) as algorithm:
        answer = await algorithm.get("/organization/1")

    assert answer.json() == {"id": 1, "name": "org"}
    for name in ("content-encoding", "connection", "x-hop", "keep-alive", "proxy-authenticate", "trailer", "upgrade"):
        assert name not in answer.headers, name
    assert answer.headers.get("content-length") in (None, str(len(answer.content)))
    assert answer.headers["x-end-to-end"] == "kept"
    [seen] = server.seen
    for name in ("x-private", "proxy-authorization", "te", "cookie"):
        assert name not in seen.headers, name


# --- what is forwarded at all -------------------------------------------------------------------------
@pytest.mark.parametrize("path", [
    "/organization/%2E%2E/%2E%2E/admin", "/organization/1/%2e%2e", "/%2e/task/1", "/task/%252e%252e/admin",
    "/task/1\\..\\admin", "/task/1%5C..%5Cadmin", "/task/1;x=..", "/task/1%3Bx", "/task/%00", "/task/1%0Aforged",
    "/task/%C3%A9", "/task/1%20", "/task/1%25", "/task/1@x", "/task/1:x",
], ids=lambda p: p.replace("%", "pct"))
@pytest.mark.parametrize("method", ["GET", "PATCH"])
async def test_paths_outside_the_safe_set_are_refused_and_never_forwarded(
    start_proxy, server: FakeServer, path: str, method: str
) -> None:
    proxy = await start_proxy()
    async with client_of(proxy) as algorithm:
        answer = await algorithm.request(method, path, json={"status": "active"} if method == "PATCH" else None)

    assert answer.status_code == 400, answer.text
    assert "path" in answer.json()["msg"].lower()
    assert server.seen == []


@pytest.mark.parametrize("blob", ["%2e%2e", "u1", "status;x", f"{uid(1)}x", f"{uid(1)}%00", f"{uid(1)}%3B",
                                  "7c9e6679742540de944be07fc1f90ae7", "{7c9e6679-7425-40de-944b-e07fc1f90ae7}"])
async def test_a_blob_id_that_is_not_a_uuid_is_refused_and_never_forwarded(
    start_proxy, server: FakeServer, blob: str
) -> None:
    proxy = await start_proxy(XorCryptor())
    async with client_of(proxy) as algorithm:
        answer = await algorithm.get(f"/blobstream/{blob}")

    assert answer.status_code == 400
    assert "UUID" in answer.json()["msg"]
    assert server.seen == []


async def test_the_algorithm_can_still_ask_whether_there_is_a_blob_store(start_proxy, server: FakeServer) -> None:
    server.on("GET", "blobstream/status", reply(200, {"blob_store_enabled": True}))
    proxy = await start_proxy(XorCryptor())
    async with client_of(proxy) as algorithm:
        answer = await algorithm.get("/blobstream/status")

    assert (answer.status_code, answer.json()) == (200, {"blob_store_enabled": True})
    assert [s.path for s in server.seen] == ["blobstream/status"]


@pytest.mark.parametrize("target", [b"/task/1\\..\\admin", b"/task/../admin", b"/blobstream/..", b"/task/1;.."])
async def test_raw_request_targets_are_checked_as_they_arrive(
    start_proxy, server: FakeServer, target: bytes
) -> None:
    proxy = await start_proxy()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer " + TOKEN.encode()
                     + b"\r\nConnection: close\r\n\r\n")
        status_line = await asyncio.wait_for(reader.readline(), PROMPTLY)
    finally:
        writer.close()

    assert status_line.split()[1] == b"400"
    assert server.seen == []


# --- with the real RSA cryptor ------------------------------------------------------------------------
async def test_with_the_rsa_cryptor_inputs_results_and_blobs_round_trip(start_proxy, server: FakeServer) -> None:
    rsa = pytest.importorskip("v6node.adapters.crypto.rsa_cryptor")
    ours = rsa.RsaCryptor(rsa.create_private_key_pem(2048))
    theirs = rsa.RsaCryptor(rsa.create_private_key_pem(2048))
    blob = b'{"rows": [1, 2, 3]}' * 5000
    sealed_blob = theirs.encrypt_to_bytes(blob, ours.own_public_key())
    server.on("GET", "blobstream/status", reply(200, {"blob_store_enabled": False}))
    server.on("GET", "organization/2", reply(200, {"id": 2, "public_key": theirs.own_public_key()}))
    server.on("POST", "task", reply(201, {"id": 10}))
    server.on("GET", "result", reply(200, {"data": [
        {"id": 1, "result": theirs.encrypt_to_str(b'{"sum": 7}', ours.own_public_key()), "blob_storage_used": False},
    ]}))
    server.on("GET", f"blobstream/{uid(9)}", lambda _r: httpx.Response(
        200, headers={"Content-Type": "application/octet-stream"},
        stream=Pieces([sealed_blob[i:i + 3000] for i in range(0, len(sealed_blob), 3000)]),
    ))
    server.on("POST", "blobstream", reply(201, {"uuid": "u10"}))
    proxy = await start_proxy(ours, chunk_size=4096)

    async with client_of(proxy) as algorithm:
        created = await algorithm.post("/task", json=subtask(2, input_=b'{"method": "partial_mean"}'))
        results = await algorithm.get("/result?task_id=10")
        downloaded = await algorithm.get(f"/blobstream/{uid(9)}")
        uploaded = await algorithm.post(
            "/blobstream", content=blob, headers={**AUTH, "X-Public-Key": theirs.own_public_key()}
        )

    assert created.status_code == 201
    [org] = server.to("POST", "task")[0].json()["organizations"]
    assert theirs.decrypt_str(org["input"]) == b'{"method": "partial_mean"}'
    assert base64.b64decode(results.json()["data"][0]["result"]) == b'{"sum": 7}'
    assert downloaded.content == blob
    assert uploaded.status_code == 201
    assert theirs.decrypt_bytes(server.to("POST", "blobstream")[0].body) == blob


class KeyLookupsAnsweredTogether(ChunkRecordingTransport):
    """Answers a key lookup only once ``expected`` of them are in flight: one at a time would time out."""

    def __init__(self, server: FakeServer, expected: int) -> None:
        super().__init__(server)
        self.waiting = expected
        self.all_asked = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/organization/"):
            self.waiting -= 1
            if self.waiting == 0:
                self.all_asked.set()
            await asyncio.wait_for(self.all_asked.wait(), PROMPTLY)
        return await super().handle_async_request(request)


async def test_the_organizations_keys_are_asked_for_at_once_and_each_only_once(server: FakeServer) -> None:
    server.on("GET", "blobstream/status", reply(200, {"blob_store_enabled": False}))
    for org_id in (1, 2, 3):
        server.on("GET", f"organization/{org_id}", reply(200, {"id": org_id, "public_key": f"key-{org_id}"}))
    server.on("POST", "task", reply(201, {"id": 7}))
    proxy = StarletteProxyServer(API, transport=KeyLookupsAnsweredTogether(server, expected=3), clock=InstantClock())
    await proxy.start("127.0.0.1", XorCryptor())
    proxy.authorize(TOKEN)
    try:
        async with client_of(proxy) as algorithm:
            answer = await algorithm.post("/task", json=subtask(1, 2, 3, 2))
    finally:
        await proxy.stop()

    assert answer.status_code == 201, answer.text
    lookups = sorted(s.path for s in server.seen if s.path.startswith("organization/"))
    assert lookups == ["organization/1", "organization/2", "organization/3"]
    sent = server.to("POST", "task")[0].json()["organizations"]
    assert [org["id"] for org in sent] == [1, 2, 3, 2]
    assert [XorCryptor(f"key-{org['id']}").decrypt_str(org["input"]) for org in sent] == [b'{"method": "partial"}'] * 4


async def test_an_unencrypted_task_goes_on_byte_for_byte(start_proxy, server: FakeServer) -> None:
    server.on("POST", "task", reply(201, {"id": 5}))
    proxy = await start_proxy(Base64Cryptor())
    body = b'{"organizations":[{"id":1,"input":"e30="}],  "name": "s\\u00e9", "image": "x"}'

    async with client_of(proxy) as algorithm:
        answer = await algorithm.post("/task", content=body, headers={**AUTH, "Content-Type": "application/json"})

    assert answer.status_code == 201
    [posted] = server.to("POST", "task")
    assert posted.body == body
    assert posted.headers["content-type"] == "application/json"


# --- size caps -------------------------------------------------------------------------------------------
async def _dribble(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    """A body sent chunked, with no Content-Length: only counting it finds its size."""
    for start in range(0, len(data), size):
        yield data[start:start + size]
        await asyncio.sleep(0)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize("method, path", [("POST", "/task"), ("PATCH", "/run/1"), ("POST", "/vpn/algorithm/x")])
async def test_a_body_over_the_cap_gets_413_and_nothing_is_forwarded(
    start_proxy, server: FakeServer, declared: bool, method: str, path: str
) -> None:
    server.on(method, path.lstrip("/"), reply(201, {"id": 1}))
    proxy = await start_proxy(max_body_size=10_000)
    body = json.dumps({**subtask(1), "description": "x" * 10_000}).encode()

    async with client_of(proxy, {**AUTH, "Content-Type": "application/json"}) as algorithm:
        answer = await algorithm.request(method, path, content=body if declared else _dribble(body))
        within = await algorithm.request(method, path, content=json.dumps(subtask(1)).encode())

    assert answer.status_code == 413
    assert "10000 bytes" in answer.json()["msg"]
    assert within.status_code == 201
    assert len(server.seen) == 1


class BlobStore(httpx.AsyncBaseTransport):
    """The server's side of an upload: a blob is stored only once its body has arrived whole."""

    def __init__(self) -> None:
        self.arrived = bytearray()
        self.stored: list[bytes] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.arrived = bytearray()
        async for chunk in request.stream:  # type: ignore[union-attr]
            self.arrived += chunk
        self.stored.append(bytes(self.arrived))
        return httpx.Response(201, json={"uuid": uid(len(self.stored))})


async def test_a_streamed_upload_over_its_cap_is_cut_off_and_the_algorithm_gets_413(server: FakeServer) -> None:
    store = BlobStore()
    proxy = StarletteProxyServer(API, transport=store, clock=InstantClock(), chunk_size=4096, max_upload_size=20_000)
    await proxy.start("127.0.0.1", XorCryptor())
    proxy.authorize(TOKEN)
    headers = {**AUTH, "X-Public-Key": "key-two", "Content-Type": "application/octet-stream"}
    try:
        async with client_of(proxy, headers) as algorithm:
            over = await algorithm.post("/blobstream", content=_dribble(b"y" * 50_000))
            declared_over = await algorithm.post("/blobstream", content=b"z" * 20_001)
            within = await algorithm.post("/blobstream", content=_dribble(b"w" * 20_000))
    finally:
        await proxy.stop()

    assert over.status_code == 413 and "20000 bytes" in over.json()["msg"]
    assert declared_over.status_code == 413
    assert within.status_code == 201
    [stored] = store.stored  # only the upload within the cap
    assert XorCryptor("key-two").decrypt_bytes(stored) == b"w" * 20_000
    for thread in _crypto_threads():
        await asyncio.to_thread(thread.join, PROMPTLY)
    assert _crypto_threads() == []


async def test_an_upload_over_its_cap_was_streaming_when_it_was_cut_off(server: FakeServer) -> None:
    store = BlobStore()
    proxy = StarletteProxyServer(API, transport=store, clock=InstantClock(), chunk_size=4096, max_upload_size=20_000)
    await proxy.start("127.0.0.1", XorCryptor())
    proxy.authorize(TOKEN)
    try:
        async with client_of(proxy, {**AUTH, "X-Public-Key": "key-two"}) as algorithm:
            answer = await algorithm.post("/blobstream", content=_dribble(b"y" * 50_000))
    finally:
        await proxy.stop()

    assert answer.status_code == 413
    assert store.stored == []
    assert 0 < len(store.arrived) <= 20_000 + len("key-two$")  # part went out, never past the cap, never finished


async def test_a_server_answer_over_the_cap_is_not_read_into_memory(start_proxy, server: FakeServer) -> None:
    big_page = {"data": [{"id": 1, "result": "x" * 50_000, "blob_storage_used": True}]}
    server.on("GET", "result", reply(200, big_page))
    bomb = gzip.compress(json.dumps({"id": 2, "result": "0" * 5_000_000}).encode())
    server.on("GET", "result/2", lambda _r: httpx.Response(
        200, content=bomb, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    ))
    server.on("GET", "result/3", reply(200, {"id": 3, "result": None}))
    proxy = await start_proxy(max_answer_size=20_000)

    async with client_of(proxy) as algorithm:
        page = await algorithm.get("/result?task_id=1")
        unpacked = await algorithm.get("/result/2")
        small = await algorithm.get("/result/3")

    assert page.status_code == 502 and "GET result" in page.json()["msg"] and "20000 bytes" in page.json()["msg"]
    assert unpacked.status_code == 502
    assert small.status_code == 200


# --- refusals in the log -----------------------------------------------------------------------------------
def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "v6node.proxy" and r.levelno == logging.WARNING]


async def test_refusals_are_logged_once_per_peer_per_window_and_then_counted(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    proxy = StarletteProxyServer(
        API, transport=ChunkRecordingTransport(server), clock=clock, refusal_log_window=60, max_body_size=100
    )
    await proxy.start("127.0.0.1", Base64Cryptor())
    proxy.authorize(TOKEN)
    caplog.set_level(logging.INFO, logger="v6node.proxy")
    try:
        async with client_of(proxy, {"Authorization": "Bearer forged"}, peer="172.18.0.5") as intruder:
            for _ in range(5):
                await intruder.get("/task/1")
        async with client_of(proxy, peer="172.18.0.5") as same_peer_with_token:
            await same_peer_with_token.get("/task/1;x")
            await same_peer_with_token.post("/task", content=b"x" * 101)
        async with client_of(proxy, {"Authorization": "Bearer forged"}, peer="172.18.0.6") as another:
            await another.get("/task/1")
        first_window = _warnings(caplog)
        await clock.advance(59)
        async with client_of(proxy, {"Authorization": "Bearer forged"}, peer="172.18.0.5") as intruder:
            await intruder.get("/task/1")
        assert len(_warnings(caplog)) == 2
        await clock.advance(1)
        async with client_of(proxy, {"Authorization": "Bearer forged"}, peer="172.18.0.5") as intruder:
            await intruder.get("/task/1")
    finally:
        await proxy.stop()

    assert len(first_window) == 2
    assert "172.18.0.5" in first_window[0] and "172.18.0.6" in first_window[1]
    *_, next_window = _warnings(caplog)
    assert len(_warnings(caplog)) == 3
    assert "172.18.0.5" in next_window and "7 more refusals" in next_window
    access = [r for r in caplog.records if r.name == "v6node.proxy" and r.levelno == logging.INFO and "->" in r.msg]
    assert len(access) == 10  # every request still has its access line
    assert server.seen == []


async def test_malformed_requests_do_not_flood_the_log(start_proxy, caplog: pytest.LogCaptureFixture) -> None:
    proxy = await start_proxy()
    caplog.set_level(logging.INFO)
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        status_line = await asyncio.wait_for(reader.readline(), PROMPTLY)
        writer.close()
        assert status_line.split()[1] == b"400"

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "Invalid HTTP request" in warnings[0], warnings


async def test_the_access_log_cannot_be_given_forged_lines(start_proxy, caplog: pytest.LogCaptureFixture) -> None:
    proxy = await start_proxy()
    caplog.set_level(logging.INFO, logger="v6node.proxy")
    async with client_of(proxy, {"Authorization": "Bearer forged"}) as intruder:
        await intruder.get("/task/1%0AGET /task/2 -> 200 (1 ms)" + "a" * 1000)

    lines = [r.getMessage() for r in caplog.records if r.name == "v6node.proxy"]
    assert lines and all("\n" not in line and len(line) < 500 for line in lines), lines


async def test_starting_raises_the_soft_open_file_limit_to_the_hard_one(
    start_proxy, caplog: pytest.LogCaptureFixture
) -> None:
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 1024:
        pytest.skip(f"the hard open-file limit is {hard}")
    caplog.set_level(logging.DEBUG, logger="v6node.proxy")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        await start_proxy(max_connections=64, max_connections_per_peer=8)
        raised_to = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    assert raised_to == hard
    assert any("from 512 to the hard limit" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


@pytest.mark.parametrize("limits", [
    {"max_connections": 32, "max_connections_per_peer": 32},
    {"max_connections_per_peer": 0},
    {"header_timeout": 2, "keep_alive_timeout": 5},
    {"max_body_size": 0}, {"max_upload_size": 0}, {"max_answer_size": 0}, {"max_header_size": 0},
])
def test_limits_that_would_not_protect_anything_are_refused(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        StarletteProxyServer(API, **limits)
