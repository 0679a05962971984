"""SSH tunnels to a real sshd and linked operator containers, on a real algorithm network.

The SSH server is a test container on a network the test makes, with two web services on
its loopback that only a tunnel reaches. Algorithms are busybox containers without
capabilities on the node's network.
"""
from __future__ import annotations

from pathlib import Path

import attrs
import docker
import pytest

from tests.rig.egress import Outside, answers, fetch, other_host_key, probe, ssh_key_pair
from tests.rig.images import SIDECARS, SSHD_HOST, ensure_images, sidecar_images
from tests.rig.paths import image
from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.docker_service_linker import DockerServiceLinker
from v6node.adapters.docker.sidecars import SidecarLauncher
from v6node.adapters.ssh.docker_tunnel_manager import DockerTunnelManager
from v6node.domain.egress import ServiceLink, SshTunnelConfig
from v6node.domain.errors import ContainerNotFound, SidecarFailed

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module", autouse=True)
def images() -> dict[str, str]:
    ensure_images(["echo-algo", SSHD_HOST, SIDECARS])
    return sidecar_images()


@pytest.fixture
def sshd(outside: Outside, tmp_path: Path) -> tuple[str, str, Path]:
    """(alias, host key line, client key file) of a test SSH server that accepts that key."""
    key, public = ssh_key_pair(tmp_path, "client")
    alias = f"sshd-{outside.tag}"
    _, host_key = outside.sshd(alias, public)
    return alias, host_key, key


def tunnel(hostname: str, sshd: tuple[str, str, Path], dest_port: int, bind_port: int = 8000) -> SshTunnelConfig:
    alias, host_key, key = sshd
    return SshTunnelConfig(
        hostname=hostname, ssh_host=alias, username="tunnel", key_file=str(key), fingerprint=host_key,
        dest_ip="127.0.0.1", dest_port=dest_port, bind_port=bind_port,
    )


def manager(runtime: DockerContainerRuntime, node: str, outside: Outside, image_name: str) -> DockerTunnelManager:
    return DockerTunnelManager(SidecarLauncher(runtime, node, outside.name, ready_timeout=45), node, image_name)


async def test_two_tunnels_at_once_reach_their_own_services(
    runtime: DockerContainerRuntime, node: str, network: tuple[str, str], outside: Outside, firewall: None,
    sshd: tuple[str, str, Path], images: dict[str, str], docker_client: docker.DockerClient,
) -> None:
    tunnels = manager(runtime, node, outside, images["ssh-tunnel"])

    # The same port on both: each tunnel has its own container and address.
    one = await tunnels.start(tunnel("one", sshd, 8001), network[0])
    two = await tunnels.start(tunnel("two", sshd, 8002), network[0])

    output = probe(docker_client, network[0], fetch("http://one:8000/", "one") + fetch("http://two:8000/", "two"))
    assert answers(output) == {"one": "one", "two": "two"}, output
    assert one.name != two.name and one.address != two.address


async def test_a_wrong_fingerprint_fails_only_its_tunnel_and_says_so(
    runtime: DockerContainerRuntime, node: str, network: tuple[str, str], outside: Outside, firewall: None,
    sshd: tuple[str, str, Path], images: dict[str, str], docker_client: docker.DockerClient,
) -> None:
    tunnels = manager(runtime, node, outside, images["ssh-tunnel"])
    good = await tunnels.start(tunnel("good", sshd, 8001), network[0])

    with pytest.raises(SidecarFailed) as failed:
        await tunnels.start(attrs.evolve(tunnel("bad", sshd, 8002), fingerprint=other_host_key()), network[0])

    assert "host key does not match ssh.fingerprint" in failed.value.reason
    assert failed.value.what == "ssh tunnel 'bad'"
    assert answers(probe(docker_client, network[0], fetch("http://good:8000/", "good"))) == {"good": "one"}
    assert docker_client.api.inspect_container(good.container_id)["State"]["Running"]
    assert not docker_client.containers.list(all=True, filters={"name": f"vantage6-{node}-ssh-tunnel-bad"})


async def test_a_refused_key_fails_its_tunnel_and_says_so(
    runtime: DockerContainerRuntime, node: str, network: tuple[str, str], outside: Outside,
    sshd: tuple[str, str, Path], images: dict[str, str], tmp_path: Path,
) -> None:
    stranger, _ = ssh_key_pair(tmp_path, "stranger")
    refused = attrs.evolve(tunnel("refused", sshd, 8001), key_file=str(stranger))

    with pytest.raises(SidecarFailed, match="refused the key of user tunnel"):
        await manager(runtime, node, outside, images["ssh-tunnel"]).start(refused, network[0])


async def test_a_tunnel_whose_container_stops_is_seen_to_stop(
    runtime: DockerContainerRuntime, node: str, network: tuple[str, str], outside: Outside,
    sshd: tuple[str, str, Path], images: dict[str, str], docker_client: docker.DockerClient,
) -> None:
    tunnels = manager(runtime, node, outside, images["ssh-tunnel"])
    sidecar = await tunnels.start(tunnel("db", sshd, 8001), network[0])

    docker_client.api.kill(sidecar.container_id)
    ended = await tunnels.wait(sidecar)
    again = await tunnels.start(tunnel("db", sshd, 8001), network[0])

    assert ended.exit_code != 0
    assert again.address == sidecar.address  # the same place on the network as before


async def test_a_linked_container_is_reachable_by_its_alias_and_stays_after_unlinking(
    runtime: DockerContainerRuntime, network: tuple[str, str], firewall: None, docker_client: docker.DockerClient,
    outside: Outside,
) -> None:
    operator = docker_client.containers.run(
        image("echo-algo"), ["sh", "-c", "mkdir -p /tmp/w && echo operator-db > /tmp/w/index.html && "
                             "exec httpd -f -p 5432 -h /tmp/w"],
        detach=True, name=f"v6t-operator-{outside.tag}", labels={"v6node.test": outside.tag},
    )
    outside.containers.append(operator.id)
    linker = DockerServiceLinker(runtime)
    service = ServiceLink(container=operator.name, aliases=("db", "warehouse"))

    linked = await linker.link(service, network[0])
    again = await linker.link(service, network[0])  # idempotent: kept as it is
    before = probe(docker_client, network[0], fetch("http://db:5432/", "db") + fetch("http://warehouse:5432/", "warehouse"))
    await linker.unlink(service, network[0])
    await linker.unlink(service, network[0])
    after = probe(docker_client, network[0], fetch("http://db:5432/", "db"))

    assert answers(before) == {"db": "operator-db", "warehouse": "operator-db"}, before
    assert again == linked and linked.running
    assert answers(after)["db"].startswith("failed"), after
    operator.reload()
    assert operator.status == "running" and network[0] not in operator.attrs["NetworkSettings"]["Networks"]


async def test_linking_a_container_that_does_not_exist_is_an_error(
    runtime: DockerContainerRuntime, network: tuple[str, str]
) -> None:
    with pytest.raises(ContainerNotFound, match="no container named 'v6t-nobody'"):
        await DockerServiceLinker(runtime).link(ServiceLink("v6t-nobody", ("db",)), network[0])
