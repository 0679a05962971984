"""Use case: log in to the server with the node's API key and learn who the node is."""
from __future__ import annotations

import logging

from v6node.app.checklist import step_done
from v6node.app.retry import until_done
from v6node.app.session import NodeSession
from v6node.domain.config import NodeConfig
from v6node.domain.model import NodeIdentity
from v6node.ports.clock import Clock
from v6node.ports.server_api import ServerApi

log = logging.getLogger("v6node.node")


class Authenticate:
    """Log in and record the node's identity in the session.

    Business rules:
    - an unreachable server is retried for as long as it takes (a station's node waits
      for its server), with one WARNING per attempt saying for how long;
    - a refused API key raises ``AuthenticationFailed`` at once: retrying cannot help.
    """

    def __init__(self, config: NodeConfig, server: ServerApi, clock: Clock, session: NodeSession) -> None:
        self.config = config
        self.server = server
        self.clock = clock
        self.session = session

    async def __call__(self) -> NodeIdentity:
        identity = await until_done(self.server.authenticate, self.clock, log, f"logging in to {self.config.api_base}")
        self.session.identity = identity
        step_done(
            "login",
            f"node '{identity.node_name}' (id {identity.node_id}) of organization "
            f"'{identity.organization_name}' in collaboration {identity.collaboration_id}",
        )
        return identity
