"""Test hosts for the egress tests: a network the tests create (their "internet"), web servers
and an SSH server on it, SSH keys, an algorithm-like probe, and a look at the host's DOCKER-USER rules.

Nothing here reaches beyond the machine: the hosts are containers on networks made here.
"""
from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

import docker
import docker.errors
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from tests.rig.paths import image

BUSYBOX = image("echo-algo")  # any busybox image: sh, httpd, wget, nc
SSHD = image("sshd-host")
TEST_LABEL = "v6node.test"


def ssh_key_pair(folder: Path, name: str) -> tuple[Path, str]:
    """An ed25519 private key file (0600, OpenSSH format) and its public key line."""
    key = Ed25519PrivateKey.generate()
    path = folder / f"{name}.key"
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
    path.chmod(0o600)
    return path, key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def other_host_key() -> str:
    """A host key line that is not the test SSH server's (for the wrong fingerprint)."""
    return Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


class Outside:
    """A bridge network of the test's own, where the test hosts live; the node's sidecars
    reach out through it (``sidecar_network``)."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.tag = uuid.uuid4().hex[:8]
        self.network = client.networks.create(f"v6t-out-{self.tag}", driver="bridge", labels={TEST_LABEL: self.tag})
        self.containers: list[str] = []

    @property
    def name(self) -> str:
        return str(self.network.name)

    def _run(self, image_name: str, alias: str, command: list[str] | None, env: dict[str, str] | None = None) -> str:
        api = self.client.api
        created = api.create_container(
            image_name, command, name=f"v6t-{alias}-{self.tag}", labels={TEST_LABEL: self.tag}, environment=env or {},
            host_config=api.create_host_config(network_mode=self.name),
            networking_config=api.create_networking_config({self.name: api.create_endpoint_config(aliases=[alias])}),
        )
        self.containers.append(created["Id"])
        api.start(created["Id"])
        return str(created["Id"])

    def address(self, container_id: str) -> str:
        attrs = self.client.api.inspect_container(container_id)
        return str(attrs["NetworkSettings"]["Networks"][self.name]["IPAddress"])

    def web(self, alias: str, body: str) -> str:
        """A web server answering ``body`` on ports 80 and 8080; returns its address."""
        script = (
            f"mkdir -p /tmp/www && echo '{body}' > /tmp/www/index.html && "
            "httpd -p 8080 -h /tmp/www && exec httpd -f -p 80 -h /tmp/www"
        )
        return self.address(self._run(BUSYBOX, alias, ["sh", "-c", script]))

    def sshd(self, alias: str, authorized_key: str) -> tuple[str, str]:
        """The test SSH server (user ``tunnel``), its web services on its loopback at 8001
        ("one") and 8002 ("two"); returns its address and host key line."""
        container_id = self._run(SSHD, alias, None, {"AUTHORIZED_KEY": authorized_key})
        container = self.client.containers.get(container_id)
        host_key = container.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).output.decode().split()
        return self.address(container_id), f"{host_key[0]} {host_key[1]}"

    def close(self) -> None:
        for container_id in self.containers:
            try:
                self.client.api.remove_container(container_id, force=True)
            except docker.errors.NotFound:
                pass
        # The node's sidecars may still be attached (the node's own clean-up removes them).
        for attached in self.client.api.inspect_network(self.network.id).get("Containers") or {}:
            try:
                self.client.api.disconnect_container_from_network(attached, self.network.id, force=True)
            except docker.errors.NotFound:
                pass
        self.network.remove()


def probe(client: docker.DockerClient, network: str, script: str, env: dict[str, str] | None = None,
          labels: dict[str, str] | None = None) -> str:
    """Run ``script`` in a busybox container on ``network`` like an algorithm (no capabilities)
    and return its output."""
    container = client.containers.create(
        BUSYBOX, ["sh", "-c", script], network=network, environment=env or {}, labels=labels or {},
        cap_drop=["ALL"], security_opt=["no-new-privileges"],
    )
    try:
        container.start()
        container.wait(timeout=120)
        return str(container.logs(stdout=True, stderr=True).decode())
    finally:
        container.remove(force=True)


def fetch(url: str, name: str) -> str:
    """A line of shell that prints ``name: <first line of the answer>`` or ``name: failed: <why>``."""
    return (
        f"r=$(timeout 10 wget -qO- {url} 2>&1) || r=\"failed: ${{r:-timed out}}\"; "
        f"echo \"{name}: $(echo \"$r\" | head -n 1)\"; "
    )


def answers(output: str) -> dict[str, str]:
    """The ``name: answer`` lines of a probe's output (the shell's own lines left out)."""
    return dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)  # type: ignore[misc]


def docker_user_rules(node: str | None = None) -> list[str]:
    """The host's DOCKER-USER chain (the tests run as root, as scripts/setup-rig does). With
    ``node``, without the rules tagged for other nodes: nodes of tests running at the same
    time on the machine's engine (other sessions) add and remove theirs."""
    done = subprocess.run(["iptables", "-w", "-S", "DOCKER-USER"], capture_output=True, text=True, check=True)
    rules = done.stdout.splitlines()
    if node is None:
        return rules
    return [rule for rule in rules if not _NODE_TAG.search(rule) or f"v6node:{node}:services" in rule]


_NODE_TAG = re.compile(r"v6node:[^:\s\"]+:services")
