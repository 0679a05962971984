"""A Node wired entirely to in-memory adapters, through the production container: the test harness that ships with v6node."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from attrs import evolve
from dependency_injector import providers

from v6node.adapters.memory.container_runtime import MemoryContainerRuntime
from v6node.adapters.memory.cryptors import memory_cryptor_factory, test_private_key
from v6node.adapters.memory.database_catalog import MemoryDatabaseCatalog
from v6node.adapters.memory.event_stream import MemoryEventStream
from v6node.adapters.memory.journal import MemoryRunJournal
from v6node.adapters.memory.manual_clock import ManualClock
from v6node.adapters.memory.proxy import MemoryProxyServer
from v6node.adapters.memory.server_api import MemoryServerApi
from v6node.adapters.memory.sidecars import (
    MemoryServiceFirewall,
    MemoryServiceLinker,
    MemoryTunnelManager,
    MemoryWhitelistProxy,
)
from v6node.adapters.memory.vpn import MemoryVpnClient, MemoryVpnServerApi
from v6node.adapters.memory.workspace import MemoryTaskWorkspace
from v6node.app.container import NodeContainer
from v6node.app.container_memory import MemoryAdapters
from v6node.app.node import Node
from v6node.app.node_parts import NodeTimings
from v6node.domain.config import NodeConfig, PolicyConfig
from v6node.domain.status import RunStatus
from v6node.ports.cryptor import Cryptor

__all__ = ["MemoryNodeHarness", "default_config", "memory_cryptor_factory", "test_private_key"]


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
    return evolve(config, **changes)  # type: ignore[arg-type]


class MemoryNodeHarness:
    """Builds a ``Node`` with ``NodeContainer`` whose adapters are ``MemoryAdapters``, and
    exposes each adapter for assertions.

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
        adapters: MemoryAdapters | None = None,
    ) -> None:
        self.config = config or default_config()
        self.timings = timings
        self.adapters = adapters or MemoryAdapters(config=self.config)
        self.adapters.server.add_kwargs(encrypted=encrypted)
        self.adapters.cryptor_factory.override(providers.Object(cryptor_factory))
        self.container = NodeContainer(config=self.config, timings=providers.Object(timings))
        self.container.adapters.override(self.adapters)
        self.node: Node = self.container.node()
        self._task: asyncio.Task[None] | None = None

    # --- the adapters, for the test to drive and inspect -------------------------------------------
    @property
    def clock(self) -> ManualClock:
        return self.adapters.clock()

    @property
    def server(self) -> MemoryServerApi:
        return self.adapters.server()

    @property
    def events(self) -> MemoryEventStream:
        return self.adapters.events()

    @property
    def workspace(self) -> MemoryTaskWorkspace:
        return self.adapters.workspace()

    @property
    def runtime(self) -> MemoryContainerRuntime:
        return self.adapters.runtime()

    @property
    def journal(self) -> MemoryRunJournal:
        return self.adapters.journal()

    @property
    def proxy(self) -> MemoryProxyServer:
        return self.adapters.proxy()

    @property
    def catalog(self) -> MemoryDatabaseCatalog:
        return self.adapters.catalog()

    @property
    def whitelist_proxy(self) -> MemoryWhitelistProxy:
        return self.adapters.whitelist_proxy()

    @property
    def tunnels(self) -> MemoryTunnelManager:
        return self.adapters.tunnels()

    @property
    def service_linker(self) -> MemoryServiceLinker:
        return self.adapters.service_linker()

    @property
    def service_firewall(self) -> MemoryServiceFirewall:
        return self.adapters.service_firewall()

    @property
    def vpn_client(self) -> MemoryVpnClient:
        return self.adapters.vpn_client()

    @property
    def vpn_server(self) -> MemoryVpnServerApi:
        return self.adapters.vpn_server()

    # --- lifetime -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self.node.run_forever())
        connected = asyncio.create_task(self.node.ready.wait())
        done, _ = await asyncio.wait({self._task, connected}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            connected.cancel()
            self._task.result()  # raises the start-up error

    def restarted(self, config: NodeConfig | None = None, server: MemoryServerApi | None = None) -> MemoryNodeHarness:
        """A new node process on the same machine: same engine, disk, journal and clock, and the
        same server unless ``server`` is another one (a re-installed or reset server)."""
        config = config or self.config
        adapters = MemoryAdapters(config=config)
        same = {
            "clock": self.clock, "workspace": self.workspace, "runtime": self.runtime, "journal": self.journal,
            # The engine's and the host's state: linked containers and the firewall outlive a process.
            "service_linker": self.service_linker, "service_firewall": self.service_firewall,
            "vpn_client": self.vpn_client,
        }
        for name, instance in same.items():
            getattr(adapters, name).override(providers.Object(instance))
        adapters.server.override(providers.Object(server or self.server))
        return MemoryNodeHarness(
            config, timings=self.timings, cryptor_factory=self.adapters.cryptor_factory(), adapters=adapters
        )

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
