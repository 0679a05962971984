"""Squid, SSH tunnels, linked containers and the firewall exception, kept in memory.

Tests make a sidecar fail (``fail``), stop one (``stop``) and read what is running.
"""
from __future__ import annotations

import asyncio
import ipaddress
import itertools

from v6node.domain.egress import (
    SIDECAR_SQUID,
    SIDECAR_SSH_TUNNEL,
    SQUID_ALIAS,
    SQUID_PORT,
    LinkedService,
    ServiceLink,
    Sidecar,
    SidecarExit,
    SshTunnelConfig,
    WhitelistConfig,
    sidecar_container_name,
)
from v6node.domain.errors import ContainerError, ContainerNotFound, SidecarFailed
from v6node.ports.service_firewall import ServiceFirewall
from v6node.ports.service_linker import ServiceLinker
from v6node.ports.tunnel_manager import TunnelManager
from v6node.ports.whitelist_proxy import WhitelistProxy

_SERVICE_RANGE = ipaddress.IPv4Network("10.99.128.0/17")
_ids = itertools.count(1)


class _MemorySidecars:
    """Sidecars by alias: each start replaces the one of that alias, as the real ones do."""

    def __init__(self, node_name: str, kind: str) -> None:
        self.node_name = node_name
        self.kind = kind
        self.running: dict[str, Sidecar] = {}
        self.starts: list[str] = []  # aliases, in the order they were started
        self.failures: dict[str, str] = {}  # alias -> reason its next starts fail with
        self._exits: dict[str, asyncio.Future[SidecarExit]] = {}
        self._addresses: dict[str, str] = {}  # a sidecar comes back at its address, as on the engine

    def fail(self, alias: str, reason: str) -> None:
        """Every start of ``alias`` fails with ``reason`` until ``heal``."""
        self.failures[alias] = reason

    def heal(self, alias: str) -> None:
        self.failures.pop(alias, None)

    def stop(self, alias: str, exit_code: int = 1, output: str = "stopped") -> None:
        """The sidecar's container stops (it crashed, or someone stopped it)."""
        sidecar = self.running.pop(alias)
        future = self._exits.pop(sidecar.container_id)
        if not future.done():
            future.set_result(SidecarExit(exit_code, output))

    def _start(self, alias: str, port: int, what: str) -> Sidecar:
        self.starts.append(alias)
        if alias in self.running:
            self.stop(alias, 137, "replaced")
        if alias in self.failures:
            raise SidecarFailed(what, self.failures[alias])
        sidecar = Sidecar(
            kind=self.kind,
            name=sidecar_container_name(self.node_name, self.kind, None if self.kind == SIDECAR_SQUID else alias),
            container_id=f"sidecar-{next(_ids)}",
            alias=alias,
            address=self._addresses.setdefault(alias, str(_SERVICE_RANGE.broadcast_address - 1 - len(self._addresses))),
            port=port,
        )
        self.running[alias] = sidecar
        self._exits[sidecar.container_id] = asyncio.get_running_loop().create_future()
        return sidecar

    async def wait(self, sidecar: Sidecar) -> SidecarExit:
        future = self._exits.get(sidecar.container_id)
        if future is None:
            return SidecarExit(-1, "its container is gone")
        return await asyncio.shield(future)

    def remove_all(self) -> None:
        for alias in list(self.running):
            self.stop(alias, 137, "removed")


class MemoryWhitelistProxy(_MemorySidecars, WhitelistProxy):
    def __init__(self, node_name: str = "memnode") -> None:
        super().__init__(node_name, SIDECAR_SQUID)
        self.whitelist: WhitelistConfig | None = None

    async def start(self, whitelist: WhitelistConfig, network: str) -> Sidecar:
        self.whitelist = whitelist
        return self._start(SQUID_ALIAS, SQUID_PORT, "the whitelist proxy (squid)")


class MemoryTunnelManager(_MemorySidecars, TunnelManager):
    def __init__(self, node_name: str = "memnode") -> None:
        super().__init__(node_name, SIDECAR_SSH_TUNNEL)
        self.tunnels: dict[str, SshTunnelConfig] = {}

    async def start(self, tunnel: SshTunnelConfig, network: str) -> Sidecar:
        self.tunnels[tunnel.hostname] = tunnel
        return self._start(tunnel.hostname, tunnel.bind_port, f"ssh tunnel '{tunnel.hostname}'")


class MemoryServiceLinker(ServiceLinker):
    """The operator's containers are ``containers`` (name -> running); links are by container."""

    def __init__(self, containers: dict[str, bool] | None = None) -> None:
        self.containers = dict(containers or {})
        self.links: dict[str, tuple[str, ...]] = {}
        self.unlinked: list[str] = []

    async def link(self, service: ServiceLink, network: str) -> LinkedService:
        if service.container not in self.containers:
            raise ContainerNotFound(f"there is no container named {service.container!r}")
        self.links[service.container] = service.aliases
        address = str(_SERVICE_RANGE.network_address + 1 + list(self.links).index(service.container))
        return LinkedService(service.container, service.aliases, address, self.containers[service.container])

    async def unlink(self, service: ServiceLink, network: str) -> None:
        if self.links.pop(service.container, None) is not None:
            self.unlinked.append(service.container)


class MemoryServiceFirewall(ServiceFirewall):
    """``opened_for``: the network algorithms may reach services on (None: no exception)."""

    def __init__(self) -> None:
        self.opened_for: str | None = None
        self.calls: list[str] = []
        self.fail_close: str | None = None

    async def open(self, network: str) -> None:
        self.calls.append(f"open {network}")
        self.opened_for = network

    async def close(self) -> None:
        self.calls.append("close")
        if self.fail_close is not None:
            raise ContainerError(self.fail_close)
        self.opened_for = None
