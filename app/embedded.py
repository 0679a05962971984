"""A node inside another asyncio program: built through the container, stopped when the program says."""
from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from v6node.app.config import parse_config
from v6node.app.container import NodeContainer, replace_adapters
from v6node.app.node import Node
from v6node.app.run_events import RunEventStream
from v6node.domain.config import NodeConfig


def config_from_dict(
    settings: Mapping[str, Any], *, name: str, data_dir: str | Path, source: str = "<dict>"
) -> NodeConfig:
    """A node config from the same keys as the vantage6 node YAML, checked as a file is
    (``ConfigError`` names the key); ``data_dir`` unless ``directories.data`` is given."""
    base = Path(data_dir)
    return parse_config(dict(settings), file=source, name=name, default_data_dir=str(base), base_dir=base)


class EmbeddedNode:
    """A vantage6 node run by your program.

    ``async with EmbeddedNode(config) as node:`` starts it (log in, network, proxy,
    websocket) and returns once it is online; leaving the block stops it and removes what
    it made. ``await node.serve()`` instead runs it until cancelled. ``node.events()``
    gives the run lifecycle events. Any adapter can be replaced by passing it by the
    port's name in the container (``runtime=``, ``server=``, ``events=``, ``workspace=``,
    ``journal=``, ``clock=``, ``proxy=``, ``proxy_transport=`` (an httpx transport for the
    proxy's calls to the server), ``catalog=``, ``cryptor_factory=``): the node is wired by
    the same container as ``v6node start``.
    """

    def __init__(self, config: NodeConfig, **adapters: object) -> None:
        self.config = config
        self.container = NodeContainer(config=config)
        replace_adapters(self.container, **adapters)
        self._node: Node | None = None
        self._task: asyncio.Task[None] | None = None
        self._resources = False

    @property
    def node(self) -> Node:
        if self._node is None:
            raise RuntimeError("the node is not started: use `async with` or `await serve()`")
        return self._node

    def events(self, limit: int = 1000) -> RunEventStream:
        """Run lifecycle events from now on (received, started, finished with the status);
        the stream ends when the node stops. Subscribe before starting to miss none."""
        stream: RunEventStream = self.container.run_events().subscribe(limit)
        return stream

    async def serve(self) -> None:
        """Run until cancelled; always cleans up."""
        node = await self._build()
        try:
            await node.run_forever()
        finally:
            await self._release()

    async def __aenter__(self) -> EmbeddedNode:
        node = await self._build()
        self._task = asyncio.create_task(node.run_forever(), name="v6node")
        online = asyncio.create_task(node.ready.wait())
        done, _ = await asyncio.wait({self._task, online}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            online.cancel()
            await self._release()
            self._task.result()  # the start-up error
        return self

    async def wait(self) -> None:
        """Until the node started by ``async with`` stops of itself; raises the error that stopped it."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop the node and remove what it made (idempotent)."""
        if self._node is not None:
            await self._node.stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._release()

    async def _build(self) -> Node:
        if self._node is None:
            initialized = self.container.adapters.init_resources()
            if inspect.isawaitable(initialized):
                await initialized
            self._resources = True
            made = self.container.node()
            self._node = await made if inspect.isawaitable(made) else made
        return self._node

    async def _release(self) -> None:
        if self._resources:
            self._resources = False
            released = self.container.adapters.shutdown_resources()
            if inspect.isawaitable(released):
                await released
