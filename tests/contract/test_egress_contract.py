"""WhitelistProxy, TunnelManager, ServiceLinker and ServiceFirewall: one suite for the memory
adapters and the Docker ones (real dockerd, real Squid, a real sshd on a test network)."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import attrs
import docker
import pytest

from tests.rig.egress import Outside, other_host_key, ssh_key_pair
from tests.rig.images import SIDECARS, SSHD_HOST, ensure_images, sidecar_images
from tests.rig.paths import image
from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.docker_service_firewall import DockerServiceFirewall
from v6node.adapters.docker.docker_service_linker import DockerServiceLinker
from v6node.adapters.docker.sidecars import SidecarLauncher
from v6node.adapters.memory.sidecars import (
    MemoryServiceFirewall,
    MemoryServiceLinker,
    MemoryTunnelManager,
    MemoryWhitelistProxy,
)
from v6node.adapters.squid.docker_whitelist_proxy import DockerWhitelistProxy
from v6node.adapters.ssh.docker_tunnel_manager import DockerTunnelManager
from v6node.domain.containers import managed_labels, network_name
from v6node.domain.egress import ServiceLink, Sidecar, SshTunnelConfig, WhitelistConfig
from v6node.domain.errors import ContainerNotFound, SidecarFailed
from v6node.ports.service_firewall import ServiceFirewall
from v6node.ports.service_linker import ServiceLinker
from v6node.ports.tunnel_manager import TunnelManager
from v6node.ports.whitelist_proxy import WhitelistProxy

WHITELIST = WhitelistConfig(domains=("example.org",), ports=(443,))


@attrs.define
class Rig:
    proxy: WhitelistProxy
    tunnels: TunnelManager
    linker: ServiceLinker
    firewall: ServiceFirewall
    network: str
    tunnel: SshTunnelConfig  # one that works
    stop: Callable[[Sidecar], None]  # the sidecar's container stops
    operator: Callable[[], str]  # makes a running container of the operator's; returns its name

    def failing(self) -> SshTunnelConfig:
        """A tunnel whose server's host key is not the configured fingerprint."""
        return attrs.evolve(self.tunnel, hostname="bad", fingerprint=other_host_key())


@pytest.fixture(params=["memory", "docker"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    if request.param == "memory":
        yield _memory_rig()
    else:
        request.applymarker(pytest.mark.docker)
        async for made in _docker_rig(tmp_path):
            yield made


def _memory_rig() -> Rig:
    proxy, tunnels, linker = MemoryWhitelistProxy(), MemoryTunnelManager(), MemoryServiceLinker()
    tunnels.fail("bad", "the SSH server's host key does not match ssh.fingerprint (host key verification failed)")

    def stop(sidecar: Sidecar) -> None:
        (proxy if sidecar.kind == "squid" else tunnels).stop(sidecar.alias)

    def operator() -> str:
        name = f"operator-{uuid.uuid4().hex[:6]}"
        linker.containers[name] = True
        return name

    tunnel = SshTunnelConfig(
        hostname="db", ssh_host="sshd", username="tunnel", key_file="/k", fingerprint="ssh-ed25519 AAAA",
        dest_ip="127.0.0.1", dest_port=8001, bind_port=8000,
    )
    return Rig(proxy, tunnels, linker, MemoryServiceFirewall(), "net", tunnel, stop, operator)


async def _docker_rig(tmp_path: Path) -> AsyncIterator[Rig]:
    ensure_images(["echo-algo", SSHD_HOST, SIDECARS])
    images = sidecar_images()
    node = f"ct{uuid.uuid4().hex[:10]}"
    runtime = DockerContainerRuntime()
    client = docker.from_env()
    outside = Outside(client)
    try:
        network = network_name(node)
        await runtime.ensure_network(network, managed_labels(node))
        key, public = ssh_key_pair(tmp_path, "client")
        _, host_key = outside.sshd(f"sshd-{outside.tag}", public)
        launcher = SidecarLauncher(runtime, node, outside.name, ready_timeout=45)

        def operator() -> str:
            container = client.containers.run(
                image("echo-algo"), ["sleep", "600"], detach=True, name=f"v6t-op-{uuid.uuid4().hex[:6]}",
                labels={"v6node.test": outside.tag},
            )
            outside.containers.append(container.id)
            return str(container.name)

        yield Rig(
            proxy=DockerWhitelistProxy(launcher, node, images["squid"]),
            tunnels=DockerTunnelManager(launcher, node, images["ssh-tunnel"]),
            linker=DockerServiceLinker(runtime),
            firewall=DockerServiceFirewall(runtime, node, images["network_config"], str(tmp_path / "marker")),
            network=network,
            tunnel=SshTunnelConfig(
                hostname="db", ssh_host=f"sshd-{outside.tag}", username="tunnel", key_file=str(key),
                fingerprint=host_key, dest_ip="127.0.0.1", dest_port=8001, bind_port=8000,
            ),
            stop=lambda sidecar: client.api.kill(sidecar.container_id),
            operator=operator,
        )
    finally:
        await runtime.remove_labelled(managed_labels(node))
        outside.close()
        runtime.close()
        client.close()


def test_the_adapters_keep_to_their_ports(rig: Rig) -> None:
    assert isinstance(rig.proxy, WhitelistProxy) and isinstance(rig.tunnels, TunnelManager)
    assert isinstance(rig.linker, ServiceLinker) and isinstance(rig.firewall, ServiceFirewall)


async def test_squid_is_named_squid_on_port_3128_and_a_second_start_replaces_the_first(rig: Rig) -> None:
    first = await rig.proxy.start(WHITELIST, rig.network)
    second = await rig.proxy.start(WHITELIST, rig.network)

    assert (first.alias, first.port, second.alias, second.port) == ("squid", 3128, "squid", 3128)
    assert first.container_id != second.container_id
    assert (await rig.proxy.wait(first)).exit_code != 0  # the first one is gone
    assert second.address == first.address


async def test_a_sidecar_that_stops_ends_its_wait(rig: Rig) -> None:
    sidecar = await rig.proxy.start(WHITELIST, rig.network)
    rig.stop(sidecar)
    ended = await rig.proxy.wait(sidecar)
    assert ended.exit_code != 0 and ended.reason


async def test_a_tunnel_is_named_by_its_hostname_and_listens_on_its_bind_port(rig: Rig) -> None:
    sidecar = await rig.tunnels.start(rig.tunnel, rig.network)
    assert (sidecar.alias, sidecar.port, sidecar.kind) == ("db", 8000, "ssh-tunnel")
    rig.stop(sidecar)
    assert (await rig.tunnels.wait(sidecar)).exit_code != 0


async def test_a_tunnel_that_cannot_be_made_says_which_and_why(rig: Rig) -> None:
    with pytest.raises(SidecarFailed) as failed:
        await rig.tunnels.start(rig.failing(), rig.network)
    assert failed.value.what == "ssh tunnel 'bad'"
    assert "host key does not match ssh.fingerprint" in failed.value.reason


async def test_linking_is_idempotent_and_reports_the_address(rig: Rig) -> None:
    service = ServiceLink(rig.operator(), ("db", "pg"))
    first = await rig.linker.link(service, rig.network)
    second = await rig.linker.link(service, rig.network)
    await rig.linker.unlink(service, rig.network)
    await rig.linker.unlink(service, rig.network)
    assert first == second and first.running and first.address and first.aliases == ("db", "pg")


async def test_linking_a_container_that_does_not_exist_raises_not_found(rig: Rig) -> None:
    with pytest.raises(ContainerNotFound):
        await rig.linker.link(ServiceLink("v6t-nobody-here", ("db",)), rig.network)


async def test_the_firewall_opens_and_closes_idempotently(rig: Rig) -> None:
    await rig.firewall.close()  # nothing to remove: fine
    await rig.firewall.open(rig.network)
    await rig.firewall.open(rig.network)
    await rig.firewall.close()
    await rig.firewall.close()
