"""The server's Socket.IO namespace over one plain websocket (``websockets``), as an EventStream."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from v6node.adapters.socketio import codec
from v6node.adapters.socketio.codec import CodecError, EioType, OpenInfo, SioType
from v6node.domain.backoff import Backoff
from v6node.domain.errors import EventStreamError, NotConnected
from v6node.domain.events import Connected, Disconnected, NodeEvent
from v6node.ports.event_stream import EventStream

log = logging.getLogger("v6node.socketio")

_CLOSED = object()
# Events read from the server and not yet taken by the node.
_QUEUED_EVENTS = 1024
_RECONNECT_REASON = "reconnect requested"


class _NamespaceRefused(Exception):
    """The server answered the namespace CONNECT with CONNECT_ERROR."""


class WebsocketsEventStream(EventStream):
    """Engine.IO v4 / Socket.IO v5, websocket transport only, on one namespace (``/tasks``).

    ``events()`` is an async generator and owns the connection: iterating it connects
    (in a background task, so Engine.IO pings are answered while the consumer is busy),
    and leaving it — ``break``, cancellation, or a timeout around ``__anext__`` —
    disconnects; calling ``events()`` again connects again. Only one consumer at a time.
    """

    def __init__(
        self,
        server_root: str,
        token_provider: Callable[[], str],
        *,
        namespace: str = "/tasks",
        socketio_path: str = "/socket.io/",
        connect_timeout: float = 30.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        backoff_factor: float = 2.0,
        backoff_jitter: float = 0.5,
        close_timeout: float = 0.5,
        max_message_size: int | None = 16 * 2**20,
    ) -> None:
        if not namespace.startswith("/"):
            raise ValueError(f"a Socket.IO namespace starts with '/', got {namespace!r}")
        if not 0 <= backoff_jitter <= 1:
            raise ValueError(f"backoff_jitter must be within [0, 1], got {backoff_jitter}")
        self._reconnects = Backoff(
            first=backoff_initial, maximum=backoff_max, factor=backoff_factor, jitter=backoff_jitter
        )
        self.url = codec.handshake_url(server_root, socketio_path)
        self.namespace = namespace
        self._token_provider = token_provider
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self._max_message_size = max_message_size

        self._closed = False
        self._ever_connected = False
        self._queue: asyncio.Queue[Any] | None = None
        self._runner: asyncio.Task[None] | None = None
        # Set only while the namespace is connected: emit() relies on that.
        self._ws: ClientConnection | None = None
        self._reconnect_requested = False
        # Counts reconnect() calls, so one made during a handshake is not lost.
        self._reconnect_asks = 0
        # Cuts a backoff pause short (reconnect() while down, or close()).
        self._wake = asyncio.Event()
        # emit(handled=True) waiting for the server's acknowledgement, by ack id.
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._last_ack_id = 0

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def events(self) -> AsyncIterator[NodeEvent]:
        if self._closed:
            return
        if self._runner is not None:
            raise RuntimeError("events() is already being iterated; only one consumer is supported")
        # Bounded: a server that floods events is read no faster than the node handles them.
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=_QUEUED_EVENTS)
        self._queue = queue
        self._runner = asyncio.create_task(self._run(queue), name=f"v6node.socketio {self.url}")
        try:
            while True:
                item = await queue.get()
                if item is _CLOSED or self._closed:
                    return
                if isinstance(item, BaseException):
                    raise EventStreamError(f"the event stream stopped unexpectedly: {item!r}") from item
                yield item
        finally:
            await self._stop_runner()

    async def emit(self, event: str, data: Any = None, *, handled: bool = False) -> None:
        ws = self._ws
        if ws is None:
            raise NotConnected(f"cannot emit {event!r}: not connected to {self.url}")
        ack_id = None
        if handled:
            self._last_ack_id += 1
            ack_id = self._last_ack_id
            self._acks[ack_id] = asyncio.get_running_loop().create_future()
        try:
            await ws.send(codec.event_frame(self.namespace, event, data, ack_id))
            log.debug("emitted %s on %s", event, self.namespace)
            if ack_id is not None:
                await self._acks[ack_id]
        except ConnectionClosed as exc:
            raise NotConnected(f"cannot emit {event!r}: the connection closed ({exc})") from exc
        finally:
            if ack_id is not None:
                self._acks.pop(ack_id, None)

    async def reconnect(self) -> None:
        self._reconnect_asks += 1
        ws = self._ws
        if ws is None:
            # Down or connecting: skip the backoff so the next attempt (fresh token) starts now.
            self._wake.set()
            return
        log.info("dropping the connection to reconnect with a fresh token")
        self._reconnect_requested = True
        await ws.close()

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._queue is not None:
            with contextlib.suppress(asyncio.QueueFull):  # a full queue: the consumer sees _closed
                self._queue.put_nowait(_CLOSED)
        await self._stop_runner()

    # --- the connection loop (background task) -------------------------------------
    async def _stop_runner(self) -> None:
        runner = self._runner
        if runner is None:
            return
        runner.cancel()
        # wait() neither raises the runner's CancelledError nor swallows one aimed at us.
        await asyncio.wait([runner])
        if self._runner is runner:
            self._runner = None

    async def _run(self, queue: asyncio.Queue[Any]) -> None:
        try:
            await self._connection_loop(queue)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: tell the consumer rather than hang it forever
            log.exception("the websocket loop failed")
            await queue.put(exc)

    async def _connection_loop(self, queue: asyncio.Queue[Any]) -> None:
        failures = 0
        while not self._closed:
            # Any reconnect() asked for so far is honoured by this attempt's fresh token.
            asks = self._reconnect_asks
            self._wake.clear()
            try:
                ws, info, opened_at = await self._open()
            except Exception as exc:
                delay = self._backoff(failures)
                failures += 1
                log.warning("cannot connect to %s (%s); next attempt in %.1f s", self.url, _describe(exc), delay)
                await self._pause(delay)
                continue
            if self._reconnect_asks != asks:
                # The token of this handshake may be the one the caller wants replaced.
                log.info("a reconnect was asked during the handshake; connecting again")
                await ws.close()
                continue
            failures = 0
            reconnect, self._ever_connected = self._ever_connected, True
            self._reconnect_requested = False
            self._ws = ws
            log.info("connected to %s namespace %s (engine.io sid %s)", self.url, self.namespace, info.sid)
            await queue.put(Connected(reconnect=reconnect))
            try:
                reason = await self._serve(ws, info, opened_at, queue)
            finally:
                self._ws = None
                self._fail_acks("the connection ended")
                await ws.close()
            await queue.put(Disconnected(reason))
            if reason == _RECONNECT_REASON:
                log.info("disconnected from %s: %s", self.url, reason)
            else:
                log.warning("disconnected from %s: %s", self.url, reason)
                await self._pause(self._backoff(0))

    def _fail_acks(self, why: str) -> None:
        for waiting in self._acks.values():
            if not waiting.done():
                waiting.set_exception(NotConnected(f"the server did not acknowledge: {why}"))
        self._acks.clear()

    def _backoff(self, failures: int) -> float:
        # Jitter spreads the reconnects of many nodes after a server restart.
        return self._reconnects.delay(failures)

    async def _pause(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _open(self) -> tuple[ClientConnection, OpenInfo, float]:
        """Handshake, Engine.IO open and namespace connect; the connection is ready for events."""
        token = self._token_provider()
        ws = await connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=self._connect_timeout,
            # The vantage6 server answers the close frame but never closes TCP, so a closing
            # client waits out this timeout every time: keep it short.
            close_timeout=self._close_timeout,
            max_size=self._max_message_size,
            # Engine.IO has its own heartbeat; websocket-level pings would only duplicate it.
            ping_interval=None,
        )
        try:
            async with asyncio.timeout(self._connect_timeout):
                first = codec.decode_eio(await ws.recv())
                if first.type is not EioType.OPEN:
                    raise CodecError(f"expected the Engine.IO open packet, got {first.type.name}")
                info = codec.parse_open(first.data)
                opened_at = asyncio.get_running_loop().time()
                await ws.send(codec.connect_frame(self.namespace))
                await self._await_namespace(ws)
        except BaseException:
            await ws.close()
            raise
        return ws, info, opened_at

    async def _await_namespace(self, ws: ClientConnection) -> None:
        while True:
            packet = codec.decode_eio(await ws.recv())
            if packet.type is EioType.PING:
                await ws.send(codec.encode_eio(codec.EioPacket(EioType.PONG)))
                continue
            if packet.type is EioType.CLOSE:
                raise ConnectionError("the server closed the Engine.IO session during connect")
            if packet.type is not EioType.MESSAGE:
                continue
            sio = codec.decode_sio(packet.data)
            if sio.namespace != self.namespace:
                continue
            if sio.type is SioType.CONNECT:
                return
            if sio.type is SioType.CONNECT_ERROR:
                raise _NamespaceRefused(f"the server refused namespace {self.namespace}: {sio.data!r}")

    async def _serve(self, ws: ClientConnection, info: OpenInfo, opened_at: float, queue: asyncio.Queue[Any]) -> str:
        """Reads until the connection ends; returns why it ended."""
        loop = asyncio.get_running_loop()
        deadline = opened_at + info.dead_after
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    frame = await ws.recv()
            except TimeoutError:
                return f"no ping from the server within {info.dead_after:g} s"
            except ConnectionClosed as exc:
                return _RECONNECT_REASON if self._reconnect_requested else f"connection closed ({exc})"
            try:
                packet = codec.decode_eio(frame)
                if packet.type is EioType.PING:
                    deadline = loop.time() + info.dead_after
                    await ws.send(codec.encode_eio(codec.EioPacket(EioType.PONG)))
                elif packet.type is EioType.CLOSE:
                    return "the server closed the Engine.IO session"
                elif packet.type is EioType.MESSAGE:
                    sio = codec.decode_sio(packet.data)
                    if sio.type is SioType.EVENT and sio.ack_id is not None and sio.namespace == self.namespace:
                        # The node has nothing to return; an empty ack keeps the server's callback from hanging.
                        await ws.send(codec.ack_frame(self.namespace, sio.ack_id))
                    if sio.type is SioType.ACK and sio.namespace == self.namespace and sio.ack_id is not None:
                        waiting = self._acks.get(sio.ack_id)
                        if waiting is not None and not waiting.done():
                            waiting.set_result(None)
                    if await self._on_message(sio, queue):
                        return f"the server disconnected namespace {self.namespace}"
            except CodecError as exc:
                # One bad packet is not worth a reconnect (and the next one may be fine).
                log.warning("skipping a packet from the server: %s", exc)
            except ConnectionClosed as exc:
                return _RECONNECT_REASON if self._reconnect_requested else f"connection closed ({exc})"

    async def _on_message(self, packet: codec.SioPacket, queue: asyncio.Queue[Any]) -> bool:
        """Queues the domain event of a Socket.IO packet; true when the server left our namespace."""
        if packet.namespace != self.namespace:
            log.debug("ignoring a %s packet for namespace %s", packet.type.name, packet.namespace)
            return False
        if packet.type is SioType.DISCONNECT:
            return True
        if packet.type is not SioType.EVENT:
            return False
        name, args = packet.event
        event = codec.to_domain_event(name, args)
        if event is None:
            log.debug("ignoring server event %s", name)
        else:
            log.debug("server event %s -> %r", name, event)
            await queue.put(event)
        return False


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
