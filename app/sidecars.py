"""The sidecars that run while the node runs, shared by the use cases that start and watch them."""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from attrs import define

from v6node.domain.egress import Sidecar, SidecarExit


@define
class SupervisedSidecar:
    """A running sidecar, how to wait for its end and how to start it again."""

    what: str  # for the log: "the whitelist proxy (squid)", "ssh tunnel 'db1'"
    sidecar: Sidecar
    wait: Callable[[Sidecar], Awaitable[SidecarExit]]
    restart: Callable[[], Awaitable[Sidecar]]


class RunningSidecars:
    """One per node: filled in at start, read by the supervision loop."""

    def __init__(self) -> None:
        self._items: dict[str, SupervisedSidecar] = {}

    def add(self, item: SupervisedSidecar) -> None:
        self._items[item.what] = item

    def items(self) -> list[SupervisedSidecar]:
        return list(self._items.values())

    def clear(self) -> None:
        self._items.clear()
