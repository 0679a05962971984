"""ServiceFirewall as two tagged rules in the host's ``DOCKER-USER`` chain, made by a helper container.

Why rules at all: the algorithm network is made with ``enable_icc=false``, which the engine
enforces with ``FORWARD -i <bridge> -o <bridge> -j DROP``, so that no algorithm reaches
another. A sidecar or a linked container on that network is just as unreachable. Measured
alternatives (Docker 20.10, iptables-nft): a sidecar in the host's network namespace bound
to the network's gateway is reachable (like the node's proxy), but it cannot serve a linked
container, two tunnels on one port collide, and it changes the names and ports algorithms
use; rules by a container's address open a way between algorithms when that container
stops, because the engine gives its address to the next container at once.

So the node lets algorithms reach the network's **service range** only (the upper half of
its subnet, which the engine never hands out: see ``networks``), with two rules inserted at
the top of ``DOCKER-USER`` (the chain the engine keeps for its users and never flushes)::

    -i <bridge> -o <bridge> -d <service range> -j ACCEPT
    -i <bridge> -o <bridge> -s <service range> -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT

Services answer but cannot open connections to algorithms; algorithms still cannot reach
each other. Both rules carry the comment ``v6node:<node>:services``; they are removed by
that comment at stop and before they are made again, also after a killed node process
(a marker file in the data folder says that there may be some). They are made by a
short-lived container of ``images.network_config`` (any image with ``sh`` and iptables; the
reference's vpn-configurator, or v6node's own) on the host's network with NET_ADMIN and
NET_RAW, using the iptables variant (nft or legacy) whose ``DOCKER-USER`` chain exists,
so the node itself needs no root.
"""
from __future__ import annotations

import os
from contextlib import suppress

import docker.errors
from docker.types import LogConfig

from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.errors import docker_errors
from v6node.adapters.docker.networks import bridge_name, network_named, service_range
from v6node.adapters.docker.sidecars import ensure_local_image, last_lines
from v6node.domain.containers import LABEL_NODE, LABEL_TYPE, managed_labels
from v6node.domain.egress import SIDECAR_NETWORK_CONFIG, sidecar_container_name
from v6node.domain.errors import ContainerError
from v6node.ports.service_firewall import ServiceFirewall

_CHOOSE_IPTABLES = """set -e
if iptables-nft -w -n -L DOCKER-USER >/dev/null 2>&1; then I=iptables-nft
elif iptables-legacy -w -n -L DOCKER-USER >/dev/null 2>&1; then I=iptables-legacy
elif iptables -w -n -L DOCKER-USER >/dev/null 2>&1; then I=iptables
else echo "the host has no DOCKER-USER chain (does the Docker engine manage iptables?)" >&2; exit 3; fi
"""
_REMOVE_TAGGED = """$I -w -S DOCKER-USER | grep -F -- "$TAG" | sed 's/^-A /-D /' | while read -r rule; do eval "$I -w $rule"; done
"""
_REPORT = """echo "$I: $($I -w -S DOCKER-USER | grep -cF -- "$TAG" || true) rule(s) tagged $TAG in DOCKER-USER"
"""


def firewall_tag(node_name: str) -> str:
    # ':' cannot occur in a node name, so no node's tag is a prefix of another's.
    return f"v6node:{node_name}:services"


class DockerServiceFirewall(ServiceFirewall):
    def __init__(self, runtime: DockerContainerRuntime, node_name: str, image: str, marker_file: str) -> None:
        self.runtime = runtime
        self.node_name = node_name
        self.image = image
        self.marker_file = marker_file

    async def open(self, network: str) -> None:
        details = await self.runtime.call(network_named, self.runtime.api, network)
        services = service_range(details)
        if services is None:
            raise ContainerError(
                f"network {network} has no service range (an older v6node made it while algorithms ran on it): "
                "stop the node, remove the network and start the node again"
            )
        bridge = bridge_name(details)
        with open(self.marker_file, "w", encoding="utf-8") as marker:  # before: a crash must leave it
            marker.write(f"{firewall_tag(self.node_name)} {bridge} {services}\n")
        rule = f"-i {bridge} -o {bridge}"
        tag = '-m comment --comment "$TAG" -j ACCEPT'
        await self._run(
            _REMOVE_TAGGED
            + f"$I -w -I DOCKER-USER 1 {rule} -s {services} -m conntrack --ctstate ESTABLISHED,RELATED {tag}\n"
            + f"$I -w -I DOCKER-USER 1 {rule} -d {services} {tag}\n"
        )

    async def close(self) -> None:
        if not os.path.exists(self.marker_file):
            return
        await self._run(_REMOVE_TAGGED)
        with suppress(FileNotFoundError):
            os.unlink(self.marker_file)

    async def _run(self, commands: str) -> str:
        what = "the firewall helper (images.network_config)"
        await ensure_local_image(self.runtime, self.image, what)
        script = f"TAG='{firewall_tag(self.node_name)}'\n{_CHOOSE_IPTABLES}{commands}{_REPORT}"
        output = await self.runtime.call(self._helper, script)
        return output

    def _helper(self, script: str) -> str:
        api = self.runtime.api
        name = sidecar_container_name(self.node_name, SIDECAR_NETWORK_CONFIG)
        labels = {LABEL_TYPE: SIDECAR_NETWORK_CONFIG, LABEL_NODE: self.node_name, **managed_labels(self.node_name)}
        with docker_errors(f"running {name}"):
            with suppress(docker.errors.NotFound):
                api.remove_container(name, force=True)
            created = api.create_container(
                self.image,
                entrypoint=["/bin/sh", "-c"],
                command=[script],
                name=name,
                labels=labels,
                host_config=api.create_host_config(
                    network_mode="host",
                    cap_drop=["ALL"],
                    cap_add=["NET_ADMIN", "NET_RAW"],
                    security_opt=["no-new-privileges"],
                    read_only=True,
                    tmpfs={"/run": "rw,size=1m", "/tmp": "rw,size=1m"},
                    pids_limit=64,
                    log_config=LogConfig(type=LogConfig.types.JSON, config={"max-size": "1m"}),
                ),
            )
            try:
                api.start(created["Id"])
                status = api.wait(created["Id"], timeout=120)["StatusCode"]
                output = api.logs(created["Id"], stdout=True, stderr=True).decode("utf-8", "replace")
            finally:
                with suppress(docker.errors.DockerException):
                    api.remove_container(created["Id"], force=True)
        if status != 0:
            raise ContainerError(
                f"{name} could not change the host's DOCKER-USER rules (exit code {status}): {last_lines(output)}"
            )
        return output
