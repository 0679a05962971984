"""``whitelist``, ``ssh-tunnels``, ``docker_services``, ``images`` and ``node_extra_hosts`` of the node YAML."""
from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from v6node.app.config import load_config
from v6node.domain.egress import (
    DEFAULT_NETWORK_CONFIG_IMAGE,
    DEFAULT_SQUID_IMAGE,
    DEFAULT_SSH_TUNNEL_IMAGE,
    EgressConfig,
    ServiceLink,
    WhitelistConfig,
)
from v6node.domain.errors import ConfigError

BASE = """\
api_key: 6b1b1b6e-0d8c-4d5f-9a55-0f6b6c4f4b9a
server_url: http://localhost
port: 7601
api_path: /api
"""
FINGERPRINT = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def load(tmp_path: Path, text: str) -> EgressConfig:
    (tmp_path / "keys").mkdir(exist_ok=True)
    key = tmp_path / "keys" / "tunnel.pem"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n...\n")
    key.chmod(0o600)
    path = tmp_path / "alpha.yaml"
    path.write_text(BASE + textwrap.dedent(text))
    return load_config(path, default_data_dir=str(tmp_path / "data")).egress


def tunnel_yaml(hostname: str = "db", key: str = "keys/tunnel.pem", fingerprint: str = FINGERPRINT) -> str:
    return f"""\
  - hostname: {hostname}
    ssh:
      host: ssh.example.org
      port: 2222
      fingerprint: "{fingerprint}"
      identity:
        username: tunnel
        key: {key}
    tunnel:
      bind:
        ip: 0.0.0.0
        port: 8000
      dest:
        ip: 127.0.0.1
        port: 5432
"""


def test_nothing_configured_means_no_egress(tmp_path: Path) -> None:
    egress = load(tmp_path, "")
    assert egress == EgressConfig()
    assert not egress.has_services


def test_the_reference_whitelist_loads(tmp_path: Path) -> None:
    egress = load(tmp_path, """\
        whitelist:
          domains: [google.com, .github.com, host.docker.internal]
          ips: [172.17.0.1, 10.0.0.0/8]
          ports: [443]
        """)
    assert egress.whitelist == WhitelistConfig(
        domains=("google.com", ".github.com", "host.docker.internal"), ips=("172.17.0.1", "10.0.0.0/8"), ports=(443,)
    )
    assert egress.has_services


@pytest.mark.parametrize(
    ("whitelist", "key", "problem"),
    [
        ("whitelist: [google.com]", "whitelist", "expected a mapping"),
        ("whitelist: {domain: [google.com]}", "whitelist.domain", "unknown key"),
        ("whitelist: {domains: ['http://google.com']}", "whitelist.domains[0]", "domain name"),
        ("whitelist: {ips: [10.0.0.300]}", "whitelist.ips[0]", "IP address or network"),
        ("whitelist: {ports: [443, 70000]}", "whitelist.ports[1]", "port number"),
        ("whitelist: {ports: ['https']}", "whitelist.ports[0]", "port number"),
        ("whitelist: {ports: 443}", "whitelist.ports", "list of port numbers"),
    ],
)
def test_a_malformed_whitelist_is_a_config_error_naming_the_key(
    tmp_path: Path, whitelist: str, key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, whitelist + "\n")
    assert error.value.key == key and problem in error.value.problem
    assert str(error.value).startswith(str(tmp_path / "alpha.yaml"))


def test_ssh_tunnels_load_with_the_key_resolved_next_to_the_config(tmp_path: Path) -> None:
    egress = load(tmp_path, "ssh-tunnels:\n" + tunnel_yaml("db") + tunnel_yaml("warehouse"))
    db, warehouse = egress.tunnels
    assert (db.hostname, db.ssh_host, db.ssh_port, db.username) == ("db", "ssh.example.org", 2222, "tunnel")
    assert (db.bind_port, db.dest_ip, db.dest_port) == (8000, "127.0.0.1", 5432)
    assert db.key_file == str(tmp_path / "keys" / "tunnel.pem")
    assert warehouse.hostname == "warehouse"
    assert FINGERPRINT not in repr(db)  # config values are logged; the host key is not a secret, but long


@pytest.mark.parametrize(
    ("entry", "key", "problem"),
    [
        (tunnel_yaml("db", key="keys/missing.pem"), "ssh-tunnels[0].ssh.identity.key", "no private key file"),
        (tunnel_yaml("db", fingerprint="AAAAC3Nza"), "ssh-tunnels[0].ssh.fingerprint", "'<type> <base64>'"),
        (tunnel_yaml("squid"), "ssh-tunnels[0].hostname", "whitelist proxy's name"),
        (tunnel_yaml("my_db"), "ssh-tunnels[0].hostname", "host name"),
        (tunnel_yaml("db") + tunnel_yaml("db"), "ssh-tunnels[1].hostname", "already the name of 'ssh-tunnels[0].hostname'"),
        (tunnel_yaml("db").replace("        port: 5432\n", ""), "ssh-tunnels[0].tunnel.dest.port", "is required"),
        (tunnel_yaml("db").replace("port: 8000", "port: 0"), "ssh-tunnels[0].tunnel.bind.port", "from 1 to 65535"),
    ],
)
def test_a_malformed_tunnel_is_a_config_error_naming_the_key(tmp_path: Path, entry: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, "ssh-tunnels:\n" + entry)
    assert error.value.key == key and problem in error.value.problem


def test_docker_services_group_aliases_by_container(tmp_path: Path) -> None:
    egress = load(tmp_path, "docker_services:\n  db: my-postgres\n  warehouse: my-postgres\n  cache: redis\n")
    assert egress.services == (ServiceLink("my-postgres", ("db", "warehouse")), ServiceLink("redis", ("cache",)))
    assert egress.aliases == ("db", "warehouse", "cache")


def test_a_service_alias_may_not_be_a_tunnel_hostname(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, "ssh-tunnels:\n" + tunnel_yaml("db") + "docker_services:\n  db: my-postgres\n")
    assert error.value.key == "docker_services.db" and "ssh-tunnels[0].hostname" in error.value.problem


def test_images_accept_both_spellings_of_the_tunnel_key(tmp_path: Path) -> None:
    assert load(tmp_path, "images: {ssh_tunnel: mine/tunnel:1}\n").images.ssh_tunnel == "mine/tunnel:1"
    images = load(tmp_path, "images: {ssh-tunnel: mine/tunnel:2, squid: mine/squid:2, node: ignored}\n").images
    assert (images.ssh_tunnel, images.squid, images.network_config) == (
        "mine/tunnel:2", "mine/squid:2", DEFAULT_NETWORK_CONFIG_IMAGE
    )
    with pytest.raises(ConfigError, match="either images.ssh-tunnel or images.ssh_tunnel"):
        load(tmp_path, "images: {ssh-tunnel: a, ssh_tunnel: b}\n")


def test_the_default_images_are_the_references(tmp_path: Path) -> None:
    images = load(tmp_path, "").images
    assert images.squid == DEFAULT_SQUID_IMAGE == "harbor2.vantage6.ai/infrastructure/squid:4.15"
    assert images.ssh_tunnel == DEFAULT_SSH_TUNNEL_IMAGE == "harbor2.vantage6.ai/infrastructure/ssh-tunnel:4.15"


def test_node_extra_hosts_and_the_sidecar_network(tmp_path: Path) -> None:
    egress = load(tmp_path, "node_extra_hosts:\n  host.docker.internal: host-gateway\n  db.lan: 10.1.2.3\n"
                            "sidecar_network: dmz\nsidecar_ready_timeout: 5\n")
    assert egress.extra_hosts == (("host.docker.internal", "host-gateway"), ("db.lan", "10.1.2.3"))
    assert (egress.sidecar_network, egress.ready_timeout) == ("dmz", 5.0)
    with pytest.raises(ConfigError) as error:
        load(tmp_path, "node_extra_hosts:\n  db.lan: somewhere\n")
    assert error.value.key == "node_extra_hosts.db.lan"


def test_egress_keys_are_known_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        load(tmp_path, "whitelist: {ports: [443]}\nsidecar_network: bridge\ndocker_services: {}\n")
    assert "unknown key" not in caplog.text
