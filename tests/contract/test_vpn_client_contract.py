"""VpnClient: one suite for the memory adapter and the Docker one (real dockerd, a real OpenVPN
server with a throw-away PKI on a network the test makes)."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import attrs
import docker
import pytest

from tests.rig.egress import Outside
from tests.rig.images import VPN_SERVER, VPN_SIDECARS, ensure_images, sidecar_images
from tests.rig.paths import image
from tests.rig.vpn import VpnServer
from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.sidecars import SidecarLauncher
from v6node.adapters.memory.vpn import MemoryVpnClient
from v6node.adapters.vpn.docker_vpn_client import DockerVpnClient
from v6node.domain.containers import managed_labels, network_name
from v6node.domain.errors import SidecarFailed
from v6node.domain.vpn import AlgorithmPort, ForwardedPort, VpnConfig, VpnConnection
from v6node.ports.vpn_client import VpnClient

ALGORITHM = image("vpn-algo")  # exposes 8888/tcp, labelled p8888=message
PLAIN = image("echo-algo")  # exposes nothing
SUBNET = "10.76.0.0/16"


@attrs.define
class Rig:
    vpn: VpnClient
    network: str
    config: str  # a configuration that connects
    stale: str  # one the VPN server refuses
    kill: Callable[[VpnConnection], None]  # the client's container stops


@pytest.fixture(scope="module")
def docker_world() -> Iterator[tuple[docker.DockerClient, Outside, VpnServer]]:
    ensure_images(["echo-algo", "vpn-algo", VPN_SIDECARS, VPN_SERVER])
    client = docker.from_env()
    outside = Outside(client)
    server = VpnServer(client, outside.name)
    yield client, outside, server
    server.close()
    outside.close()
    client.close()


@pytest.fixture(params=["memory", "docker"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    if request.param == "memory":
        memory = MemoryVpnClient()
        memory.exposed[ALGORITHM] = (AlgorithmPort(8888, "message"),)
        memory.refused.add("stale")
        yield Rig(memory, network_name("memnode"), "client\r\n", "stale", lambda connection: memory.stop(137))
        return
    request.applymarker(pytest.mark.docker)
    client, outside, server = request.getfixturevalue("docker_world")
    node = f"ct{uuid.uuid4().hex[:10]}"
    runtime = DockerContainerRuntime()
    network = network_name(node)
    await runtime.ensure_network(network, managed_labels(node))
    images = sidecar_images(vpn=True)
    vpn = DockerVpnClient(
        runtime, SidecarLauncher(runtime, node, outside.name, ready_timeout=60), node, images["vpn_client"],
        images["alpine"], images["network_config"], str(tmp_path / "vpn"), str(tmp_path / "vpn-forwarding"),
    )
    try:
        yield Rig(
            vpn, network, server.client_config(node), server.stale_client_config(),
            lambda connection: client.api.kill(connection.sidecar.container_id),
        )
    finally:
        await vpn.close_forwarding()
        await runtime.remove_labelled(managed_labels(node))
        runtime.close()


async def test_the_configuration_is_kept_with_lf_line_ends(rig: Rig) -> None:
    assert await rig.vpn.saved_config() is None
    await rig.vpn.save_config(rig.config)
    assert await rig.vpn.saved_config() == rig.config.replace("\r\n", "\n")


async def test_without_a_configuration_connect_fails_with_the_reason(rig: Rig) -> None:
    with pytest.raises(SidecarFailed, match="no VPN configuration"):
        await rig.vpn.connect(rig.network)


async def test_connect_gives_an_address_of_the_vpn_and_a_new_connect_replaces_the_client(rig: Rig) -> None:
    await rig.vpn.save_config(rig.config)
    first = await rig.vpn.connect(rig.network)
    assert VpnConfig(SUBNET).contains(first.vpn_address) and first.sidecar.port == 0
    second = await rig.vpn.connect(rig.network)
    assert second.sidecar.container_id != first.sidecar.container_id
    assert second.sidecar.address == first.sidecar.address  # the runs' routes keep leading to it
    assert (await rig.vpn.wait(first)).exit_code != 0  # the first is gone


async def test_a_refused_configuration_fails_at_once_with_the_reason(rig: Rig) -> None:
    await rig.vpn.save_config(rig.stale)
    with pytest.raises(SidecarFailed) as failed:
        await rig.vpn.connect(rig.network)
    assert "VERIFY ERROR" in failed.value.reason


async def test_wait_returns_when_the_client_stops(rig: Rig) -> None:
    await rig.vpn.save_config(rig.config)
    connection = await rig.vpn.connect(rig.network)
    rig.kill(connection)
    assert (await rig.vpn.wait(connection)).exit_code == 137


async def test_runs_get_free_ports_for_what_their_image_exposes_and_release_them(rig: Rig) -> None:
    await rig.vpn.save_config(rig.config)
    with pytest.raises(SidecarFailed, match="not connected"):
        await rig.vpn.forward_run(1, ALGORITHM, rig.network)
    await rig.vpn.connect(rig.network)
    await rig.vpn.open_forwarding(rig.network, SUBNET)
    first = await rig.vpn.forward_run(1, ALGORITHM, rig.network)
    second = await rig.vpn.forward_run(2, PLAIN, rig.network)
    assert first.ports == (ForwardedPort(49152, 8888, "message"),)
    assert second.ports == (ForwardedPort(49153, 8888, None),)
    assert first.network_mode == f"container:{first.helper_id}" and first.helper_id != second.helper_id
    assert await rig.vpn.release_run(1) is True
    assert await rig.vpn.release_run(1) is False
    third = await rig.vpn.forward_run(3, ALGORITHM, rig.network)
    assert third.ports == (ForwardedPort(49152, 8888, "message"),)  # released ports are free again


async def test_disconnect_and_close_forwarding_are_idempotent(rig: Rig) -> None:
    await rig.vpn.disconnect()
    await rig.vpn.close_forwarding()
    await rig.vpn.save_config(rig.config)
    await rig.vpn.connect(rig.network)
    await rig.vpn.open_forwarding(rig.network, SUBNET)
    for _ in range(2):
        await rig.vpn.disconnect()
        await rig.vpn.close_forwarding()
    with pytest.raises(SidecarFailed, match="not connected"):
        await rig.vpn.forward_run(1, ALGORITHM, rig.network)
