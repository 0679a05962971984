"""WebsocketsEventStream against the real vantage6 server, and against a scripted Engine.IO peer."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http import HTTPStatus

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from tests.rig.events import TIMEOUT, next_event
from tests.rig.server import AdminApi, Federation, NodeCredentials, RealServer, create_federation
from tests.rig.user_api import UserApi
from v6node.adapters.socketio.websockets_event_stream import WebsocketsEventStream
from v6node.domain.errors import NotConnected
from v6node.domain.events import (
    Connected,
    Disconnected,
    KillRequested,
    NewTask,
    NodeEvent,
    SyncRequested,
    TokenExpired,
)
from v6node.domain.kill import KillTarget

RIG_JWT_SECRET = b"v6node-rig-secret"  # tests/rig/server.py configures the server with it


async def connected_and_synced(events: AsyncIterator[NodeEvent]) -> None:
    assert await next_event(events) == Connected(reconnect=False)
    assert await next_event(events) == SyncRequested()


# === the real server ===================================================================
def node_token(server: RealServer, node: NodeCredentials) -> str:
    response = httpx.post(f"{server.api}/token/node", json={"api_key": node.api_key}, timeout=30)
    response.raise_for_status()
    return response.json()["access_token"]


def expired_copy(token: str, secret: bytes = RIG_JWT_SECRET) -> str:
    """The same claims, expired an hour ago, signed like the server signs (HS256)."""

    def b64decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    def b64encode(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header, payload, _ = token.split(".")
    claims = json.loads(b64decode(payload))
    now = int(time.time())
    claims.update(iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    signing_input = f"{header}.{b64encode(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64encode(signature)}"


def create_task(user: UserApi, collaboration_id: int, organization_ids: list[int]) -> int:
    """A task whose image is never pulled: only the socket events matter here."""
    return user.create_task(collaboration_id, organization_ids, "127.0.0.1:5999/never-pulled:1", {"method": "noop"}, "socketio-test")["id"]


@pytest.fixture(scope="module")
def socket_federation(admin: AdminApi) -> Federation:
    """Two organizations with a node each; created once because the server takes seconds per user."""
    return create_federation(admin, "socketio-it", n_orgs=2)


@pytest.fixture(scope="module")
def user_api(real_server: RealServer, socket_federation: Federation) -> Iterator[UserApi]:
    api = UserApi(real_server, socket_federation.user)
    yield api
    api.close()


@pytest.fixture
async def open_streams() -> AsyncIterator[Callable[..., WebsocketsEventStream]]:
    """Makes streams and closes every one of them after the test."""
    made: list[WebsocketsEventStream] = []

    def make(root: str, token_provider: Callable[[], str], **options: object) -> WebsocketsEventStream:
        options.setdefault("backoff_initial", 0.05)
        options.setdefault("backoff_max", 0.5)
        stream = WebsocketsEventStream(root, token_provider, **options)
        made.append(stream)
        return stream

    yield make
    for stream in made:
        await stream.close()


@pytest.mark.server
async def test_a_new_task_reaches_every_node_of_the_collaboration(
    real_server: RealServer, socket_federation: Federation, user_api: UserApi, open_streams
) -> None:
    with_run, without_run = socket_federation.nodes
    ours = open_streams(real_server.root, lambda: node_token(real_server, with_run))
    other = open_streams(real_server.root, lambda: node_token(real_server, without_run))
    async with contextlib.aclosing(ours.events()) as our_events, contextlib.aclosing(other.events()) as other_events:
        await connected_and_synced(our_events)
        await connected_and_synced(other_events)

        task_id = create_task(user_api, socket_federation.collaboration_id, [with_run.organization_id])

        assert await next_event(our_events) == NewTask(task_id=task_id, parent_id=None)
        # The server tells the whole collaboration, also nodes without a run in the task.
        assert await next_event(other_events) == NewTask(task_id=task_id, parent_id=None)


@pytest.mark.server
async def test_killing_a_task_sends_its_runs_as_a_kill_order(
    real_server: RealServer, socket_federation: Federation, user_api: UserApi, admin: AdminApi, open_streams
) -> None:
    node = socket_federation.nodes[0]
    stream = open_streams(real_server.root, lambda: node_token(real_server, node))
    async with contextlib.aclosing(stream.events()) as events:
        await connected_and_synced(events)
        task_id = create_task(user_api, socket_federation.collaboration_id, list(socket_federation.organization_ids))
        assert await next_event(events) == NewTask(task_id=task_id, parent_id=None)
        runs = admin.runs_of_task(task_id)

        user_api.kill_task(task_id)

        event = await next_event(events)
    assert isinstance(event, KillRequested)
    assert event.order.collaboration_id == socket_federation.collaboration_id
    assert event.order.node_id is None
    assert sorted(event.order.targets, key=lambda target: target.run_id) == sorted(
        (KillTarget(run_id=run["id"], task_id=task_id, organization_id=run["organization"]["id"]) for run in runs),
        key=lambda target: target.run_id,
    )
    assert len(event.order.targets) == len(socket_federation.organization_ids)


@pytest.mark.server
async def test_an_expired_token_gets_token_expired_and_a_fresh_one_recovers(
    real_server: RealServer, socket_federation: Federation, open_streams
) -> None:
    node = socket_federation.nodes[0]
    valid = node_token(real_server, node)
    tokens = iter([expired_copy(valid), valid])
    stream = open_streams(real_server.root, lambda: next(tokens))
    async with contextlib.aclosing(stream.events()) as events:
        assert await next_event(events) == Connected(reconnect=False)
        assert await next_event(events) == TokenExpired()

        # What the node does on expired_token: refresh, then reconnect with the new token.
        await stream.reconnect()

        assert isinstance(await next_event(events), Disconnected)
        assert await next_event(events) == Connected(reconnect=True)
        assert await next_event(events) == SyncRequested()


async def node_status(admin: AdminApi, node_id: int, expected: str) -> str:
    """Polls, because the server's status change is no event we can await."""
    deadline = time.monotonic() + TIMEOUT
    status = admin.get(f"/node/{node_id}")["status"]
    while status != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        status = admin.get(f"/node/{node_id}")["status"]
    return status


@pytest.mark.server
async def test_the_server_shows_the_node_online_while_connected_and_offline_after_close(
    real_server: RealServer, socket_federation: Federation, admin: AdminApi, open_streams
) -> None:
    node = socket_federation.nodes[1]
    stream = open_streams(real_server.root, lambda: node_token(real_server, node))
    async with contextlib.aclosing(stream.events()) as events:
        await connected_and_synced(events)
        assert await node_status(admin, node.node_id, "online") == "online"

        for _ in range(3):
            await stream.emit("ping")
        assert await node_status(admin, node.node_id, "online") == "online"

        await stream.close()
    assert await node_status(admin, node.node_id, "offline") == "offline"


# === a scripted Engine.IO peer: heartbeat, backoff and protocol corners ===============
Script = Callable[[ServerConnection, int], Awaitable[None]]


async def quiet(ws: ServerConnection, connection: int) -> None:
    """Says nothing after the namespace connect."""


class ScriptedEngineIO:
    """Just enough of an Engine.IO v4 / Socket.IO v5 server on loopback to script one test."""

    def __init__(
        self,
        script: Script = quiet,
        *,
        ping_interval_ms: int = 25_000,
        ping_timeout_ms: int = 20_000,
        refuse_handshakes: int = 0,
        refuse_namespace: int = 0,
        hold_first_namespace: asyncio.Event | None = None,
    ) -> None:
        self.script = script
        self.ping_interval_ms = ping_interval_ms
        self.ping_timeout_ms = ping_timeout_ms
        self.refuse_handshakes = refuse_handshakes
        self.refuse_namespace = refuse_namespace
        self.hold_first_namespace = hold_first_namespace
        self.authorizations: list[str | None] = []
        self.handshake_times: list[float] = []
        # What the client sent after its namespace connect, as (connection number, frame).
        self.received: asyncio.Queue[tuple[int, str | bytes]] = asyncio.Queue()
        self.root = ""
        self._connections = itertools.count()

    async def __aenter__(self) -> ScriptedEngineIO:
        self._server = serve(self._handle, "127.0.0.1", 0, process_request=self._check_request)
        await self._server.__aenter__()
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.root = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.__aexit__(*exc)

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.authorizations.append(request.headers.get("Authorization"))
        self.handshake_times.append(time.monotonic())
        assert request.path == "/socket.io/?EIO=4&transport=websocket"
        if self.refuse_handshakes:
            self.refuse_handshakes -= 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        number = next(self._connections)
        opening = {"sid": f"s{number}", "upgrades": [], "pingInterval": self.ping_interval_ms, "pingTimeout": self.ping_timeout_ms}
        await ws.send("0" + json.dumps(opening))
        if await ws.recv() != "40/tasks,":
            return
        if self.refuse_namespace:
            self.refuse_namespace -= 1
            await ws.send('44/tasks,{"message":"not now"}')
            await ws.wait_closed()
            return
        if number == 0 and self.hold_first_namespace is not None:
            await self.hold_first_namespace.wait()
        await ws.send('40/tasks,{"sid":"n%d"}' % number)
        reader = asyncio.create_task(self._read(ws, number))
        await self.script(ws, number)
        await reader

    async def _read(self, ws: ServerConnection, number: int) -> None:
        with contextlib.suppress(Exception):
            async for frame in ws:
                self.received.put_nowait((number, frame))

    async def next_received(self, timeout: float = TIMEOUT) -> tuple[int, str | bytes]:
        async with asyncio.timeout(timeout):
            return await self.received.get()


def numbered_tokens() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"token-{next(counter)}"


async def test_engineio_pings_are_answered_with_pongs(open_streams) -> None:
    async def ping_three_times(ws: ServerConnection, connection: int) -> None:
        for _ in range(3):
            await ws.send("2")
            await asyncio.sleep(0.05)

    async with ScriptedEngineIO(ping_three_times, ping_interval_ms=50, ping_timeout_ms=2000) as server:
        stream = open_streams(server.root, numbered_tokens())
        async with contextlib.aclosing(stream.events()) as events:
            assert await next_event(events) == Connected(reconnect=False)

            assert [await server.next_received() for _ in range(3)] == [(0, "3")] * 3
    assert server.authorizations == ["Bearer token-1"]


async def test_each_ping_gives_the_server_another_ping_interval_plus_timeout(open_streams) -> None:
    async def ping_for_a_while_then_sync(ws: ServerConnection, connection: int) -> None:
        # Ten pings 0.1 s apart span 1 s, 2.5 times the 0.4 s a silent server gets.
        for _ in range(10):
            await asyncio.sleep(0.1)
            await ws.send("2")
        await ws.send('42/tasks,["sync"]')

    async with ScriptedEngineIO(ping_for_a_while_then_sync, ping_interval_ms=200, ping_timeout_ms=200) as server:
        stream = open_streams(server.root, numbered_tokens())
        async with contextlib.aclosing(stream.events()) as events:
            assert await next_event(events) == Connected(reconnect=False)

            assert await next_event(events) == SyncRequested()
    assert [server.received.get_nowait() for _ in range(10)] == [(0, "3")] * 10


async def test_a_server_that_stops_pinging_is_dropped_and_the_stream_reconnects_with_a_fresh_token(
    open_streams,
) -> None:
    async with ScriptedEngineIO(quiet, ping_interval_ms=100, ping_timeout_ms=100) as server:
        stream = open_streams(server.root, numbered_tokens())
        async with contextlib.aclosing(stream.events()) as events:
            assert await next_event(events) == Connected(reconnect=False)

            dropped = await next_event(events, timeout=5)

            assert isinstance(dropped, Disconnected)
            assert "no ping" in dropped.reason
            assert await next_event(events) == Connected(reconnect=True)
    assert server.authorizations[:2] == ["Bearer token-1", "Bearer token-2"]


async def test_failed_handshakes_are_retried_with_growing_delays(open_streams) -> None:
    async with ScriptedEngineIO(refuse_handshakes=3) as server:
        stream = open_streams(server.root, numbered_tokens(), backoff_initial=0.1, backoff_max=10, backoff_jitter=0)
        async with contextlib.aclosing(stream.events()) as events:
            # Refused attempts are no (dis)connection the app needs to hear about.
            assert await next_event(events) == Connected(reconnect=False)
            await stream.emit("ping")
    gaps = [later - earlier for earlier, later in itertools.pairwise(server.handshake_times)]
    assert len(gaps) == 3
    assert gaps[0] >= 0.1
    assert gaps[1] >= 0.2
    assert gaps[2] >= 0.4
    assert server.authorizations == [f"Bearer token-{n}" for n in range(1, 5)]


async def test_reconnect_while_down_skips_the_backoff(open_streams) -> None:
    async with ScriptedEngineIO(refuse_handshakes=1) as server:
        stream = open_streams(server.root, numbered_tokens(), backoff_initial=60, backoff_jitter=0)
        async with contextlib.aclosing(stream.events()) as events:
            first = asyncio.create_task(next_event(events, timeout=5))
            async with asyncio.timeout(TIMEOUT):
                # Polled: the refused handshake is invisible to the consumer by design.
                while not server.authorizations:
                    await asyncio.sleep(0.01)

            await stream.reconnect()

            assert await first == Connected(reconnect=False)
    assert server.authorizations == ["Bearer token-1", "Bearer token-2"]


async def test_a_reconnect_asked_during_the_handshake_is_not_lost(open_streams) -> None:
    release = asyncio.Event()
    async with ScriptedEngineIO(hold_first_namespace=release) as server:
        stream = open_streams(server.root, numbered_tokens())
        async with contextlib.aclosing(stream.events()) as events:
            first = asyncio.create_task(next_event(events))
            async with asyncio.timeout(TIMEOUT):
                # Polled: the handshake in progress is invisible to the consumer by design.
                while not server.authorizations:
                    await asyncio.sleep(0.01)

            await stream.reconnect()
            release.set()

            assert await first == Connected(reconnect=False)
    assert server.authorizations == ["Bearer token-1", "Bearer token-2"]


async def test_a_refused_namespace_connect_is_retried(open_streams) -> None:
    async with ScriptedEngineIO(refuse_namespace=1) as server:
        stream = open_streams(server.root, numbered_tokens())
        async with contextlib.aclosing(stream.events()) as events:
            assert await next_event(events) == Connected(reconnect=False)
    assert server.authorizations == ["Bearer token-1", "Bearer token-2"]


@pytest.mark.parametrize(
    ("goodbye", "reason"),
    [("41/tasks,", "disconnected namespace /tasks"), ("1", "closed the Engine.IO session")],
)
async def test_a_server_goodbye_is_a_disconnect_followed_by_a_reconnect(goodbye: str, reason: str, open_streams) -> None:
    async def say_goodbye_once(ws: ServerConnection, connection: int) -> None:
        if connection == 0:
            await ws.send(goodbye)

    async with ScriptedEngineIO(say_goodbye_once) as server:
        stream = open_streams(server.root, numbered_tokens())
        async with contextlib.aclosing(stream.events()) as events:
            assert await next_event(events) == Connected(reconnect=False)
            dropped = await next_event(events)
            assert isinstance(dropped, Disconnected)
            assert reason in dropped.reason
            assert await next_event(events) == Connected(reconnect=True)


async def test_bad_packets_are_skipped_and_the_stream_carries_on(open_streams) -> None:
    async def send_garbage_then_sync(ws: ServerConnection, connection: int) -> None:
        for frame in ["42/tasks,[not json", '42/tasks,["new_task","seven"]', "9", b"\x04binary", '42["sync"]']:
            await ws.send(frame)
        await ws.send('42/tasks,["new_task",{"id":7,"parent_id":null}]')

    async with ScriptedEngineIO(send_garbage_then_sync) as server:
        stream = open_streams(server.root, numbered_tokens())
        async with contextlib.aclosing(stream.events()) as events:
            assert await next_event(events) == Connected(reconnect=False)
            # The default-namespace "sync" was for another namespace; only the good event arrives.
            assert await next_event(events) == NewTask(task_id=7, parent_id=None)
            await stream.emit("ping")
            assert await server.next_received() == (0, '42/tasks,["ping"]')


async def test_an_event_that_asks_for_an_ack_is_acked(open_streams) -> None:
    async def sync_with_ack(ws: ServerConnection, connection: int) -> None:
        await ws.send('42/tasks,17["sync"]')

    async with ScriptedEngineIO(sync_with_ack) as server:
        stream = open_streams(server.root, numbered_tokens())
        async with contextlib.aclosing(stream.events()) as events:
            assert await next_event(events) == Connected(reconnect=False)
            assert await next_event(events) == SyncRequested()
            assert await server.next_received() == (0, "43/tasks,17[]")


async def test_emit_sends_one_event_frame_on_the_namespace(open_streams) -> None:
    async with ScriptedEngineIO() as server:
        stream = open_streams(server.root, numbered_tokens())
        async with contextlib.aclosing(stream.events()) as events:
            assert await next_event(events) == Connected(reconnect=False)

            await stream.emit("algorithm_status_change", {"run_id": 3, "status": "active"})

            assert await server.next_received() == (0, '42/tasks,["algorithm_status_change",{"run_id":3,"status":"active"}]')


async def test_emit_handled_waits_for_the_servers_ack(open_streams) -> None:
    async def ack_what_comes(ws: ServerConnection, connection: int) -> None:
        _, frame = await server.next_received()
        seen.append(frame)
        await ws.send("43/tasks,1[]")

    seen: list[str | bytes] = []
    async with ScriptedEngineIO(ack_what_comes) as server:
        stream = open_streams(server.root, numbered_tokens())
        async with contextlib.aclosing(stream.events()) as events:
            assert await next_event(events) == Connected(reconnect=False)

            await asyncio.wait_for(stream.emit("algorithm_log", {"log": "x"}, handled=True), TIMEOUT)

            assert seen == ['42/tasks,1["algorithm_log",{"log":"x"}]']


async def test_emit_handled_raises_not_connected_when_the_connection_ends_before_the_ack(open_streams) -> None:
    async def close_instead_of_ack(ws: ServerConnection, connection: int) -> None:
        if connection == 0:
            await server.next_received()
            await ws.close()

    async with ScriptedEngineIO(close_instead_of_ack) as server:
        stream = open_streams(server.root, numbered_tokens())
        async with contextlib.aclosing(stream.events()) as events:
            assert await next_event(events) == Connected(reconnect=False)

            with pytest.raises(NotConnected, match="did not acknowledge"):
                await asyncio.wait_for(stream.emit("algorithm_log", {"log": "x"}, handled=True), TIMEOUT)


async def test_a_flooding_server_is_read_no_faster_than_the_node_takes_events_and_nothing_is_lost(open_streams) -> None:
    flood = 3 * 1024

    async def send_a_flood(ws: ServerConnection, connection: int) -> None:
        for number in range(flood):
            await ws.send(f'42/tasks,["new_task",{{"id":{number + 1},"parent_id":null}}]')

    async with ScriptedEngineIO(send_a_flood) as server:
        stream = open_streams(server.root, numbered_tokens())
        async with contextlib.aclosing(stream.events()) as events:
            assert await next_event(events) == Connected(reconnect=False)
            queued = stream._queue
            assert queued is not None and queued.maxsize == 1024
            async with asyncio.timeout(TIMEOUT):
                while not queued.full():  # the reader stops here until the node takes events
                    await asyncio.sleep(0.01)
            received = [await next_event(events) for _ in range(flood)]
            assert queued.qsize() <= queued.maxsize
    assert [event.task_id for event in received] == list(range(1, flood + 1))
