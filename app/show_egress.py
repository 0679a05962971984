"""What ``check-config`` says about the whitelist, the SSH tunnels and the linked containers."""
from __future__ import annotations

from v6node.domain.config import NodeConfig
from v6node.domain.egress import SQUID_ALIAS, SQUID_PORT, whitelist_warnings


def egress_lines(config: NodeConfig) -> list[str]:
    """One line per item, by name only: never a key, a user name or a fingerprint."""
    egress = config.egress
    lines = []
    if egress.whitelist is not None:
        whitelist = egress.whitelist
        lines += [
            f"whitelist:    algorithms reach it through http://{SQUID_ALIAS}:{SQUID_PORT} (image {egress.images.squid})",
            f"  domains:    {', '.join(whitelist.domains) or '(none)'}",
            f"  ips:        {', '.join(whitelist.ips) or '(none)'}",
            f"  ports:      {', '.join(map(str, whitelist.ports)) or '(none)'}",
        ]
        lines += [f"  warning:    {warning}" for warning in whitelist_warnings(whitelist)]
    for tunnel in egress.tunnels:
        lines.append(
            f"ssh tunnel:   {tunnel.hostname}:{tunnel.bind_port} -> {tunnel.dest_ip}:{tunnel.dest_port} "
            f"via {tunnel.ssh_host}:{tunnel.ssh_port} (image {egress.images.ssh_tunnel})"
        )
    for service in egress.services:
        lines.append(f"linked:       {', '.join(service.aliases)} -> container {service.container}")
    if egress.has_services:
        lines.append(
            f"sidecars:     reach out through Docker network {egress.sidecar_network}; firewall helper image "
            f"{egress.images.network_config}"
        )
    return lines
