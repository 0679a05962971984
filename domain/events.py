"""Domain events that arrive from the server's websocket (or from its connection state)."""
from __future__ import annotations

from attrs import frozen

from v6node.domain.kill import KillOrder


@frozen
class Connected:
    """The websocket is (again) connected; ``reconnect`` is false only the first time."""

    reconnect: bool


@frozen
class Disconnected:
    reason: str


@frozen
class SyncRequested:
    """The server asks the node to synchronise its run queue (``sync``)."""


@frozen
class NewTask:
    """A task was created in our collaboration; we may or may not have a run in it."""

    task_id: int
    parent_id: int | None = None


@frozen
class KillRequested:
    order: KillOrder


@frozen
class TokenExpired:
    """The server says our access token has expired (``expired_token``)."""


@frozen
class TokenInvalid:
    """The server cannot verify our access token (``invalid_token``)."""


@frozen
class ServerMessage:
    text: str


@frozen
class PeerStatusChanged:
    """Another node (or we) reported a run status (``algorithm_status_change``)."""

    run_id: int | None
    task_id: int | None
    status: str
    organization_id: int | None = None


NodeEvent = (
    Connected
    | Disconnected
    | SyncRequested
    | NewTask
    | KillRequested
    | TokenExpired
    | TokenInvalid
    | ServerMessage
    | PeerStatusChanged
)
