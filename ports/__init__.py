"""What the node needs from the world, as small async Protocols over domain types."""
from v6node.ports.clock import Clock
from v6node.ports.container_runtime import ContainerRuntime
from v6node.ports.cryptor import Cryptor
from v6node.ports.event_stream import EventStream
from v6node.ports.local_federation import LocalFederation
from v6node.ports.proxy_server import ProxyServer
from v6node.ports.run_journal import RunJournal
from v6node.ports.server_api import ServerApi
from v6node.ports.service_firewall import ServiceFirewall
from v6node.ports.service_linker import ServiceLinker
from v6node.ports.task_workspace import TaskWorkspace
from v6node.ports.tunnel_manager import TunnelManager
from v6node.ports.whitelist_proxy import WhitelistProxy

__all__ = [
    "Clock",
    "ContainerRuntime",
    "Cryptor",
    "EventStream",
    "LocalFederation",
    "ProxyServer",
    "RunJournal",
    "ServerApi",
    "ServiceFirewall",
    "ServiceLinker",
    "TaskWorkspace",
    "TunnelManager",
    "WhitelistProxy",
]
