"""What the node writes for its sidecars, the whitelist's warnings and the service range, as pure functions."""
from __future__ import annotations

import attrs
import pytest

from v6node.adapters.docker.networks import free_service_address, service_range
from v6node.adapters.squid.docker_whitelist_proxy import squid_conf
from v6node.adapters.ssh.docker_tunnel_manager import diagnose, known_hosts, ssh_config
from v6node.domain.egress import SshTunnelConfig, WhitelistConfig, egress_environment, whitelist_warnings
from v6node.domain.errors import ContainerError

TUNNEL = SshTunnelConfig(
    hostname="db", ssh_host="ssh.example.org", username="tunnel", key_file="/k.pem",
    fingerprint="ssh-ed25519 AAAAkey", dest_ip="127.0.0.1", dest_port=5432, bind_port=8000,
)


def test_squid_allows_ports_then_domains_and_ips_and_refuses_the_rest() -> None:
    conf = squid_conf(WhitelistConfig(domains=(".example.org",), ips=("10.0.0.0/24",), ports=(443, 8443)), "alpha")
    rules = [line for line in conf.splitlines() if line.startswith(("acl", "http_access"))]
    assert rules == [
        "http_access deny to_localhost",
        "acl v6node_link_local dst 169.254.0.0/16 fe80::/10",
        "http_access deny v6node_link_local",
        "acl v6node_ports port 443 8443",
        "http_access deny !v6node_ports",
        "http_access deny CONNECT !v6node_ports",
        "acl v6node_domains dstdomain .example.org",
        "http_access allow v6node_domains",
        "acl v6node_ips dst 10.0.0.0/24",
        "http_access allow v6node_ips",
        "http_access deny all",
    ]
    assert "http_port" not in conf  # Debian's squid.conf, which includes this file, listens on 3128


def test_a_single_domain_is_allowed_and_no_ports_refuses_everything() -> None:
    # The reference's template allows domains and IPs only when there are two or more.
    assert "http_access allow v6node_domains" in squid_conf(WhitelistConfig(domains=("a.org",), ports=(443,)), "n")
    refused = squid_conf(WhitelistConfig(domains=("a.org",)), "n")
    assert "allow" not in refused and refused.count("http_access deny all") == 1


@pytest.mark.parametrize(
    ("whitelist", "expected"),
    [
        (WhitelistConfig(domains=("a.org",), ports=(443,)), []),
        (WhitelistConfig(ports=(443,)), ["names no domain and no IP"]),
        (WhitelistConfig(domains=("a.org",)), ["whitelist.ports is empty"]),
        (WhitelistConfig(domains=("a.org",), ports=(80, 443)), ["also reachable on port(s) 80"]),
        (WhitelistConfig(ips=("8.8.8.8", "192.168.1.0/24"), ports=(443,)), ["8.8.8.8 is outside the private ranges"]),
    ],
)
def test_the_references_safety_warnings(whitelist: WhitelistConfig, expected: list[str]) -> None:
    warnings = whitelist_warnings(whitelist)
    assert len(warnings) == len(expected)
    for warning, part in zip(warnings, expected):
        assert part in warning


def test_algorithms_get_the_proxy_variables_only_with_squid() -> None:
    assert egress_environment(False, "172.20.0.1", ("db",)) == {}
    env = egress_environment(True, "172.20.0.1", ("db", "pg"))
    assert {env[k] for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")} == {"http://squid:3128"}
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,172.20.0.1,proxyserver,db,pg"


def test_the_ssh_config_forwards_on_the_tunnels_own_address_with_strict_host_key_checking() -> None:
    config = ssh_config(TUNNEL, "172.20.255.253")
    assert config.splitlines()[1] == "Host ssh.example.org"
    options = dict(line.split(" ", 1) for line in (l.strip() for l in config.splitlines()[2:]))
    assert options["LocalForward"] == "172.20.255.253:8000 127.0.0.1:5432"
    assert options["StrictHostKeyChecking"] == "yes" and options["PasswordAuthentication"] == "no"
    assert options["IdentityFile"] == "/root/.ssh/db.pem" and options["ExitOnForwardFailure"] == "yes"


def test_known_hosts_names_a_non_standard_port_as_ssh_looks_it_up() -> None:
    assert known_hosts(TUNNEL) == "ssh.example.org ssh-ed25519 AAAAkey\n"
    assert known_hosts(attrs.evolve(TUNNEL, ssh_port=2222)) == "[ssh.example.org]:2222 ssh-ed25519 AAAAkey\n"


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("Host key verification failed.", "host key does not match ssh.fingerprint"),
        ("tunnel@ssh.example.org: Permission denied (publickey).", "refused the key of user tunnel"),
        ("ssh: Could not resolve hostname ssh.example.org: Name or service not known", "cannot be resolved"),
        ("Load key \"/root/.ssh/db.pem\": invalid format", "cannot read the private key"),
        ("ssh: connect to host ssh.example.org port 22: Connection refused", None),  # may pass: it is retried
    ],
)
def test_what_ssh_says_becomes_a_reason(output: str, reason: str | None) -> None:
    found = diagnose(TUNNEL, output)
    assert (found is None) if reason is None else (found is not None and reason in found)


def _network(subnet: str, ip_range: str | None, used: tuple[str, ...] = ()) -> dict[str, object]:
    config = {"Subnet": subnet, "Gateway": subnet.rsplit(".", 2)[0] + ".0.1"}
    if ip_range:
        config["IPRange"] = ip_range
    containers = {str(i): {"IPv4Address": f"{address}/20"} for i, address in enumerate(used)}
    return {"Name": "n", "IPAM": {"Config": [config]}, "Containers": containers}


def test_the_service_range_is_the_upper_half_the_engine_never_hands_out() -> None:
    assert str(service_range(_network("192.168.240.0/20", "192.168.240.0/21"))) == "192.168.248.0/21"
    assert service_range(_network("192.168.240.0/20", None)) is None  # made by an older v6node


def test_sidecars_take_service_addresses_from_the_top_and_links_from_the_bottom() -> None:
    network = _network("172.20.0.0/16", "172.20.0.0/17", used=("172.20.255.254",))
    assert free_service_address(network) == "172.20.255.253"
    assert free_service_address(network, preferred="172.20.200.1") == "172.20.200.1"
    assert free_service_address(network, preferred="172.20.255.254") == "172.20.255.253"  # taken
    assert free_service_address(network, from_top=False) == "172.20.128.1"
    with pytest.raises(ContainerError, match="no service range"):
        free_service_address(_network("172.20.0.0/16", None))
