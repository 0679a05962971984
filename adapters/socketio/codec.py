"""Engine.IO v4 / Socket.IO v5 text packets, and server events as domain events (no I/O)."""
from __future__ import annotations

import json
from collections.abc import Sequence
from enum import IntEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from attrs import frozen

from v6node.domain.errors import EventStreamError
from v6node.domain.events import (
    KillRequested,
    NewTask,
    NodeEvent,
    PeerStatusChanged,
    ServerMessage,
    SyncRequested,
    TokenExpired,
    TokenInvalid,
)
from v6node.domain.kill import KillOrder, KillTarget

DEFAULT_NAMESPACE = "/"


class CodecError(EventStreamError):
    """A packet or event payload that does not follow the protocol (or cannot be encoded)."""

    # The same bytes will be just as wrong next time.
    retryable = False


# --- Engine.IO v4 --------------------------------------------------------------------
class EioType(IntEnum):
    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


@frozen
class EioPacket:
    type: EioType
    data: str = ""


@frozen
class OpenInfo:
    """The handshake the server sends first; intervals in seconds."""

    sid: str
    ping_interval: float
    ping_timeout: float
    max_payload: int | None = None

    @property
    def dead_after(self) -> float:
        """How long without a server ping before the connection counts as dead."""
        return self.ping_interval + self.ping_timeout


def decode_eio(frame: str | bytes) -> EioPacket:
    if isinstance(frame, bytes):
        # Over websocket, binary frames carry only Socket.IO binary attachments.
        raise CodecError("binary Engine.IO frames are not supported (binary Socket.IO events)")
    if not frame:
        raise CodecError("empty Engine.IO packet")
    head = frame[0]
    if not head.isdigit() or int(head) not in EioType._value2member_map_:
        raise CodecError(f"unknown Engine.IO packet type {head!r} in {_preview(frame)}")
    return EioPacket(EioType(int(head)), frame[1:])


def encode_eio(packet: EioPacket) -> str:
    return f"{int(packet.type)}{packet.data}"


def parse_open(data: str) -> OpenInfo:
    """The JSON body of an Engine.IO OPEN packet (``0{...}``), intervals given in ms."""
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise CodecError(f"Engine.IO open packet is not JSON: {_preview(data)}") from exc
    if not isinstance(body, dict):
        raise CodecError(f"Engine.IO open packet is not an object: {_preview(data)}")
    sid = body.get("sid")
    interval = body.get("pingInterval")
    timeout = body.get("pingTimeout")
    if not isinstance(sid, str) or not _is_number(interval) or not _is_number(timeout):
        raise CodecError(f"Engine.IO open packet lacks sid/pingInterval/pingTimeout: {_preview(data)}")
    max_payload = body.get("maxPayload")
    return OpenInfo(
        sid=sid,
        ping_interval=float(interval) / 1000,  # type: ignore[arg-type]  # a number: checked above
        ping_timeout=float(timeout) / 1000,  # type: ignore[arg-type]
        max_payload=max_payload if isinstance(max_payload, int) else None,
    )


def handshake_url(server_root: str, socketio_path: str = "/socket.io/") -> str:
    """``http(s)://host[:port][/prefix]`` -> the websocket URL of the Engine.IO handshake."""
    parts = urlsplit(server_root)
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"server root must be an http(s):// or ws(s):// URL, got {server_root!r}")
    path = parts.path.rstrip("/") + "/" + socketio_path.strip("/") + "/"
    return urlunsplit((schemes[parts.scheme], parts.netloc, path, "EIO=4&transport=websocket", ""))


# --- Socket.IO v5 --------------------------------------------------------------------
class SioType(IntEnum):
    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


@frozen
class SioPacket:
    type: SioType
    namespace: str = DEFAULT_NAMESPACE
    data: Any = None
    ack_id: int | None = None

    @property
    def event(self) -> tuple[str, list[Any]]:
        """Name and arguments of an EVENT packet."""
        if self.type is not SioType.EVENT:
            raise CodecError(f"not an event packet: {self.type.name}")
        return self.data[0], list(self.data[1:])


def decode_sio(text: str) -> SioPacket:
    """``<type>[<namespace>,][<ack id>][<json>]``, e.g. ``2/tasks,["sync"]``."""
    if not text or not text[0].isdigit() or int(text[0]) not in SioType._value2member_map_:
        raise CodecError(f"unknown Socket.IO packet type in {_preview(text)}")
    kind = SioType(int(text[0]))
    if kind in (SioType.BINARY_EVENT, SioType.BINARY_ACK):
        raise CodecError(f"binary Socket.IO packets are not supported: {_preview(text)}")
    rest = text[1:]
    namespace = DEFAULT_NAMESPACE
    if rest.startswith("/"):
        comma = rest.find(",")
        namespace, rest = (rest, "") if comma < 0 else (rest[:comma], rest[comma + 1 :])
    digits = len(rest) - len(rest.lstrip("0123456789"))
    ack_id = int(rest[:digits]) if digits else None
    payload = rest[digits:]
    data = None
    if payload:
        try:
            data = json.loads(payload)
        except ValueError as exc:
            raise CodecError(f"Socket.IO payload is not JSON: {_preview(text)}") from exc
    packet = SioPacket(kind, namespace, data, ack_id)
    _check(packet, text)
    return packet


def _check(packet: SioPacket, text: str) -> None:
    if packet.type is SioType.EVENT:
        if not isinstance(packet.data, list) or not packet.data or not isinstance(packet.data[0], str):
            raise CodecError(f"Socket.IO event must be a list starting with its name: {_preview(text)}")
    elif packet.type is SioType.ACK:
        if packet.ack_id is None or not isinstance(packet.data, list):
            raise CodecError(f"Socket.IO ack needs an id and a list of arguments: {_preview(text)}")
    elif packet.type is SioType.CONNECT:
        if packet.data is not None and not isinstance(packet.data, dict):
            raise CodecError(f"Socket.IO connect payload must be an object: {_preview(text)}")


def encode_sio(packet: SioPacket) -> str:
    if packet.type in (SioType.BINARY_EVENT, SioType.BINARY_ACK):
        raise CodecError("binary Socket.IO packets are not supported")
    out = [str(int(packet.type))]
    if packet.namespace != DEFAULT_NAMESPACE:
        out.append(f"{packet.namespace},")
    if packet.ack_id is not None:
        out.append(str(packet.ack_id))
    if packet.data is not None:
        try:
            out.append(json.dumps(packet.data, separators=(",", ":"), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise CodecError(f"cannot encode Socket.IO {packet.type.name} data as JSON: {exc}") from exc
    return "".join(out)


def message_frame(packet: SioPacket) -> str:
    """A Socket.IO packet inside an Engine.IO MESSAGE, ready for the websocket."""
    return encode_eio(EioPacket(EioType.MESSAGE, encode_sio(packet)))


def connect_frame(namespace: str) -> str:
    return message_frame(SioPacket(SioType.CONNECT, namespace))


def event_frame(namespace: str, event: str, data: Any = None, ack_id: int | None = None) -> str:
    # ``None`` means "no argument", as the reference client sends ``emit("ping")``.
    args = [event] if data is None else [event, data]
    return message_frame(SioPacket(SioType.EVENT, namespace, args, ack_id))


def ack_frame(namespace: str, ack_id: int, args: Sequence[Any] = ()) -> str:
    return message_frame(SioPacket(SioType.ACK, namespace, list(args), ack_id))


# --- server events -> domain events --------------------------------------------------
def to_domain_event(name: str, args: Sequence[Any]) -> NodeEvent | None:
    """The node's view of a server event; ``None`` for events the node does not act on."""
    mapper = _MAPPERS.get(name)
    if mapper is None:
        return None
    try:
        return mapper(args[0] if args else None)
    except CodecError as exc:
        raise CodecError(f"malformed {name!r} event: {exc}") from exc


def _sync(_: Any) -> NodeEvent:
    return SyncRequested()


def _new_task(payload: Any) -> NodeEvent:
    body = _object(payload)
    return NewTask(task_id=_int(body, "id"), parent_id=_opt_int(body, "parent_id"))


def _kill(payload: Any) -> NodeEvent:
    body = _object(payload)
    # Only the node-kill payload ({"node_id", "collaboration_id"}) kills everything.
    node_wide = "kill_list" not in body and body.get("node_id") is not None
    kill_list = body.get("kill_list")
    if kill_list is None:
        kill_list = []
    if not isinstance(kill_list, list):
        raise CodecError(f"kill_list must be a list, got {type(kill_list).__name__}")
    targets = tuple(
        KillTarget(
            run_id=_int(entry, "run_id"),
            task_id=_int(entry, "task_id"),
            organization_id=_int(entry, "organization_id"),
        )
        for entry in (_object(item, "kill_list entry") for item in kill_list)
    )
    order = KillOrder(
        collaboration_id=_opt_int(body, "collaboration_id"),
        node_id=_opt_int(body, "node_id"),
        targets=targets,
        node_wide=node_wide,
    )
    return KillRequested(order)


def _message(payload: Any) -> NodeEvent:
    if not isinstance(payload, str):
        raise CodecError(f"expected a string, got {type(payload).__name__}")
    return ServerMessage(payload)


def _status_change(payload: Any) -> NodeEvent:
    body = _object(payload)
    status = body.get("status")
    if not isinstance(status, str):
        raise CodecError("'status' must be a string")
    return PeerStatusChanged(
        run_id=_opt_int(body, "run_id"),
        task_id=_opt_int(body, "task_id"),
        status=status,
        organization_id=_opt_int(body, "organization_id"),
    )


_MAPPERS = {
    "sync": _sync,
    "new_task": _new_task,
    "kill_containers": _kill,
    "expired_token": lambda _: TokenExpired(),
    "invalid_token": lambda _: TokenInvalid(),
    "message": _message,
    "algorithm_status_change": _status_change,
}


def _object(payload: Any, what: str = "payload") -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise CodecError(f"{what}: expected an object, got {type(payload).__name__}")
    return payload


def _int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    # bool is an int subclass, but True is never an id.
    if not isinstance(value, int) or isinstance(value, bool):
        raise CodecError(f"{key!r} must be an integer, got {value!r}")
    return value


def _opt_int(body: dict[str, Any], key: str) -> int | None:
    return None if body.get(key) is None else _int(body, key)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _preview(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
