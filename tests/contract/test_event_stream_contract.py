"""One EventStream contract, run against MemoryEventStream and WebsocketsEventStream (real server)."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt

import httpx
import pytest

from tests.rig.events import TIMEOUT, next_event
from tests.rig.server import AdminApi, Federation, RealServer, create_federation
from v6node.adapters.memory.event_stream import MemoryEventStream
from v6node.adapters.socketio.websockets_event_stream import WebsocketsEventStream
from v6node.domain.errors import NotConnected
from v6node.domain.events import Connected, Disconnected, NodeEvent, SyncRequested, TokenInvalid
from v6node.ports.event_stream import EventStream


class CountingTokens:
    """A token provider that remembers how often it was asked."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return self.token


def node_token(server: RealServer, api_key: str) -> str:
    response = httpx.post(f"{server.api}/token/node", json={"api_key": api_key}, timeout=30)
    response.raise_for_status()
    return response.json()["access_token"]


# --- drivers: each plays "the server" for its stream ---------------------------------
class MemoryDriver:
    def __init__(self) -> None:
        self.tokens = CountingTokens("memory-token")
        self.fake = MemoryEventStream(token_provider=self.tokens)
        self.stream: EventStream = self.fake

    def server_greets(self) -> None:
        # The real server answers a valid node's connect with ``sync``.
        self.fake.push(SyncRequested())

    async def server_received(self, event: str, since: dt.datetime) -> bool:
        return (event, None) in self.fake.emitted


class RealServerDriver:
    def __init__(self, server: RealServer, admin: AdminApi, federation: Federation) -> None:
        self.admin = admin
        self.node = federation.nodes[0]
        self.tokens = CountingTokens(node_token(server, self.node.api_key))
        self.stream = WebsocketsEventStream(server.root, self.tokens, backoff_initial=0.05, backoff_max=0.5)

    def server_greets(self) -> None:
        """The server sends ``sync`` by itself."""

    async def server_received(self, event: str, since: dt.datetime) -> bool:
        assert event == "ping", "the server shows only pings (as last_seen)"
        # last_seen is not in the node's JSON, but the list can be filtered on it. Polled:
        # the server records the ping in its own time and tells nobody.
        stamp = since.strftime("%Y-%m-%d %H:%M:%S.%f")
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while asyncio.get_running_loop().time() < deadline:
            seen = self.admin.get("/node", collaboration_id=self.node.collaboration_id, last_seen_from=stamp)["data"]
            if any(node["id"] == self.node.node_id for node in seen):
                return True
            await asyncio.sleep(0.1)
        return False


@pytest.fixture(scope="module")
def stream_federation(admin: AdminApi) -> Federation:
    """One node serves every test here: each test closes its own connection, and creating
    nodes and users on the server costs seconds."""
    return create_federation(admin, "event-stream-contract", n_orgs=1)


@pytest.fixture(params=["memory", pytest.param("websockets", marks=pytest.mark.server)])
async def driver(request: pytest.FixtureRequest):
    if request.param == "memory":
        made = MemoryDriver()
    else:
        made = RealServerDriver(
            request.getfixturevalue("real_server"),
            request.getfixturevalue("admin"),
            request.getfixturevalue("stream_federation"),
        )
    yield made
    await made.stream.close()


# --- the contract ----------------------------------------------------------------------
async def test_the_stream_implements_the_port(driver) -> None:
    assert isinstance(driver.stream, EventStream)


async def test_the_first_event_is_connected_and_a_valid_token_gets_a_sync(driver) -> None:
    async with contextlib.aclosing(driver.stream.events()) as events:
        assert await next_event(events) == Connected(reconnect=False)
        driver.server_greets()
        assert await next_event(events) == SyncRequested()
    assert driver.tokens.calls == 1


async def test_emit_reaches_the_server_while_connected(driver) -> None:
    async with contextlib.aclosing(driver.stream.events()) as events:
        assert await next_event(events) == Connected(reconnect=False)
        before = dt.datetime.now(dt.timezone.utc)

        await driver.stream.emit("ping")

        assert await driver.server_received("ping", since=before)


async def test_emit_handled_returns_once_the_server_has_handled_the_event(driver) -> None:
    async with contextlib.aclosing(driver.stream.events()) as events:
        assert await next_event(events) == Connected(reconnect=False)
        before = dt.datetime.now(dt.timezone.utc)

        await asyncio.wait_for(driver.stream.emit("ping", handled=True), TIMEOUT)

        assert await driver.server_received("ping", since=before)


async def test_emit_while_not_connected_raises_not_connected(driver) -> None:
    with pytest.raises(NotConnected):
        await driver.stream.emit("ping")

    async with contextlib.aclosing(driver.stream.events()) as events:
        assert await next_event(events) == Connected(reconnect=False)
        await driver.stream.close()

    with pytest.raises(NotConnected):
        await driver.stream.emit("ping")


async def test_reconnect_drops_then_connects_again_with_a_fresh_token(driver) -> None:
    async with contextlib.aclosing(driver.stream.events()) as events:
        assert await next_event(events) == Connected(reconnect=False)
        driver.server_greets()
        assert await next_event(events) == SyncRequested()

        await driver.stream.reconnect()

        dropped = await next_event(events)
        assert isinstance(dropped, Disconnected)
        assert "reconnect" in dropped.reason
        assert await next_event(events) == Connected(reconnect=True)
        driver.server_greets()
        assert await next_event(events) == SyncRequested()
        await driver.stream.emit("ping")
    assert driver.tokens.calls == 2


async def test_close_ends_the_iteration_of_a_waiting_consumer(driver) -> None:
    seen: list[NodeEvent] = []
    connected = asyncio.Event()

    async def consume() -> None:
        async for event in driver.stream.events():
            seen.append(event)
            connected.set()

    consumer = asyncio.create_task(consume())
    async with asyncio.timeout(TIMEOUT):
        await connected.wait()

    await driver.stream.close()

    async with asyncio.timeout(TIMEOUT):
        await consumer
    assert seen[0] == Connected(reconnect=False)
    # A closed stream stays closed.
    assert [event async for event in driver.stream.events()] == []


async def test_cancelling_the_consumer_leaves_no_task_behind(driver) -> None:
    connected = asyncio.Event()

    async def consume() -> None:
        async for _ in driver.stream.events():
            connected.set()

    consumer = asyncio.create_task(consume())
    async with asyncio.timeout(TIMEOUT):
        await connected.wait()

    consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer

    assert asyncio.all_tasks() == {asyncio.current_task()}
    with pytest.raises(NotConnected):
        await driver.stream.emit("ping")


async def test_iterating_again_after_leaving_reconnects(driver) -> None:
    async with contextlib.aclosing(driver.stream.events()) as events:
        assert await next_event(events) == Connected(reconnect=False)

    async with contextlib.aclosing(driver.stream.events()) as events:
        assert await next_event(events) == Connected(reconnect=True)
        driver.server_greets()
        assert await next_event(events) == SyncRequested()
    assert driver.tokens.calls == 2


# --- real server only: what the memory stream cannot know ------------------------------
@pytest.fixture
async def bad_token_stream(real_server: RealServer, stream_federation: Federation):
    token = node_token(real_server, stream_federation.nodes[0].api_key)
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[::-1]}"
    stream = WebsocketsEventStream(real_server.root, lambda: forged)
    yield stream
    await stream.close()


@pytest.mark.server
async def test_a_token_with_a_bad_signature_gets_token_invalid(bad_token_stream: WebsocketsEventStream) -> None:
    async with contextlib.aclosing(bad_token_stream.events()) as events:
        assert await next_event(events) == Connected(reconnect=False)
        assert await next_event(events) == TokenInvalid()


# --- the fake's own controls (what tests of the app use to play the server) -----------
async def test_the_fake_drops_and_reconnects_like_the_real_stream() -> None:
    tokens = CountingTokens("t")
    fake = MemoryEventStream(token_provider=tokens)
    try:
        async with contextlib.aclosing(fake.events()) as events:
            assert await next_event(events) == Connected(reconnect=False)

            fake.drop("network down")

            assert await next_event(events) == Disconnected("network down")
            assert await next_event(events) == Connected(reconnect=True)
            assert tokens.calls == 2

            fake.drop("gone", reconnect=False)

            assert await next_event(events) == Disconnected("gone")
            assert not fake.connected
            with pytest.raises(NotConnected):
                await fake.emit("ping")

            await fake.reconnect()

            assert await next_event(events) == Connected(reconnect=True)
            await fake.emit("algorithm_status_change", {"run_id": 1})
    finally:
        await fake.close()
    assert fake.emitted == [("algorithm_status_change", {"run_id": 1})]
    assert fake.reconnects == 1
    assert tokens.calls == 3


async def test_events_the_fake_got_before_iteration_come_after_connected() -> None:
    fake = MemoryEventStream()
    fake.push(SyncRequested())
    try:
        async with contextlib.aclosing(fake.events()) as events:
            assert await next_event(events) == Connected(reconnect=False)
            assert await next_event(events) == SyncRequested()
    finally:
        await fake.close()
