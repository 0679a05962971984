"""Use case: everything algorithms may reach besides the node's proxy, made at start."""
from __future__ import annotations

from v6node.app.checklist import step_done
from v6node.app.link_docker_services import LinkDockerServices
from v6node.app.set_up_squid_proxy import SetUpSquidProxy
from v6node.app.set_up_ssh_tunnels import SetUpSshTunnels
from v6node.domain.config import NodeConfig
from v6node.domain.containers import network_name
from v6node.domain.egress import egress_environment
from v6node.ports.service_firewall import ServiceFirewall


class SetUpEgress:
    """Open the firewall exception, the SSH tunnels, Squid and the linked containers; returns
    the variables every algorithm gets for them.

    Business rules:
    - algorithms may reach the services on their network (and nothing else there) only
      when the config has any; otherwise an exception an earlier run left is removed;
    - tunnels first, then Squid, then the linked containers (the reference's order);
    - when Squid runs, algorithms get ``HTTP_PROXY``/``HTTPS_PROXY`` (both cases) =
      ``http://squid:3128`` and ``NO_PROXY``/``no_proxy`` listing the node's proxy and every
      tunnel and linked container, which algorithms reach directly.
    """

    def __init__(
        self,
        config: NodeConfig,
        firewall: ServiceFirewall,
        set_up_ssh_tunnels: SetUpSshTunnels,
        set_up_squid_proxy: SetUpSquidProxy,
        link_docker_services: LinkDockerServices,
    ) -> None:
        self.config = config
        self.firewall = firewall
        self.set_up_ssh_tunnels = set_up_ssh_tunnels
        self.set_up_squid_proxy = set_up_squid_proxy
        self.link_docker_services = link_docker_services

    async def __call__(self, proxy_host: str) -> dict[str, str]:
        egress = self.config.egress
        if not egress.has_services:
            await self.firewall.close()
            return {}
        await self.firewall.open(network_name(self.config.name))
        tunnels = await self.set_up_ssh_tunnels()
        squid = await self.set_up_squid_proxy()
        linked = await self.link_docker_services()
        parts = [f"{len(tunnels)} of {len(egress.tunnels)} ssh tunnel(s)"] if egress.tunnels else []
        parts += ["squid at squid:3128"] if squid is not None else []
        parts += [f"{len(linked)} linked container(s)"] if linked else []
        step_done("egress", ", ".join(parts))
        return egress_environment(squid is not None, proxy_host, egress.aliases)
