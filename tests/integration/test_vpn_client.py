"""The VPN client against a real OpenVPN server and the real Docker engine: two stations.

Each station is a node name with its own isolated algorithm network (internal, no traffic
between containers) and a ``DockerVpnClient`` on v6node's own images; the OpenVPN server
(with a throw-away PKI) runs on a bridge network the test makes, which is the stations'
sidecar network. "Algorithms" are busybox containers without capabilities in the network
namespace of their run's helper, as the node runs them.
"""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from attrs import frozen

from tests.rig.egress import Outside, docker_user_rules, probe
from tests.rig.images import VPN_SIDECARS, VPN_SERVER, ensure_images, sidecar_images
from tests.rig.paths import image
from tests.rig.vpn import VpnServer
from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.sidecars import SidecarLauncher
from v6node.adapters.vpn.docker_vpn_client import DockerVpnClient, vpn_tag
from v6node.domain.containers import managed_labels, network_name
from v6node.domain.errors import SidecarFailed
from v6node.domain.vpn import ForwardedPort, VpnConnection

pytestmark = pytest.mark.docker

BUSYBOX = image("echo-algo")
ALGORITHM = image("vpn-algo")  # exposes 8888/tcp, labelled p8888=message
LISTENER = 'while true; do nc -l -p 8888 -e sh -c "read line; echo ack:\\$line"; done'


def talk(docker_client: docker.DockerClient, helper_id: str, address: str, port: int, message: str) -> str:
    """Send ``message`` from the run whose helper is ``helper_id`` to ``address:port``; the answer.
    A few attempts: the peer's listener may still be starting."""
    script = (
        f'for i in $(seq 1 40); do r=$(echo "{message}" | timeout 5 nc {address} {port} 2>/dev/null); '
        '[ -n "$r" ] && break; sleep 0.25; done; echo "$r"'
    )
    container = docker_client.containers.create(
        BUSYBOX, ["sh", "-c", script], network_mode=f"container:{helper_id}", cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
    )
    try:
        container.start()
        container.wait(timeout=120)
        return str(container.logs().decode()).strip()
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module", autouse=True)
def images() -> dict[str, str]:
    ensure_images(["echo-algo", "vpn-algo", VPN_SIDECARS, VPN_SERVER])
    return sidecar_images(vpn=True)


@pytest.fixture(scope="module")
def outside(docker_client: docker.DockerClient) -> Iterator[Outside]:
    made = Outside(docker_client)
    yield made
    made.close()


@pytest.fixture(scope="module")
def vpn_server(docker_client: docker.DockerClient, outside: Outside) -> Iterator[VpnServer]:
    server = VpnServer(docker_client, outside.name)
    yield server
    server.close()


@frozen
class Station:
    node: str
    network: str
    vpn: DockerVpnClient
    data: Path


@pytest.fixture
async def engine() -> AsyncIterator[DockerContainerRuntime]:
    runtime = DockerContainerRuntime()
    yield runtime
    runtime.close()


@pytest.fixture
async def stations(
    engine: DockerContainerRuntime, outside: Outside, vpn_server: VpnServer, images: dict[str, str], tmp_path: Path
) -> AsyncIterator[list[Station]]:
    made = []
    for letter in "ab":
        node = f"it{letter}{uuid.uuid4().hex[:8]}"
        network = network_name(node)
        await engine.ensure_network(network, managed_labels(node))
        data = tmp_path / node
        vpn = station_client(engine, node, outside, images, data)
        await vpn.save_config(vpn_server.client_config(node))
        made.append(Station(node, network, vpn, data))
    yield made
    for station in made:
        await station.vpn.close_forwarding()
        await engine.remove_labelled(managed_labels(station.node))


def station_client(
    engine: DockerContainerRuntime, node: str, outside: Outside, images: dict[str, str], data: Path
) -> DockerVpnClient:
    launcher = SidecarLauncher(engine, node, outside.name, ready_timeout=60)
    return DockerVpnClient(
        engine, launcher, node, images["vpn_client"], images["alpine"], images["network_config"],
        str(data / "vpn"), str(data / "vpn-forwarding"),
    )


async def connect(station: Station, subnet: str) -> VpnConnection:
    connection = await station.vpn.connect(station.network)
    await station.vpn.open_forwarding(station.network, subnet)
    return connection


def listen(docker_client: docker.DockerClient, helper_id: str, node: str, run_id: int) -> None:
    """The run's algorithm, labelled as the node labels one: it answers each line with ack:<line>."""
    docker_client.containers.run(
        BUSYBOX, ["sh", "-c", LISTENER], detach=True, network_mode=f"container:{helper_id}",
        labels={**managed_labels(node), "vantage6-type": "algorithm", "run_id": str(run_id)},
        cap_drop=["ALL"], security_opt=["no-new-privileges"],
    )


async def test_two_stations_exchange_a_message_and_the_host_rules_go_at_close(
    stations: list[Station], vpn_server: VpnServer, docker_client: docker.DockerClient
) -> None:
    a, b = stations
    nodes = (a.node, b.node)
    rules_before = docker_user_rules(nodes)
    at_a, at_b = await connect(a, vpn_server.subnet), await connect(b, vpn_server.subnet)
    assert at_a.vpn_address != at_b.vpn_address
    assert all(c.vpn_address.startswith("10.76.") for c in (at_a, at_b))
    added = sorted(rule.replace('"', "") for rule in docker_user_rules(nodes) if rule not in rules_before)
    expected = []
    for station in (a, b):
        bridge = "br-" + docker_client.networks.get(station.network).id[:12]
        for match in ("-s", "-d"):
            expected.append(
                f"-A DOCKER-USER {match} 10.76.0.0/16 -i {bridge} -o {bridge} -m comment --comment {vpn_tag(station.node)} -j ACCEPT"
            )
    assert added == sorted(expected)

    run_a = await a.vpn.forward_run(1, ALGORITHM, a.network)
    assert run_a.ports == (ForwardedPort(49152, 8888, "message"),)
    listen(docker_client, run_a.helper_id, a.node, 1)
    run_b = await b.vpn.forward_run(2, ALGORITHM, b.network)

    assert talk(docker_client, run_b.helper_id, at_a.vpn_address, 49152, "hello from b") == "ack:hello from b"

    assert await a.vpn.release_run(1) and await b.vpn.release_run(2)
    assert not await a.vpn.release_run(1)  # nothing left to release
    for station in (a, b):
        await station.vpn.close_forwarding()
        await station.vpn.disconnect()
    assert docker_user_rules(nodes) == rules_before
    for station in (a, b):
        left = docker_client.containers.list(all=True, filters={"label": f"v6node.node={station.node}"})
        assert [c.name for c in left if "vpn" in c.name or "helper" in c.name] == []


async def test_an_algorithm_without_a_helper_reaches_no_station(
    stations: list[Station], vpn_server: VpnServer, docker_client: docker.DockerClient
) -> None:
    a, b = stations
    at_a = await connect(a, vpn_server.subnet)
    await connect(b, vpn_server.subnet)
    run_a = await a.vpn.forward_run(1, ALGORITHM, a.network)
    listen(docker_client, run_a.helper_id, a.node, 1)
    direct = probe(docker_client, b.network, f"echo hi | timeout 5 nc {at_a.vpn_address} 49152; echo rc=$?")
    assert "ack" not in direct and "rc=0" not in direct


async def test_two_runs_on_one_station_reach_each_other_at_its_vpn_address(
    stations: list[Station], vpn_server: VpnServer, docker_client: docker.DockerClient
) -> None:
    a = stations[0]
    at_a = await connect(a, vpn_server.subnet)
    listener = await a.vpn.forward_run(1, ALGORITHM, a.network)
    talker = await a.vpn.forward_run(2, ALGORITHM, a.network)
    assert talker.ports == (ForwardedPort(49153, 8888, "message"),)  # 49152 is taken
    listen(docker_client, listener.helper_id, a.node, 1)
    assert talk(docker_client, talker.helper_id, at_a.vpn_address, 49152, "same node") == "ack:same node"


async def test_a_killed_client_comes_back_with_the_forwarding_of_running_runs(
    stations: list[Station], vpn_server: VpnServer, docker_client: docker.DockerClient
) -> None:
    a, b = stations
    await connect(a, vpn_server.subnet)
    at_b = await connect(b, vpn_server.subnet)
    run_a = await a.vpn.forward_run(1, ALGORITHM, a.network)
    run_b = await b.vpn.forward_run(2, ALGORITHM, b.network)
    listen(docker_client, run_b.helper_id, b.node, 2)
    assert talk(docker_client, run_a.helper_id, at_b.vpn_address, 49152, "before") == "ack:before"

    docker_client.api.kill(f"vantage6-{b.node}-vpn-client")
    gone = await b.vpn.wait(at_b)
    assert gone.exit_code == 137
    again = await b.vpn.connect(b.network)  # what the node's supervision does
    assert again.sidecar.address == at_b.sidecar.address  # the runs' routes still lead to it
    assert talk(docker_client, run_a.helper_id, again.vpn_address, 49152, "after") == "ack:after"


async def test_a_new_process_restores_the_forwarding_of_runs_an_earlier_one_left(
    stations: list[Station], vpn_server: VpnServer, docker_client: docker.DockerClient,
    engine: DockerContainerRuntime, outside: Outside, images: dict[str, str],
) -> None:
    a, b = stations
    await connect(a, vpn_server.subnet)
    await connect(b, vpn_server.subnet)
    run_a = await a.vpn.forward_run(1, ALGORITHM, a.network)
    run_b = await b.vpn.forward_run(2, ALGORITHM, b.network)
    listen(docker_client, run_b.helper_id, b.node, 2)
    orphan = await b.vpn.forward_run(3, ALGORITHM, b.network)  # its algorithm never ran (or ended)

    restarted = station_client(engine, b.node, outside, images, b.data)  # the same data folder
    again = await restarted.connect(b.network)
    await restarted.open_forwarding(b.network, vpn_server.subnet)
    assert talk(docker_client, run_a.helper_id, again.vpn_address, 49152, "restored") == "ack:restored"
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(orphan.helper_id)


async def test_a_configuration_of_another_ca_fails_at_once_with_the_reason(
    stations: list[Station], vpn_server: VpnServer, docker_client: docker.DockerClient
) -> None:
    a = stations[0]
    await a.vpn.save_config(vpn_server.stale_client_config())
    with pytest.raises(SidecarFailed) as failed:
        await a.vpn.connect(a.network)
    assert "a certificate did not verify: the configuration's CA does not match the VPN server" in failed.value.reason
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(f"vantage6-{a.node}-vpn-client")


async def test_without_a_configuration_nothing_is_made(stations: list[Station], docker_client: docker.DockerClient) -> None:
    a = stations[0]
    (a.data / "vpn" / "vpn-config.ovpn.conf").unlink()
    with pytest.raises(SidecarFailed, match="there is no VPN configuration"):
        await a.vpn.connect(a.network)
    assert docker_client.containers.list(all=True, filters={"label": f"v6node.node={a.node}"}) == []


async def test_rules_a_killed_process_left_are_removed_by_the_next_one(
    stations: list[Station], vpn_server: VpnServer, engine: DockerContainerRuntime, outside: Outside,
    images: dict[str, str],
) -> None:
    a = stations[0]
    before = docker_user_rules((a.node,))
    await a.vpn.open_forwarding(a.network, vpn_server.subnet)
    assert sum(vpn_tag(a.node) in rule for rule in docker_user_rules()) == 2
    next_process = station_client(engine, a.node, outside, images, a.data)
    await next_process.close_forwarding()
    assert docker_user_rules((a.node,)) == before
