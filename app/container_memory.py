"""The in-memory adapters under the production adapters' names (``MemoryAdapters``), and the
in-memory server that ``run-local``'s nodes share; apart from ``container`` so that a node
started for real never imports them."""
from __future__ import annotations

from dependency_injector import containers, providers

from v6node.adapters.memory.audit_log import MemoryAuditLog
from v6node.adapters.memory.container_runtime import MemoryContainerRuntime
from v6node.adapters.memory.cryptors import memory_cryptor_factory
from v6node.adapters.memory.database_catalog import MemoryDatabaseCatalog
from v6node.adapters.memory.event_stream import MemoryEventStream
from v6node.adapters.memory.federation import MemoryFederation
from v6node.adapters.memory.host_metrics import MemoryHostMetrics
from v6node.adapters.memory.monitoring import MemoryMonitoringServer, MemoryNodeMetrics
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
from v6node.domain.config import NodeConfig
from v6node.ports.local_federation import LocalFederation


class MemoryAdapters(containers.DeclarativeContainer):
    """The in-memory adapters under the same names: the test harness that ships with v6node."""

    config = providers.Dependency(instance_of=NodeConfig)
    own_container: providers.Object[str | None] = providers.Object(None)  # no engine, no host paths
    clock = providers.Singleton(ManualClock)
    server = providers.Singleton(MemoryServerApi, api_key=config.provided.api_key, clock=clock)
    events = providers.Singleton(MemoryEventStream, token_provider=server.provided.access_token)
    workspace = providers.Singleton(MemoryTaskWorkspace)
    runtime = providers.Singleton(MemoryContainerRuntime, workspace=workspace)
    journal = providers.Singleton(MemoryRunJournal, now=clock.provided.now)
    proxy_transport: providers.Object[object | None] = providers.Object(None)
    proxy = providers.Singleton(MemoryProxyServer)
    cryptor_factory = providers.Object(memory_cryptor_factory)
    catalog = providers.Singleton(MemoryDatabaseCatalog)
    host_metrics = providers.Singleton(MemoryHostMetrics)
    audit_log = providers.Singleton(MemoryAuditLog)
    node_metrics = providers.Singleton(MemoryNodeMetrics)
    monitoring = providers.Singleton(MemoryMonitoringServer)
    whitelist_proxy = providers.Singleton(MemoryWhitelistProxy, node_name=config.provided.name)
    tunnels = providers.Singleton(MemoryTunnelManager, node_name=config.provided.name)
    service_linker = providers.Singleton(MemoryServiceLinker)
    service_firewall = providers.Singleton(MemoryServiceFirewall)
    vpn_client = providers.Singleton(MemoryVpnClient, node_name=config.provided.name)
    vpn_server = providers.Singleton(MemoryVpnServerApi, server=server)


def local_federation(organizations: int, encrypted: bool, key_folder: str) -> LocalFederation:
    """The server that ``run-local``'s nodes share: in memory, with ``organizations`` organizations."""
    return MemoryFederation(organizations, encrypted=encrypted, key_folder=key_folder)
