"""The ``runtime`` key of the node config: the local Docker engine (default) or a Docker Swarm."""
from __future__ import annotations

import ipaddress
from v6node.app.config_section import Section
from v6node.domain.config import RUNTIME_KINDS, RuntimeConfig
from v6node.domain.egress import EgressConfig
from v6node.domain.vpn import VpnConfig

_KEYS = frozenset({"kind", "constraints", "reserve_cpus", "reserve_memory", "gpu", "gpu_resource", "proxy_address"})


def parse_runtime(root: Section, proxy_check_image: str | None) -> RuntimeConfig:
    """``runtime: {kind: swarm, constraints: [...], reserve_cpus, reserve_memory, gpu, proxy_address}``.

    ``kind`` must be one of ``RUNTIME_KINDS``; a swarm needs ``proxy_check_image`` (its
    busybox ``nc`` relays the algorithms to the proxy, and it checks the shared folders).
    """
    section = root.mapping("runtime")
    section.warn_unknown(_KEYS)
    kind = section.string("kind", default="docker")
    if kind not in RUNTIME_KINDS:
        raise section.fail("kind", f"expected one of {', '.join(RUNTIME_KINDS)}, got {kind!r}")
    constraints = section.string_list("constraints")
    for i, constraint in enumerate(constraints):
        if "==" not in constraint and "!=" not in constraint:
            raise section.fail(f"constraints[{i}]", f"expected a Swarm constraint such as 'node.role == worker', got {constraint!r}")
    proxy_address = section.string("proxy_address", nullable=True)
    if proxy_address:
        try:
            ipaddress.ip_address(proxy_address)
        except ValueError:
            raise section.fail("proxy_address", f"expected an IP address, got {proxy_address!r}") from None
    if kind == "swarm" and proxy_check_image is None:
        raise root.fail(
            "proxy_check_image",
            "must name an image with busybox (sh, nc, cat) when runtime.kind is swarm: it relays algorithms to the "
            "proxy and checks that every host sees the task folder",
        )
    defaults = RuntimeConfig()
    return RuntimeConfig(
        kind=kind,
        constraints=constraints,
        reserve_cpus=section.number("reserve_cpus"),
        reserve_memory=section.size("reserve_memory"),
        gpu=section.boolean("gpu", defaults.gpu),
        gpu_resource=section.string("gpu_resource", default=defaults.gpu_resource),
        proxy_address=proxy_address or None,
    )


def check_runtime_egress(root: Section, runtime: RuntimeConfig, egress: EgressConfig, vpn: VpnConfig | None) -> None:
    """The egress sidecars (Squid, SSH tunnels, linked containers), the VPN client and their
    host forwarding rules are made for one engine's bridge network: on a swarm they are
    refused, not half made."""
    if runtime.cluster and egress.has_services:
        raise root.fail(
            "runtime",
            "kind swarm cannot be combined with whitelist, ssh_tunnels or docker_services (the egress "
            "sidecars run on one engine only for now); remove them or use kind docker",
        )
    if runtime.cluster and vpn is not None:
        raise root.fail(
            "runtime",
            "kind swarm cannot be combined with vpn_subnet (the VPN client and its forwarding run on one "
            "engine only for now); remove vpn_subnet or use kind docker",
        )
