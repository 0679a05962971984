"""A real OpenVPN server for the VPN tests, with a throw-away PKI, on a network the test creates.

The image (``vpn-server``) is Debian's openvpn and easy-rsa. The PKI (an EC CA, the
server's certificate and one per client) is made with easy-rsa in a container into a
volume of the test's own, and lives as long as the server. The server routes between its
clients (``client-to-client``), as a vantage6 VPN server does between stations; clients
reach it by its alias on the test's network, which is the nodes' ``sidecar_network``.
Nothing leaves the machine.
"""
from __future__ import annotations

import uuid

import docker
import docker.errors

from tests.rig.egress import TEST_LABEL
from tests.rig.paths import image

VPN_SERVER_IMAGE = image("vpn-server")
SUBNET = "10.76.0.0/16"
_EASYRSA = "EASYRSA_BATCH=1 EASYRSA_ALGO=ec EASYRSA_CURVE=prime256v1 EASYRSA_PKI=/v/pki /usr/share/easy-rsa/easyrsa"


class Pki:
    """An EC certificate authority made with easy-rsa, in a volume of the test's own."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.tag = uuid.uuid4().hex[:8]
        self.volume = client.volumes.create(f"v6t-vpn-pki-{self.tag}", labels={TEST_LABEL: self.tag})
        self._easyrsa(f"{_EASYRSA} init-pki >/dev/null && {_EASYRSA} --req-cn=v6test-ca-{self.tag} build-ca nopass >/dev/null 2>&1")

    def _easyrsa(self, script: str) -> str:
        output = self.client.containers.run(
            VPN_SERVER_IMAGE, ["sh", "-c", f"set -e; {script}"], remove=True, labels={TEST_LABEL: self.tag},
            volumes={self.volume.name: {"bind": "/v", "mode": "rw"}}, network_mode="none",
        )
        return bytes(output).decode()

    def issue_server(self) -> None:
        self._easyrsa(f"{_EASYRSA} build-server-full server nopass >/dev/null 2>&1")

    def client_pems(self, name: str) -> str:
        """A client certificate for ``name``: the CA, the certificate and its key as inline blocks."""
        return self._easyrsa(
            f"{_EASYRSA} build-client-full {name} nopass >/dev/null 2>&1; "
            "echo '<ca>'; cat /v/pki/ca.crt; echo '</ca>'; echo '<cert>'; "
            f"sed -n '/BEGIN CERTIFICATE/,/END CERTIFICATE/p' /v/pki/issued/{name}.crt; echo '</cert>'; "
            f"echo '<key>'; cat /v/pki/private/{name}.key; echo '</key>'"
        )

    def close(self) -> None:
        self.volume.remove(force=True)


def client_config(alias: str, pems: str) -> str:
    """A client configuration for the server at ``alias``, with CRLF line ends as the server sends it."""
    settings = (
        "client", "dev tun", "proto udp", f"remote {alias} 1194", "nobind", "remote-cert-tls server",
        "connect-retry 1", "verb 3",
    )
    return "\r\n".join(settings) + "\r\n" + pems.replace("\n", "\r\n")


class VpnServer:
    """``VpnServer(client, network)`` makes its PKI and starts; ``client_config(name)`` is a
    client's configuration as ``GET vpn`` would give it; ``close()`` removes everything."""

    def __init__(self, client: docker.DockerClient, network: str, subnet: str = SUBNET) -> None:
        self.client = client
        self.network = network
        self.subnet = subnet
        self.pki = Pki(client)
        self.tag = self.pki.tag
        self.alias = f"vpnserver-{self.tag}"
        self.container: docker.models.containers.Container | None = None
        self.pki.issue_server()
        self.start()

    def start(self) -> None:
        network, mask = self.subnet.split("/")
        netmask = ".".join(str((0xFFFFFFFF << (32 - int(mask)) >> shift) & 0xFF) for shift in (24, 16, 8, 0))
        api = self.client.api
        created = api.create_container(
            VPN_SERVER_IMAGE,
            [
                "openvpn", "--port", "1194", "--proto", "udp", "--dev", "tun", "--topology", "subnet",
                "--server", network, netmask, "--client-to-client", "--keepalive", "5", "20",
                "--ca", "/v/pki/ca.crt", "--cert", "/v/pki/issued/server.crt", "--key", "/v/pki/private/server.key",
                "--dh", "none", "--verb", "3",
            ],
            name=f"v6t-vpnserver-{self.tag}", labels={TEST_LABEL: self.tag},
            host_config=api.create_host_config(
                network_mode=self.network, cap_add=["NET_ADMIN"], devices=["/dev/net/tun"],
                binds={self.pki.volume.name: {"bind": "/v", "mode": "ro"}},
            ),
            networking_config=api.create_networking_config(
                {self.network: api.create_endpoint_config(aliases=[self.alias])}
            ),
        )
        api.start(created["Id"])
        self.container = self.client.containers.get(created["Id"])

    def client_config(self, name: str) -> str:
        return client_config(self.alias, self.pki.client_pems(name))

    def stale_client_config(self) -> str:
        """A configuration for this server whose certificates another CA issued."""
        other = Pki(self.client)
        try:
            return client_config(self.alias, other.client_pems("stale"))
        finally:
            other.close()

    def logs(self) -> str:
        return self.container.logs().decode("utf-8", "replace") if self.container is not None else ""

    def close(self) -> None:
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except docker.errors.NotFound:
                pass
        self.pki.close()
