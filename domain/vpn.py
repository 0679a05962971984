"""The VPN between stations: algorithms of one task at different nodes reach each other (spec §9.3).

A node with ``vpn_subnet`` runs an OpenVPN client next to its algorithm network; each run's
algorithm sits behind a small helper container whose default route goes through that
client, and the ports its image exposes are forwarded from the node's VPN address to it.
"""
from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any

from attrs import field, frozen, validators

from v6node.domain.egress import REFERENCE_REGISTRY, Sidecar

DEFAULT_VPN_CLIENT_IMAGE = f"{REFERENCE_REGISTRY}/vpn-client:4.15"
# The image whose container holds a run's network namespace (the reference's ``alpine``).
DEFAULT_VPN_HELPER_IMAGE = f"{REFERENCE_REGISTRY}/alpine:4.15"
VPN_CONFIG_FILE = "vpn-config.ovpn.conf"  # in <data folder>/vpn/, as the reference names it
SIDECAR_VPN_CLIENT = "vpn-client"
VPN_HELPER_TYPE = "algorithm-helper"  # the reference's vantage6-type of the helper
# An image that exposes no port is reached on this one (the reference's default).
DEFAULT_ALGORITHM_PORT = 8888
# Ports of the VPN address that are forwarded to algorithms (the reference's range).
VPN_PORTS = range(49152, 65535)


def vpn_subnet(text: str) -> ipaddress.IPv4Network:
    """``vpn_subnet`` as a network; ``ValueError`` when it is not an IPv4 network in CIDR form."""
    if "/" not in text:
        raise ValueError("expected an IPv4 network in CIDR form such as 10.76.0.0/16")
    try:
        return ipaddress.IPv4Network(text, strict=False)
    except ValueError as exc:
        raise ValueError(f"expected an IPv4 network in CIDR form such as 10.76.0.0/16 ({exc})") from None


def _is_subnet(_instance: Any, _attribute: Any, value: str) -> None:
    vpn_subnet(value)


@frozen
class VpnConfig:
    """``vpn_subnet`` and the images the VPN needs (``images.vpn_client``, ``images.alpine``)."""

    subnet: str = field(validator=_is_subnet)
    client_image: str = DEFAULT_VPN_CLIENT_IMAGE
    helper_image: str = DEFAULT_VPN_HELPER_IMAGE

    @property
    def network(self) -> ipaddress.IPv4Network:
        return vpn_subnet(self.subnet)

    def contains(self, address: str) -> bool:
        try:
            return ipaddress.IPv4Address(address) in self.network
        except ValueError:
            return False


@frozen
class VpnConnection:
    """The running VPN client: its container (a sidecar on the algorithm network at
    ``sidecar.address``) and the address the VPN server gave it."""

    sidecar: Sidecar
    vpn_address: str


@frozen
class AlgorithmPort:
    """A port an algorithm image exposes, with its ``p<port>`` label (None without one)."""

    port: int = field(validator=[validators.ge(1), validators.le(65535)])
    label: str | None = None


@frozen
class ForwardedPort:
    """``vpn_port`` of the node's VPN address leads to ``algorithm_port`` of a run's algorithm."""

    vpn_port: int
    algorithm_port: int
    label: str | None = None


@frozen
class VpnRunNetwork:
    """Where a run's algorithm joins the network (``container:<helper>``) and its forwarded ports."""

    run_id: int
    helper_id: str
    ports: tuple[ForwardedPort, ...]

    @property
    def network_mode(self) -> str:
        return f"container:{self.helper_id}"


def algorithm_ports(exposed: Iterable[str], labels: Mapping[str, str]) -> tuple[AlgorithmPort, ...]:
    """The TCP ports of an image's ``ExposedPorts`` (``"8888/tcp"``), each labelled by its
    ``p<port>`` image label; an image without any is reached on 8888, unlabelled."""
    ports: dict[int, AlgorithmPort] = {}
    for entry in exposed:
        number, _, protocol = str(entry).partition("/")
        if (protocol or "tcp") != "tcp" or not number.isdigit() or not 1 <= int(number) <= 65535:
            continue
        port = int(number)
        ports.setdefault(port, AlgorithmPort(port, labels.get(f"p{port}") or None))
    if not ports:
        return (AlgorithmPort(DEFAULT_ALGORITHM_PORT, labels.get(f"p{DEFAULT_ALGORITHM_PORT}") or None),)
    return tuple(ports[port] for port in sorted(ports))


def choose_vpn_ports(count: int, taken: Iterable[int]) -> tuple[int, ...]:
    """``count`` ports of ``VPN_PORTS`` that are not ``taken``, lowest first."""
    used = set(taken)
    chosen: list[int] = []
    for port in VPN_PORTS:
        if len(chosen) == count:
            break
        if port not in used:
            chosen.append(port)
    if len(chosen) < count:
        raise ValueError(f"no {count} free port(s) left on the VPN address ({len(used)} in use)")
    return tuple(chosen)


def forward(ports: tuple[AlgorithmPort, ...], taken: Iterable[int]) -> tuple[ForwardedPort, ...]:
    vpn_ports = choose_vpn_ports(len(ports), taken)
    return tuple(ForwardedPort(vpn, port.port, port.label) for vpn, port in zip(vpn_ports, ports))


def encode_ports(ports: Iterable[ForwardedPort]) -> str:
    """The forwarded ports as a container label (so that they are found again after a restart)."""
    return json.dumps([[p.vpn_port, p.algorithm_port, p.label] for p in ports])


def decode_ports(text: str) -> tuple[ForwardedPort, ...]:
    """``encode_ports`` reversed; a label that is not ours (or damaged) gives no ports."""
    try:
        return tuple(ForwardedPort(int(vpn), int(algorithm), label) for vpn, algorithm, label in json.loads(text))
    except (ValueError, TypeError):
        return ()


def ovpn_text(config: str) -> str:
    """An OpenVPN configuration as the server sends it (CRLF line ends), with LF line ends."""
    return config.replace("\r\n", "\n")


def vpn_client_name(node_name: str) -> str:
    return f"vantage6-{node_name}-vpn-client"


def vpn_helper_name(node_name: str, run_id: int) -> str:
    return f"vantage6-{node_name}-run-{run_id}-helper"
