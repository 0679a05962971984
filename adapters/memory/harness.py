"""A Node wired entirely to in-memory adapters: the test harness that ships with v6node."""
from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable

import attrs
from attrs import evolve

from v6node.adapters.crypto.base64_cryptor import Base64Cryptor
from v6node.adapters.crypto.rsa_cryptor import RsaCryptor, create_private_key_pem
from v6node.adapters.memory.clock import ManualClock
from v6node.adapters.memory.database_catalog import MemoryDatabaseCatalog
from v6node.adapters.memory.container_runtime import MemoryContainerRuntime
from v6node.adapters.memory.event_stream import MemoryEventStream
from v6node.adapters.memory.journal import MemoryRunJournal
from v6node.adapters.memory.proxy import MemoryProxyServer
from v6node.adapters.memory.server_api import MemoryServerApi
from v6node.adapters.memory.workspace import MemoryTaskWorkspace
from v6node.app.node import Node, NodeContext, NodeTimings
from v6node.domain.config import NodeConfig, PolicyConfig
from v6node.domain.status import RunStatus
from v6node.ports.cryptor import Cryptor


def default_config(**changes: object) -> NodeConfig:
    config = NodeConfig(
        name="memnode",
        api_key="api-key",
        server_url="http://server.invalid",
        port=None,
        api_path="/api",
        data_dir="/memory/data",
        log_dir="/memory/log",
        policies=PolicyConfig(require_algorithm_pull=False),
        proxy_check_image=None,
    )
    return evolve(config, **changes)


@functools.cache
def test_private_key() -> bytes:
    """One RSA key per process: 2048 bits keeps tests fast (the format is what 4096 gives)."""
    return create_private_key_pem(2048)


def memory_cryptor_factory(encrypted: bool, _private_key: str) -> Cryptor:
    """Base64 for plain collaborations; RSA with the harness's test key for encrypted ones."""
    return RsaCryptor(test_private_key()) if encrypted else Base64Cryptor()


class MemoryNodeHarness:
    """Builds a ``Node`` on memory adapters and exposes each adapter for assertions.

    ``async with MemoryNodeHarness() as h:`` starts ``run_forever`` in the background and
    waits until the node is connected; leaving the block stops it.
    """

    def __init__(
        self,
        config: NodeConfig | None = None,
        *,
        encrypted: bool = False,
        timings: NodeTimings = NodeTimings(),
        cryptor_factory: Callable[[bool, str], Cryptor] = memory_cryptor_factory,
    ) -> None:
        self.config = config or default_config()
        self.clock = ManualClock()
        self.server = MemoryServerApi(api_key=self.config.api_key, encrypted=encrypted, clock=self.clock)
        self.events = MemoryEventStream(token_provider=self.server.access_token)
        self.workspace = MemoryTaskWorkspace()
        self.runtime = MemoryContainerRuntime(self.workspace)
        self.journal = MemoryRunJournal(now=self.clock.now)
        self.proxy = MemoryProxyServer()
        self.catalog = MemoryDatabaseCatalog()
        self.node = Node(
            NodeContext(
                config=self.config,
                server=self.server,
                events=self.events,
                runtime=self.runtime,
                workspace=self.workspace,
                journal=self.journal,
                clock=self.clock,
                proxy=self.proxy,
                cryptor_factory=cryptor_factory,
                catalog=self.catalog,
                timings=timings,
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.node.run_forever())
        connected = asyncio.create_task(self.node.connected.wait())
        done, _ = await asyncio.wait({self._task, connected}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            connected.cancel()
            self._task.result()  # raises the start-up error

    def restarted(self, config: NodeConfig | None = None, server: MemoryServerApi | None = None) -> MemoryNodeHarness:
        """A new node process on the same machine: same engine, disk, journal and clock, and the
        same server unless ``server`` is another one (a re-installed or reset server)."""
        twin = MemoryNodeHarness(config or self.config, timings=self.node.ctx.timings, cryptor_factory=self.node.ctx.cryptor_factory)
        twin.clock, twin.workspace, twin.runtime, twin.journal = self.clock, self.workspace, self.runtime, self.journal
        if server is None:
            twin.server = self.server
            twin.server.accepted_api_key = self.server.accepted_api_key
        else:
            twin.server = server
        twin.events = MemoryEventStream(token_provider=twin.server.access_token)
        twin.node = Node(attrs.evolve(
            self.node.ctx, events=twin.events, proxy=twin.proxy, config=twin.config, server=twin.server
        ))
        return twin

    async def crash(self) -> None:
        """End the node like SIGKILL does: no clean-up, containers keep running."""
        self.node._cleaned = True  # noqa: SLF001 - what a killed process never gets to do
        await self.stop()

    async def stop(self) -> None:
        await self.node.stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def __aenter__(self) -> MemoryNodeHarness:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Let the node work until ``condition()`` holds (real time, no clock moves).

        Everything here runs on this event loop, so yielding to it is all the node needs.
        """
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0)

    async def until_run_finished(self, task_id: int, timeout: float = 5.0) -> RunStatus:
        run = self.server.our_run(task_id)
        await self.until(lambda: run.finished_at is not None, timeout)
        return run.status
