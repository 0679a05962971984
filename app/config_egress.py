"""Read ``whitelist``, ``ssh-tunnels``, ``docker_services``, ``images`` and ``node_extra_hosts``.

The reference accepts a malformed whitelist and silently runs without Squid, and fails on a
malformed tunnel only when it starts it; here every mistake is a ``ConfigError`` that names
the file and the key, before anything starts.
"""
from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any

from v6node.app.config_section import Section, log, resolve_path
from v6node.domain.egress import (
    DEFAULT_NETWORK_CONFIG_IMAGE,
    DEFAULT_SIDECAR_NETWORK,
    DEFAULT_SIDECAR_READY_TIMEOUT,
    DEFAULT_SQUID_IMAGE,
    DEFAULT_SSH_TUNNEL_IMAGE,
    SQUID_ALIAS,
    EgressConfig,
    ServiceLink,
    SidecarImages,
    SshTunnelConfig,
    WhitelistConfig,
)

EGRESS_KEYS = frozenset({"whitelist", "ssh-tunnels", "docker_services", "images", "node_extra_hosts"})
V6NODE_EGRESS_KEYS = frozenset({"sidecar_network", "sidecar_ready_timeout"})

# A name algorithms resolve on their network (a Docker network alias).
_ALIAS = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9.-]{0,61}[a-zA-Z0-9])?$")
_DOMAIN = re.compile(r"^\.?(?:[a-zA-Z0-9_](?:[a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?\.)*[a-zA-Z0-9_](?:[a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?$")
_HOST = re.compile(r"^[a-zA-Z0-9_.:-]+$")
_FINGERPRINT = re.compile(r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+)\s+[A-Za-z0-9+/]+={0,3}(\s.*)?$")
_CONTAINER = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_WHITELIST_KEYS = frozenset({"domains", "ips", "ports"})
# ``images`` keys of the reference that v6node has no use for (no VPN, the node is not a container).
_OTHER_IMAGE_KEYS = frozenset({"node", "alpine", "vpn_client"})


def _port(section: Section, name: str, default: int | None = None) -> int:
    value = section.integer(name, default)
    if value is None:
        raise section.fail(name, "is required (a port number)")
    if not 1 <= value <= 65535:
        raise section.fail(name, f"expected a port number from 1 to 65535, got {value}")
    return int(value)


def _whitelist(root: Section) -> WhitelistConfig | None:
    if root.data.get("whitelist") is None:
        return None
    section = root.mapping("whitelist")
    unknown = sorted(set(map(str, section.data)) - _WHITELIST_KEYS)
    if unknown:
        raise section.fail(unknown[0], "unknown key: a whitelist has only domains, ips and ports")
    domains = section.string_list("domains")
    for i, domain in enumerate(domains):
        if not _DOMAIN.match(domain):
            raise section.fail(f"domains[{i}]", f"expected a domain name such as example.org or .example.org, got {domain!r}")
    ips = section.string_list("ips")
    for i, ip in enumerate(ips):
        try:
            ipaddress.ip_network(ip, strict=False)
        except ValueError:
            raise section.fail(f"ips[{i}]", f"expected an IP address or network such as 10.0.0.5 or 10.0.0.0/24, got {ip!r}") from None
    if not isinstance(section.data.get("ports"), (list, type(None))):
        raise section.fail("ports", f"expected a list of port numbers, got {section.data['ports']!r}")
    ports = []
    for i, port in enumerate(section.data.get("ports") or []):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise section.fail(f"ports[{i}]", f"expected a port number from 1 to 65535, got {port!r}")
        ports.append(port)
    return WhitelistConfig(domains=domains, ips=ips, ports=tuple(dict.fromkeys(ports)))


def _alias(section: Section, name: str, value: Any, taken: dict[str, str]) -> str:
    if not isinstance(value, str) or not _ALIAS.match(value):
        raise section.fail(name, f"expected a host name (letters, digits, '-' and '.'), got {value!r}")
    if value == SQUID_ALIAS:
        raise section.fail(name, "'squid' is the whitelist proxy's name on the algorithm network; choose another")
    if value in taken:
        raise section.fail(name, f"{value!r} is already the name of {taken[value]}")
    taken[value] = f"'{section.key(name)}'"
    return value


def _key_file(section: Section, base: Path) -> str:
    raw = section.string("key", required=True)
    path = resolve_path(base, raw)
    if not os.path.isfile(path):
        raise section.fail("key", f"no private key file at {path}")
    if not os.access(path, os.R_OK):
        raise section.fail("key", f"the private key file {path} cannot be read by this user")
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        log.warning(
            "%s: %s: the private key %s can be read by other users (mode %04o); chmod 600 it "
            "(the tunnel gets a copy with mode 0600 either way)", section.file, section.key("key"), path, mode,
        )
    return path


def _tunnel(entry: Section, base: Path, taken: dict[str, str]) -> SshTunnelConfig:
    hostname = _alias(entry, "hostname", entry.data.get("hostname"), taken)
    ssh = entry.mapping("ssh")
    identity = ssh.mapping("identity")
    tunnel = entry.mapping("tunnel")
    bind, dest = tunnel.mapping("bind"), tunnel.mapping("dest")
    host = ssh.string("host", required=True)
    if not _HOST.match(host):
        raise ssh.fail("host", f"expected a host name or IP address, got {host!r}")
    fingerprint = ssh.string("fingerprint", required=True).strip()
    if not _FINGERPRINT.match(fingerprint):
        raise ssh.fail(
            "fingerprint",
            "expected the server's public host key as '<type> <base64>' (a line of the server's "
            "/etc/ssh/ssh_host_*_key.pub, or of `ssh-keyscan <host>` without the host name)",
        )
    dest_ip = dest.string("ip", required=True)
    if not _HOST.match(dest_ip):
        raise dest.fail("ip", f"expected a host name or IP address, got {dest_ip!r}")
    bind_ip = bind.string("ip", default="0.0.0.0")
    username = identity.string("username", required=True)
    if not re.match(r"^[a-zA-Z0-9_][a-zA-Z0-9_.-]*$", username):
        raise identity.fail("username", f"expected a user name, got {username!r}")
    for section, known in (
        (entry, {"hostname", "ssh", "tunnel"}), (ssh, {"host", "port", "fingerprint", "identity"}),
        (identity, {"username", "key"}), (tunnel, {"bind", "dest"}), (bind, {"ip", "port"}), (dest, {"ip", "port"}),
    ):
        section.warn_unknown(frozenset(known))
    return SshTunnelConfig(
        hostname=hostname,
        ssh_host=host,
        ssh_port=_port(ssh, "port", 22),
        fingerprint=fingerprint,
        username=username,
        key_file=_key_file(identity, base),
        bind_ip=bind_ip,
        bind_port=_port(bind, "port"),
        dest_ip=dest_ip,
        dest_port=_port(dest, "port"),
    )


def _tunnels(root: Section, base: Path, taken: dict[str, str]) -> tuple[SshTunnelConfig, ...]:
    raw = root.data.get("ssh-tunnels")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise root.fail("ssh-tunnels", f"expected a list of tunnels, got {type(raw).__name__}")
    tunnels = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise root.fail(f"ssh-tunnels[{i}]", f"expected a mapping with hostname, ssh and tunnel, got {item!r}")
        tunnels.append(_tunnel(Section(root.file, item, f"ssh-tunnels[{i}]"), base, taken))
    return tuple(tunnels)


def _services(root: Section, taken: dict[str, str]) -> tuple[ServiceLink, ...]:
    section = root.mapping("docker_services")
    by_container: dict[str, list[str]] = {}
    for alias, container in section.data.items():
        name = _alias(section, str(alias), str(alias), taken)
        if not isinstance(container, str) or not _CONTAINER.match(container):
            raise section.fail(str(alias), f"expected the name of a container of yours, got {container!r}")
        by_container.setdefault(container.lstrip("/"), []).append(name)
    return tuple(ServiceLink(container=c, aliases=tuple(a)) for c, a in by_container.items())


def _images(root: Section) -> SidecarImages:
    section = root.mapping("images")
    section.warn_unknown(frozenset({"squid", "ssh-tunnel", "ssh_tunnel", "network_config"}) | _OTHER_IMAGE_KEYS)
    if "ssh-tunnel" in section.data and "ssh_tunnel" in section.data:
        raise section.fail("ssh_tunnel", "set either images.ssh-tunnel or images.ssh_tunnel, not both")
    tunnel_key = "ssh_tunnel" if "ssh_tunnel" in section.data else "ssh-tunnel"
    return SidecarImages(
        squid=section.string("squid", nullable=True) or DEFAULT_SQUID_IMAGE,
        ssh_tunnel=section.string(tunnel_key, nullable=True) or DEFAULT_SSH_TUNNEL_IMAGE,
        network_config=section.string("network_config", nullable=True) or DEFAULT_NETWORK_CONFIG_IMAGE,
    )


def _extra_hosts(root: Section) -> tuple[tuple[str, str], ...]:
    section = root.mapping("node_extra_hosts")
    hosts = []
    for host, address in section.data.items():
        if not isinstance(host, str) or not _HOST.match(host):
            raise section.fail(str(host), f"expected a host name, got {host!r}")
        text = str(address)
        if text != "host-gateway":
            try:
                ipaddress.ip_address(text)
            except ValueError:
                raise section.fail(host, f"expected an IP address or host-gateway, got {address!r}") from None
        hosts.append((host, text))
    return tuple(hosts)


def parse_egress(root: Section, base: Path) -> EgressConfig:
    taken: dict[str, str] = {}
    network = root.string("sidecar_network", default=DEFAULT_SIDECAR_NETWORK)
    if not _CONTAINER.match(network):
        raise root.fail("sidecar_network", f"expected the name of a Docker network, got {network!r}")
    return EgressConfig(
        whitelist=_whitelist(root),
        tunnels=_tunnels(root, base, taken),
        services=_services(root, taken),
        images=_images(root),
        extra_hosts=_extra_hosts(root),
        sidecar_network=network,
        ready_timeout=root.number("sidecar_ready_timeout", default=DEFAULT_SIDECAR_READY_TIMEOUT)
        or DEFAULT_SIDECAR_READY_TIMEOUT,
    )
