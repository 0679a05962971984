"""What algorithms may reach besides the node's proxy: the whitelist proxy (Squid), SSH tunnels
and the operator's linked containers (spec §9.1, §9.2, §10 ``docker_services``)."""
from __future__ import annotations

import ipaddress

from attrs import field, frozen, validators

from v6node.domain.proxy_alias import PROXY_ALIAS

# Where algorithms find the whitelist proxy, as in the reference.
SQUID_ALIAS = "squid"
SQUID_PORT = 3128
# The reference's infrastructure images for vantage6 4.15 (tags follow vantage6's major.minor).
REFERENCE_REGISTRY = "harbor2.vantage6.ai/infrastructure"
DEFAULT_SQUID_IMAGE = f"{REFERENCE_REGISTRY}/squid:4.15"
DEFAULT_SSH_TUNNEL_IMAGE = f"{REFERENCE_REGISTRY}/ssh-tunnel:4.15"
# The reference's image with iptables (its VPN "network configurator"), run on the host's network.
DEFAULT_NETWORK_CONFIG_IMAGE = f"{REFERENCE_REGISTRY}/vpn-configurator:4.15"
DEFAULT_SIDECAR_NETWORK = "bridge"
DEFAULT_SIDECAR_READY_TIMEOUT = 60.0

SIDECAR_SQUID = "squid"
SIDECAR_SSH_TUNNEL = "ssh-tunnel"
SIDECAR_NETWORK_CONFIG = "network-config"


@frozen
class WhitelistConfig:
    """``whitelist``: the only destinations algorithms may reach through Squid."""

    domains: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()  # addresses or networks (CIDR)
    ports: tuple[int, ...] = ()


@frozen
class SshTunnelConfig:
    """One entry of ``ssh-tunnels``: algorithms reach ``dest`` (as the SSH server sees it) at
    ``hostname:bind_port``."""

    hostname: str
    ssh_host: str
    username: str
    key_file: str  # host path of the private key; its content never enters a config value
    fingerprint: str = field(repr=False)  # the server's public host key: "<type> <base64>"
    dest_ip: str
    dest_port: int
    bind_port: int
    ssh_port: int = 22
    bind_ip: str = "0.0.0.0"


@frozen
class ServiceLink:
    """``docker_services``: an operator's container, reachable by algorithms under ``aliases``."""

    container: str
    aliases: tuple[str, ...] = field(validator=validators.min_len(1))


@frozen
class SidecarImages:
    squid: str = DEFAULT_SQUID_IMAGE
    ssh_tunnel: str = DEFAULT_SSH_TUNNEL_IMAGE
    network_config: str = DEFAULT_NETWORK_CONFIG_IMAGE


@frozen
class EgressConfig:
    whitelist: WhitelistConfig | None = None
    tunnels: tuple[SshTunnelConfig, ...] = ()
    services: tuple[ServiceLink, ...] = ()
    images: SidecarImages = SidecarImages()
    # ``node_extra_hosts``: names the sidecars resolve (they do the node's reaching out).
    extra_hosts: tuple[tuple[str, str], ...] = ()
    # The Docker network through which the sidecars reach out (v6node only).
    sidecar_network: str = DEFAULT_SIDECAR_NETWORK
    ready_timeout: float = DEFAULT_SIDECAR_READY_TIMEOUT

    @property
    def has_services(self) -> bool:
        """Whether algorithms need to reach anything on their network besides the node's proxy."""
        return self.whitelist is not None or bool(self.tunnels) or bool(self.services)

    @property
    def aliases(self) -> tuple[str, ...]:
        """Every name algorithms reach a service by, except ``squid``."""
        return (*(t.hostname for t in self.tunnels), *(a for s in self.services for a in s.aliases))


@frozen
class Sidecar:
    """A running sidecar container: algorithms reach it at ``alias:port`` (``address`` on their network)."""

    kind: str  # SIDECAR_SQUID, SIDECAR_SSH_TUNNEL or the VPN client
    name: str  # container name
    container_id: str
    alias: str
    address: str
    port: int  # 0: it serves no port of its own (the VPN client)

    @property
    def where(self) -> str:
        """How algorithms reach it: ``alias:port``, or its name when it serves no port."""
        return f"{self.alias}:{self.port}" if self.port else self.alias


@frozen
class SidecarExit:
    exit_code: int
    reason: str  # the last lines of its output, or why it could not be watched


@frozen
class LinkedService:
    container: str
    aliases: tuple[str, ...]
    address: str
    running: bool


_PRIVATE_V4 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_PRIVATE_V6 = ipaddress.IPv6Network("fc00::/7")


def _is_private(entry: str) -> bool:
    network = ipaddress.ip_network(entry, strict=False)
    if isinstance(network, ipaddress.IPv4Network):
        return any(network.subnet_of(private) for private in _PRIVATE_V4)
    return network.subnet_of(_PRIVATE_V6)


def whitelist_warnings(whitelist: WhitelistConfig) -> list[str]:
    """What the operator should know about a whitelist: the reference's safety warnings."""
    warnings = []
    if not (whitelist.domains or whitelist.ips):
        warnings.append("the whitelist names no domain and no IP: Squid refuses every request")
    if not whitelist.ports:
        warnings.append("whitelist.ports is empty: Squid refuses every request (list 443 for HTTPS)")
    clear = sorted(p for p in whitelist.ports if p != 443)
    if whitelist.domains and clear:
        warnings.append(
            f"whitelisted domains are also reachable on port(s) {', '.join(map(str, clear))}: without TLS "
            "the request (and what an algorithm sends) crosses the network readable, and the name is taken "
            "from the request itself"
        )
    for entry in whitelist.ips:
        if not _is_private(entry):
            warnings.append(
                f"whitelisted IP {entry} is outside the private ranges (10/8, 172.16/12, 192.168/16): "
                "algorithms can send data to it over the internet"
            )
    return warnings


def sidecar_container_name(node_name: str, kind: str, alias: str | None = None) -> str:
    """``vantage6-<node>-squid``; one ``vantage6-<node>-ssh-tunnel-<hostname>`` per tunnel (the
    reference gives every tunnel the same name, so only its last one survives)."""
    return f"vantage6-{node_name}-{kind}" + (f"-{alias}" if alias else "")


def no_proxy(proxy_host: str, aliases: tuple[str, ...]) -> str:
    """Hosts algorithms reach directly, not through Squid: the node's proxy and every service."""
    return ",".join(dict.fromkeys(("localhost", "127.0.0.1", proxy_host, PROXY_ALIAS, *aliases)))


def egress_environment(squid: bool, proxy_host: str, aliases: tuple[str, ...]) -> dict[str, str]:
    """The proxy variables algorithms get when Squid runs (spec §7.7), none otherwise."""
    if not squid:
        return {}
    url = f"http://{SQUID_ALIAS}:{SQUID_PORT}"
    direct = no_proxy(proxy_host, aliases)
    return {
        "HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url,
        "NO_PROXY": direct, "no_proxy": direct,
    }
