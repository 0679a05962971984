"""Use case: start the whitelist proxy (Squid) when the config has a ``whitelist``."""
from __future__ import annotations

import logging

from v6node.app.sidecars import RunningSidecars, SupervisedSidecar
from v6node.domain.config import NodeConfig
from v6node.domain.containers import network_name
from v6node.domain.egress import SQUID_ALIAS, SQUID_PORT, Sidecar, WhitelistConfig, whitelist_warnings
from v6node.ports.whitelist_proxy import WhitelistProxy

log = logging.getLogger("v6node.node")


def describe(whitelist: WhitelistConfig) -> str:
    return (
        f"domains [{', '.join(whitelist.domains)}], ips [{', '.join(whitelist.ips)}], "
        f"ports [{', '.join(map(str, whitelist.ports))}]"
    )


class SetUpSquidProxy:
    """Start Squid for the whitelist, on the algorithm network as ``squid:3128``.

    Business rules:
    - nothing happens without a ``whitelist``; with one, the reference's safety warnings
      (risky entries, an empty list) are logged as WARNINGs;
    - a proxy that cannot start stops the node's start with the reason (the reference runs
      on without it, and algorithms then fail on a proxy that is not there);
    - once ready it is supervised: started again when it stops while the node runs.
    """

    def __init__(self, config: NodeConfig, proxy: WhitelistProxy, sidecars: RunningSidecars) -> None:
        self.config = config
        self.proxy = proxy
        self.sidecars = sidecars

    async def __call__(self) -> Sidecar | None:
        whitelist = self.config.egress.whitelist
        if whitelist is None:
            return None
        for warning in whitelist_warnings(whitelist):
            log.warning("whitelist: %s", warning)
        network = network_name(self.config.name)
        sidecar = await self.proxy.start(whitelist, network)
        log.info(
            "whitelist proxy ready: algorithms reach %s through http://%s:%d (%s on their network)",
            describe(whitelist), SQUID_ALIAS, SQUID_PORT, sidecar.address,
        )

        async def restart() -> Sidecar:
            return await self.proxy.start(whitelist, network)

        self.sidecars.add(SupervisedSidecar("the whitelist proxy (squid)", sidecar, self.proxy.wait, restart))
        return sidecar
