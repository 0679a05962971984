"""Squid as the whitelist proxy, on a real internal network with inter-container traffic off.

The "internet" is a bridge network the test makes, with web servers on it; Squid reaches it
as its sidecar network. Algorithms are busybox containers without capabilities on the
node's network, as the node runs them.
"""
from __future__ import annotations

from pathlib import Path

import docker
import pytest

from tests.rig.egress import Outside, answers, docker_user_rules, fetch, probe
from tests.rig.images import SIDECARS, ensure_images, sidecar_images
from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.docker_service_firewall import DockerServiceFirewall, firewall_tag
from v6node.adapters.docker.sidecars import SidecarLauncher
from v6node.adapters.squid.docker_whitelist_proxy import DockerWhitelistProxy
from v6node.domain.egress import WhitelistConfig, egress_environment
from v6node.domain.errors import SidecarFailed

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module", autouse=True)
def images() -> dict[str, str]:
    ensure_images(["echo-algo", SIDECARS])
    return sidecar_images()


def squid(runtime: DockerContainerRuntime, node: str, outside: Outside, image: str) -> DockerWhitelistProxy:
    return DockerWhitelistProxy(SidecarLauncher(runtime, node, outside.name, ready_timeout=60), node, image)


async def test_algorithms_reach_exactly_the_whitelist_through_squid(
    runtime: DockerContainerRuntime, node: str, network: tuple[str, str], outside: Outside,
    firewall: DockerServiceFirewall, images: dict[str, str], docker_client: docker.DockerClient,
) -> None:
    name = f"data-{outside.tag}.example.test"
    outside.web(name, "by-name")
    by_ip = outside.web(f"ip-{outside.tag}", "by-ip")
    other = outside.web(f"other-{outside.tag}.example.test", "secret")
    whitelist = WhitelistConfig(domains=(name,), ips=(by_ip,), ports=(80,))

    sidecar = await squid(runtime, node, outside, images["squid"]).start(whitelist, network[0])

    env = egress_environment(True, network[1], ())  # as the node gives them (before encoding)
    output = probe(
        docker_client, network[0],
        fetch(f"http://{name}/", "name") + fetch(f"http://{by_ip}/", "ip")
        + fetch(f"http://other-{outside.tag}.example.test/", "host") + fetch(f"http://{other}/", "host-ip")
        + fetch(f"http://{name}:8080/", "port") + f"unset http_proxy; {fetch(f'http://{by_ip}/', 'direct')}",
        env=env,
    )
    lines = answers(output)
    assert lines["name"] == "by-name" and lines["ip"] == "by-ip", output
    for refused in ("host", "host-ip", "port"):
        assert "403 Forbidden" in lines[refused], output
    assert lines["direct"].startswith("failed"), output  # no way out without the proxy
    assert (sidecar.alias, sidecar.port) == ("squid", 3128)


async def test_squid_is_reachable_but_algorithms_still_cannot_reach_each_other(
    runtime: DockerContainerRuntime, node: str, network: tuple[str, str], outside: Outside,
    firewall: DockerServiceFirewall, images: dict[str, str], docker_client: docker.DockerClient,
) -> None:
    await squid(runtime, node, outside, images["squid"]).start(WhitelistConfig(ports=(80,)), network[0])
    peer = docker_client.containers.run(
        "127.0.0.1:5999/echo-algo:1", ["sh", "-c", "mkdir -p /tmp/w && echo peer > /tmp/w/index.html && "
                                        "exec httpd -f -p 80 -h /tmp/w"],
        detach=True, network=network[0], labels={"v6node.node": node},
    )
    peer.reload()
    peer_ip = peer.attrs["NetworkSettings"]["Networks"][network[0]]["IPAddress"]

    output = probe(docker_client, network[0], "echo | nc -w 5 squid 3128 >/dev/null && echo 'squid: open'; " + fetch(f"http://{peer_ip}/", "peer"))

    lines = answers(output)
    assert lines["squid"] == "open", output
    assert lines["peer"].startswith("failed"), output


async def test_the_firewall_exception_is_two_tagged_rules_that_go_away_again(
    runtime: DockerContainerRuntime, node: str, network: tuple[str, str], images: dict[str, str], tmp_path: Path
) -> None:
    tag = firewall_tag(node)
    # Without other nodes' tagged rules: suites running at the same time add and remove theirs.
    before = [rule for rule in docker_user_rules(node) if tag not in rule]
    firewall = DockerServiceFirewall(runtime, node, images["network_config"], str(tmp_path / "marker"))

    await firewall.open(network[0])
    await firewall.open(network[0])  # again: replaces, does not add
    made = [rule for rule in docker_user_rules() if tag in rule]
    await firewall.close()
    await firewall.close()  # nothing left: a no-op

    assert len(made) == 2 and all("ACCEPT" in rule for rule in made), made
    assert [rule for rule in docker_user_rules() if tag in rule] == []
    assert [rule for rule in docker_user_rules(node) if tag not in rule] == before


async def test_a_squid_that_cannot_start_says_why(
    runtime: DockerContainerRuntime, node: str, network: tuple[str, str], images: dict[str, str]
) -> None:
    proxy = DockerWhitelistProxy(SidecarLauncher(runtime, node, "v6t-no-such-network"), node, images["squid"])

    with pytest.raises(SidecarFailed, match="sidecar network 'v6t-no-such-network' does not exist"):
        await proxy.start(WhitelistConfig(ports=(443,)), network[0])
