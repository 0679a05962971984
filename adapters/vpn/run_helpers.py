"""The Docker side of a run on the VPN: its helper container, its route and its forwarding rules.

Blocking calls on the engine's client (the adapter runs them on the runtime's threads).
A run's algorithm joins the network namespace of its helper (``container:<helper>``),
made on the algorithm network like an algorithm (no capability, read-only, ``sleep
infinity``). Its default route is changed to the VPN client by a short-lived container of
the helper image in that namespace with NET_ADMIN only, so the helper itself, whose
namespace the untrusted algorithm shares, holds no capability. The helper's labels carry
the run's forwarded ports, so that a new VPN client (restarted, or of a new node process)
restores them.

Inside the VPN client each forwarded port is a DNAT rule from the VPN address to the
helper, and a SNAT rule for a peer on the same node (whose traffic reaches the client from
the algorithm network, not from the tunnel); both are tagged with the run's comment.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

import docker
import docker.errors
from docker.types import LogConfig

from v6node.adapters.docker.errors import docker_errors
from v6node.adapters.docker.sidecars import last_lines
from v6node.adapters.docker.waits import run_once
from v6node.domain.containers import LABEL_NODE, LABEL_RUN, LABEL_TYPE, managed_labels
from v6node.domain.errors import ContainerError
from v6node.domain.vpn import VPN_HELPER_TYPE, ForwardedPort, encode_ports, vpn_helper_name

PORTS_LABEL = "v6node.vpn.ports"
_DPORT = re.compile(r"--dport (\d+)\b")
_INET = re.compile(r"\binet (\d+\.\d+\.\d+\.\d+)/")


def run_tag(run_id: int) -> str:
    return f"v6node-run-{run_id}"


def helper_labels(node_name: str, run_id: int | None = None) -> dict[str, str]:
    labels = {LABEL_TYPE: VPN_HELPER_TYPE, **managed_labels(node_name)}
    if run_id is not None:
        labels[LABEL_RUN] = str(run_id)
    return labels


def run_in(api: docker.APIClient, container_id: str, script: str, what: str) -> str:
    """``sh -c script`` in a running container; its output, or ``ContainerError`` when it fails."""
    with docker_errors(what):
        exec_id = api.exec_create(container_id, ["sh", "-c", script], stdout=True, stderr=True)["Id"]
        output = api.exec_start(exec_id).decode("utf-8", "replace")
        code = api.exec_inspect(exec_id).get("ExitCode")
    if code != 0:
        raise ContainerError(f"{what} failed (exit code {code}): {last_lines(output) or 'no output'}")
    return output


def tunnel_address(api: docker.APIClient, client_id: str) -> str | None:
    output = run_in(api, client_id, "ip -4 -o addr show dev tun0 2>/dev/null || true", "reading the VPN address")
    match = _INET.search(output)
    return match.group(1) if match else None


def taken_ports(api: docker.APIClient, client_id: str) -> set[int]:
    output = run_in(api, client_id, "iptables -w -t nat -S PREROUTING", "reading the VPN client's forwarded ports")
    return {int(port) for port in _DPORT.findall(output)}


def make_helper(
    api: docker.APIClient, node_name: str, image: str, run_id: int, network: str, ports: tuple[ForwardedPort, ...],
    extra_hosts: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """The run's helper on ``network``: its id and address there. Its hosts entries are the
    run's (a container in another's network namespace shares its /etc/hosts)."""
    name = vpn_helper_name(node_name, run_id)
    labels = {**helper_labels(node_name, run_id), LABEL_NODE: node_name, PORTS_LABEL: encode_ports(ports)}
    with docker_errors(f"making the VPN helper {name}"):
        with suppress(docker.errors.NotFound):
            api.remove_container(name, force=True)
        created = api.create_container(
            image, command=["sleep", "infinity"], name=name, labels=labels,
            host_config=api.create_host_config(
                network_mode=network, cap_drop=["ALL"], security_opt=["no-new-privileges"], read_only=True,
                pids_limit=16, mem_limit=32 * 1024 * 1024, extra_hosts=dict(extra_hosts or {}) or None,
                log_config=LogConfig(type=LogConfig.types.JSON, config={"max-size": "64k"}),
            ),
            networking_config=api.create_networking_config({network: api.create_endpoint_config()}),
        )
        helper_id: str = created["Id"]
        try:
            api.start(helper_id)
            address = address_on(api, helper_id, network)
        except BaseException:
            with suppress(docker.errors.DockerException):
                api.remove_container(helper_id, force=True)
            raise
    if not address:
        raise ContainerError(f"the VPN helper {name} has no address on {network}")
    return helper_id, address


def address_on(api: docker.APIClient, container_id: str, network: str) -> str:
    networks = api.inspect_container(container_id)["NetworkSettings"]["Networks"] or {}
    return str((networks.get(network) or {}).get("IPAddress") or "")


def route_through(api: docker.APIClient, node_name: str, image: str, helper_id: str, gateway: str) -> None:
    """The helper's default route goes to the VPN client's address ``gateway``."""
    what = f"routing the traffic of VPN helper {helper_id[:12]} through the VPN client"
    with docker_errors(what):
        created = api.create_container(
            image, entrypoint=["ip"], command=["route", "replace", "default", "via", gateway],
            labels={LABEL_TYPE: f"{VPN_HELPER_TYPE}-route", LABEL_NODE: node_name, **managed_labels(node_name)},
            host_config=api.create_host_config(
                network_mode=f"container:{helper_id}", cap_drop=["ALL"], cap_add=["NET_ADMIN"],
                security_opt=["no-new-privileges"], read_only=True, pids_limit=16,
            ),
        )
        status, output = run_once(api, created["Id"], timeout=60)
    if status != 0:
        raise ContainerError(f"{what} failed (exit code {status}): {last_lines(output) or 'no output'}")


def forwarding_script(
    run_id: int, vpn_address: str, local_subnet: str | None, helper: str, ports: tuple[ForwardedPort, ...]
) -> str:
    tag = f"-m comment --comment {run_tag(run_id)}"
    lines = ["set -e"]
    for port in ports:
        lines.append(
            f"iptables -w -t nat -A PREROUTING -d {vpn_address}/32 -p tcp --dport {port.vpn_port} {tag} "
            f"-j DNAT --to-destination {helper}:{port.algorithm_port}"
        )
        if local_subnet:
            lines.append(
                f"iptables -w -t nat -A POSTROUTING -s {local_subnet} -d {helper}/32 -p tcp --dport {port.algorithm_port} "
                f"{tag} -j SNAT --to-source {vpn_address}"
            )
    return "\n".join(lines) + "\n"


def unforwarding_script(run_id: int) -> str:
    needle = f"--comment {run_tag(run_id)} -j"
    return (
        "for chain in PREROUTING POSTROUTING; do\n"
        f"  iptables -w -t nat -S $chain | grep -F -- '{needle}' | sed 's/^-A /-D /' | "
        "while read -r rule; do eval \"iptables -w -t nat $rule\"; done\n"
        "done\n"
    )


def client_nat_script() -> str:
    """Traffic of algorithms leaves through the tunnel with the node's VPN address (the VPN
    server takes packets from a client's own address only); idempotent."""
    rule = "POSTROUTING -o tun0 -j MASQUERADE"
    return f"iptables -w -t nat -C {rule} 2>/dev/null || iptables -w -t nat -A {rule}\n"


def helpers_of(api: docker.APIClient, node_name: str, run_id: int | None = None) -> list[dict[str, Any]]:
    filters = {"label": [f"{key}={value}" for key, value in helper_labels(node_name, run_id).items()]}
    with docker_errors("listing VPN helpers"):
        return list(api.containers(all=True, filters=filters))


def running_algorithms(api: docker.APIClient, node_name: str) -> set[int]:
    """Run ids of this node's algorithm containers that run."""
    labels = {LABEL_TYPE: "algorithm", **managed_labels(node_name)}
    filters = {"label": [f"{key}={value}" for key, value in labels.items()], "status": "running"}
    with docker_errors("listing running algorithms"):
        found = api.containers(filters=filters)
    return {int(c["Labels"][LABEL_RUN]) for c in found if str((c.get("Labels") or {}).get(LABEL_RUN, "")).isdigit()}
