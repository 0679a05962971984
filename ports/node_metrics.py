"""What the node counts about itself, for its local ``/metrics``."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from v6node.domain.run_events import RunEvent


@runtime_checkable
class NodeMetrics(Protocol):
    """Recording never raises and never blocks (it is called on the node's hot paths)."""

    def observe(self, event: RunEvent) -> None:
        """A run was received, started or finished (with its status)."""

    def reconnected(self) -> None:
        """The websocket connected again after a drop."""

    def server_call(self, seconds: float, failed: bool) -> None:
        """One REST call to the server took ``seconds``; ``failed`` when it did not get an answer."""

    def set_gauges(self, queue_depth: int, journal_size: int) -> None:
        """Runs held by this process, and entries in the journal."""

    def exposition(self) -> tuple[bytes, str]:
        """Everything counted, as a scrape answer: the body and its content type."""
