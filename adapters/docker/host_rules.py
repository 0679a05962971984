"""Tagged ACCEPT rules in the host's ``DOCKER-USER`` chain, changed by a short-lived helper container.

``DOCKER-USER`` is the chain the engine keeps for its users: it comes first in ``FORWARD``
and the engine never flushes it. Each set of rules carries a comment (its tag) and is
removed by that tag, at stop and before it is made again, also after a killed node process:
a marker file in the data folder, written before the rules are made, says that there may
be some. The helper is ``images.network_config`` (any image with ``sh`` and iptables) on the
host's network with NET_ADMIN and NET_RAW, using the iptables variant (nft or legacy) whose
``DOCKER-USER`` chain exists, so the node itself needs no root.
"""
from __future__ import annotations

import os
from contextlib import suppress

import docker.errors
from docker.types import LogConfig

from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.errors import docker_errors
from v6node.adapters.docker.sidecars import ensure_local_image, last_lines
from v6node.adapters.docker.waits import run_once
from v6node.domain.containers import LABEL_NODE, LABEL_TYPE, managed_labels
from v6node.domain.egress import SIDECAR_NETWORK_CONFIG, sidecar_container_name
from v6node.domain.errors import ContainerError

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


class HostRules:
    """One node's rules of one purpose, tagged ``tag`` (no tag may be a prefix of another)."""

    def __init__(
        self, runtime: DockerContainerRuntime, node_name: str, image: str, tag: str, marker_file: str,
        purpose: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.node_name = node_name
        self.image = image
        self.tag = tag
        self.marker_file = marker_file
        self.purpose = purpose  # names the helper container: one per purpose, so they never meet

    async def replace(self, matches: list[str], note: str) -> None:
        """Remove the tagged rules, then insert ``-<match> -j ACCEPT`` for each of ``matches``
        (the first ends up first). ``note`` goes into the marker file (for the operator)."""
        os.makedirs(os.path.dirname(self.marker_file) or ".", exist_ok=True)
        with open(self.marker_file, "w", encoding="utf-8") as marker:  # before: a crash must leave it
            marker.write(f"{self.tag} {note}\n")
        inserts = "".join(
            f'$I -w -I DOCKER-USER 1 {match} -m comment --comment "$TAG" -j ACCEPT\n' for match in reversed(matches)
        )
        await self._run(_REMOVE_TAGGED + inserts)

    async def remove(self) -> None:
        """Remove the tagged rules; nothing happens (no container) when no marker file says there may be some."""
        if not os.path.exists(self.marker_file):
            return
        await self._run(_REMOVE_TAGGED)
        with suppress(FileNotFoundError):
            os.unlink(self.marker_file)

    async def _run(self, commands: str) -> str:
        await ensure_local_image(self.runtime, self.image, "the firewall helper (images.network_config)")
        script = f"TAG='{self.tag}'\n{_CHOOSE_IPTABLES}{commands}{_REPORT}"
        return await self.runtime.call(self._helper, script)

    def _helper(self, script: str) -> str:
        api = self.runtime.api
        name = sidecar_container_name(self.node_name, SIDECAR_NETWORK_CONFIG, self.purpose)
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
            status, output = run_once(api, created["Id"], timeout=120)
        if status != 0:
            raise ContainerError(
                f"{name} could not change the host's DOCKER-USER rules (exit code {status}): {last_lines(output)}"
            )
        return output
