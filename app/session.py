"""What the node learns while it starts and every use case after that needs."""
from __future__ import annotations

from attrs import define

from v6node.domain.containers import AlgorithmSettings
from v6node.domain.errors import NodeError
from v6node.domain.model import NodeIdentity
from v6node.domain.vpn import VpnConnection
from v6node.ports.cryptor import Cryptor


class NotStarted(NodeError):
    """A use case ran before the node's start-up set what it needs."""


@define
class NodeSession:
    """Filled in by the start-up use cases, read by the others (one per node process).

    ``identity``: who the node is on the server (``Authenticate``); ``cryptor``: the
    collaboration's scheme and our key (``SetUpEncryption``); ``settings``: what every
    algorithm container gets (``StartNode``); ``vpn``: the VPN client while it is connected
    (``SetUpVpnConnection``, and its supervision when it restarts the client).
    """

    identity: NodeIdentity | None = None
    cryptor: Cryptor | None = None
    settings: AlgorithmSettings | None = None
    vpn: VpnConnection | None = None

    def me(self) -> NodeIdentity:
        if self.identity is None:
            raise NotStarted("the node has not logged in yet")
        return self.identity

    def crypto(self) -> Cryptor:
        if self.cryptor is None:
            raise NotStarted("the node's encryption is not set up yet")
        return self.cryptor

    def algorithm_settings(self) -> AlgorithmSettings:
        if self.settings is None:
            raise NotStarted("the node has not started yet")
        return self.settings
