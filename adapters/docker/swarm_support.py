"""Beside the jobs: the node's overlay network, the relay to its proxy, and job volumes on shared storage.

Measured on the rig (tests/rig/swarm.py): a task on an ``--internal`` overlay has one route,
its overlay subnet; the overlay's gateway address refuses connections (it is no host's
address) and the node's host is unreachable ("Network is unreachable"). So the node's proxy
is reached through a relay: a container on the manager's engine attached to the overlay
(which is ``--attachable`` for this) under the aliases ``RELAY_ALIAS`` and ``proxyserver``
(the reference's name) and to a local bridge of the manager, forwarding TCP to the address
where the proxy listens. A task on any host resolves the alias with the overlay's DNS and
reached the proxy through it in every try.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from contextlib import suppress
from pathlib import Path
from typing import Any

import docker
import docker.errors

from v6node.adapters.docker.errors import docker_errors, status_code
from v6node.domain.containers import LABEL_TYPE
from v6node.domain.errors import ContainerError
from v6node.domain.proxy_alias import PROXY_ALIAS

log = logging.getLogger(__name__)

RELAY_ALIAS = "v6node-proxy"
RELAY_TYPE = "proxy-relay"  # its vantage6-type label
LABEL_RELAY_TARGET = "v6node.relay-target"
MiB = 1024 * 1024


def _network_named(api: docker.APIClient, name: str) -> dict[str, Any] | None:
    for summary in api.networks(names=[name]):  # the engine's name filter matches substrings
        if summary["Name"] == name:
            return api.inspect_network(summary["Id"])
    return None


def ensure_overlay(api: docker.APIClient, name: str, labels: dict[str, str]) -> None:
    """The node's algorithm network: an overlay with no route out that the relay may join."""
    with docker_errors(f"network {name}"):
        network = _network_named(api, name)
        wanted = network is not None and network.get("Driver") == "overlay" and network.get("Internal") and network.get("Attachable")
        if network is not None and not wanted:
            if network.get("Containers"):
                raise ContainerError(f"network {name} exists with other settings and is in use; remove it")
            log.warning("network %s is not an internal attachable overlay; re-creating it", name)
            api.remove_network(network["Id"])
            network = None
        if network is None:
            try:
                api.create_network(
                    name, driver="overlay", internal=True, attachable=True, labels=labels, check_duplicate=True
                )
            except docker.errors.APIError as exc:
                if status_code(exc) != 409:
                    raise


def ensure_relay_network(api: docker.APIClient, name: str, labels: dict[str, str]) -> str:
    """A local bridge of the manager for the relay alone; returns its gateway (the manager host)."""
    with docker_errors(f"network {name}"):
        network = _network_named(api, name)
        if network is None:
            try:
                api.create_network(name, driver="bridge", labels=labels, check_duplicate=True)
            except docker.errors.APIError as exc:
                if status_code(exc) != 409:  # 409: made meanwhile by another call
                    raise
            network = _network_named(api, name)
        if network is None:
            raise ContainerError(f"network {name} was created but cannot be found")
    for config in (network.get("IPAM") or {}).get("Config") or []:
        if config.get("Gateway"):
            return str(config["Gateway"])
    raise ContainerError(f"network {name} has no gateway address")


def ensure_relay(
    api: docker.APIClient, overlay: str, bridge: str, target: tuple[str, int], labels: dict[str, str], image: str
) -> tuple[str, int]:
    """The relay container (busybox ``nc``, one forwarder per connection); re-made when its target changed."""
    host, port = target
    name = f"{overlay}-proxy"
    wanted = f"{host}:{port}"
    with docker_errors(f"proxy relay {name}"):
        with suppress(docker.errors.NotFound):
            found = api.inspect_container(name)
            if found["Config"]["Labels"].get(LABEL_RELAY_TARGET) == wanted and found["State"].get("Running"):
                return RELAY_ALIAS, port
            api.remove_container(found["Id"], force=True)
        host_config = api.create_host_config(
            network_mode=bridge, restart_policy={"Name": "always"}, cap_drop=["ALL"],
            security_opt=["no-new-privileges"], read_only=True, pids_limit=512, mem_limit=64 * MiB,
        )
        created = api.create_container(
            image,
            command=["nc", "-ll", "-p", str(port), "-e", "nc", host, str(port)],
            name=name,
            labels={**labels, LABEL_TYPE: RELAY_TYPE, LABEL_RELAY_TARGET: wanted},
            host_config=host_config,
            networking_config=api.create_networking_config({bridge: api.create_endpoint_config()}),
        )
        try:
            api.connect_container_to_network(created["Id"], overlay, aliases=[RELAY_ALIAS, PROXY_ALIAS])
            api.start(created["Id"])
        except docker.errors.DockerException:
            with suppress(docker.errors.DockerException):
                api.remove_container(created["Id"], force=True)
            raise
    return RELAY_ALIAS, port


class SharedVolumes:
    """A job's volume as a folder on the shared storage, so the job's runs see it on any host.

    ``<root>/<name>/`` is mounted; ``<root>/<name>.labels.json`` keeps its labels.
    """

    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def source(self, name: str) -> str:
        return str(self.root / name)

    def ensure(self, name: str, labels: dict[str, str]) -> None:
        (self.root / name).mkdir(parents=True, exist_ok=True, mode=0o700)
        meta = self.root / f"{name}.labels.json"
        if not meta.exists():
            tmp = meta.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(labels))
            tmp.replace(meta)

    def remove(self, name: str) -> bool:
        """True when it was there."""
        meta = self.root / f"{name}.labels.json"
        existed = meta.exists() or (self.root / name).exists()
        shutil.rmtree(self.root / name, ignore_errors=True)
        meta.unlink(missing_ok=True)
        return existed

    def names(self, labels: dict[str, str]) -> list[str]:
        if not self.root.is_dir():
            return []
        found = []
        for meta in self.root.glob("*.labels.json"):
            with suppress(OSError, ValueError):
                if labels.items() <= json.loads(meta.read_text()).items():
                    found.append(meta.name[: -len(".labels.json")])
        return sorted(found)
