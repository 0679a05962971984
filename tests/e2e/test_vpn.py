"""Two stations talk over a real OpenVPN network: two `v6node start` processes of two
organizations, the real server, a task created with the real vantage6 client.

The OpenVPN server (Debian's, with a throw-away easy-rsa PKI) runs on a bridge network the
test makes, which is also both nodes' ``sidecar_network``; each node finds its client
configuration in its data folder (``vpn/vpn-config.ovpn.conf``), as after a ``GET vpn``
(the real server's needs an EduVPN portal, which cannot run here). The algorithm at
station A listens on its exposed port 8888; the one at station B finds it with
``GET vpn/algorithm/addresses`` through its node's proxy and exchanges a message with it.
Nothing leaves the machine.
"""
from __future__ import annotations

import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.e2e.conftest import NO_LEFTOVERS, leftovers
from tests.e2e.test_policies_and_data import as_json, container_creations, run_task
from tests.rig.egress import Outside, docker_user_rules
from tests.rig.images import VPN_SERVER, VPN_SIDECARS, ensure_images, sidecar_images
from tests.rig.node_process import NodeProcess
from tests.rig.paths import image
from tests.rig.server import Federation
from tests.rig.vpn import VpnServer
from v6node.adapters.vpn.docker_vpn_client import vpn_tag
from v6node.domain.vpn import vpn_client_name

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.server]

VPN_ALGO = image("vpn-algo")
MESSAGE = "hello from station B"


@pytest.fixture(scope="module", autouse=True)
def vpn_images() -> None:
    ensure_images(["vpn-algo", "echo-algo", VPN_SIDECARS, VPN_SERVER])


@pytest.fixture
def vpn_server(docker_client: docker.DockerClient, outside: Outside) -> Iterator[VpnServer]:
    server = VpnServer(docker_client, outside.name)
    yield server
    server.close()


@pytest.fixture
def node_names(docker_client: docker.DockerClient) -> Iterator[tuple[str, str]]:
    """Two fresh node names; whatever a failed test left of them is removed afterwards (by
    label, and their tagged DOCKER-USER rules). Asked for first: cleaned up after the nodes stop."""
    names = (f"e2e-a{uuid.uuid4().hex[:7]}", f"e2e-b{uuid.uuid4().hex[:7]}")
    yield names
    for name in names:
        label = {"label": f"v6node.node={name}"}
        for container in docker_client.containers.list(all=True, filters=label):
            container.remove(force=True)
        for network in docker_client.networks.list(filters=label):
            network.remove()
        for volume in docker_client.volumes.list(filters=label):
            volume.remove(force=True)
        for rule in docker_user_rules():
            if vpn_tag(name) in rule:
                subprocess.run(["iptables", "-w", *shlex.split(rule.replace("-A ", "-D ", 1))], check=True)


@pytest.fixture
def station(
    start_node: Callable[..., NodeProcess], vpn_server: VpnServer, outside: Outside, tmp_path: Path
) -> Callable[..., NodeProcess]:
    """Start a node on the VPN: its client configuration in its data folder, v6node's own VPN images."""

    def start(federation: Federation, index: int, name: str, role: str, **extra: Any) -> NodeProcess:
        home = tmp_path / name
        (home / "data" / "vpn").mkdir(parents=True)
        (home / "data" / "vpn" / "vpn-config.ovpn.conf").write_text(vpn_server.client_config(name))
        return start_node(
            federation.nodes[index], name=name,
            directories={"data": str(home / "data"), "log": str(home / "log")},
            vpn_subnet=vpn_server.subnet, images=sidecar_images(vpn=True), sidecar_network=outside.name,
            algorithm_env={"VPN_ROLE": role}, **extra,
        )

    return start


def exchange(user: Any, federation: Federation) -> dict[str, dict[str, Any]]:
    task = user.create_task(
        federation.collaboration_id, list(federation.organization_ids), VPN_ALGO,
        {"method": "exchange", "kwargs": {"message": MESSAGE}},
    )
    assert "id" in task, task
    return {"task": task}


def results_by_role(user: Any, task_id: int) -> dict[str, dict[str, Any]]:
    results = user.wait_for_results(task_id)
    by_role = {}
    for result in results:
        decoded = as_json(result["result"])
        by_role[decoded["role"]] = decoded
    return by_role


def test_two_stations_exchange_a_message_over_the_vpn(
    node_names, make_federation, station, researcher_for, admin, docker_client, vpn_server
) -> None:
    rules_before = docker_user_rules(node_names)
    federation = make_federation(n_orgs=2)
    name_a, name_b = node_names
    a = station(federation, 0, name_a, "listen")
    b = station(federation, 1, name_b, "talk")
    user = researcher_for(federation)
    added = sorted(rule for rule in docker_user_rules(node_names) if rule not in rules_before)
    assert len(added) == 4 and all(vpn_tag(name_a) in r or vpn_tag(name_b) in r for r in added)
    ip_a = admin.get(f"/node/{federation.nodes[0].node_id}")["ip"]
    assert ip_a.startswith("10.76.")

    task = exchange(user, federation)["task"]
    by_role = results_by_role(user, task["id"])

    assert by_role["listen"] == {"role": "listen", "received": MESSAGE}
    assert by_role["talk"] == {"role": "talk", "peer": f"{ip_a}:49152", "sent": MESSAGE, "reply": f"ack:{MESSAGE}"}
    assert f"VPN ready: this node's algorithms are reached at {ip_a} (vpn_subnet 10.76.0.0/16)" in a.output
    assert f"reached over the VPN at {ip_a}:49152 -> 8888 (message)" in a.output
    print("\n--- station A's log (VPN lines) ---\n" + "".join(line for line in a.lines if "VPN" in line))
    print("--- DOCKER-USER while both ran ---\n" + "\n".join(added))

    assert a.stop() == 0 and b.stop() == 0
    assert "left the VPN: address" in a.output
    assert admin.get(f"/node/{federation.nodes[0].node_id}")["ip"] is None
    for name in node_names:
        assert leftovers(docker_client, name) == NO_LEFTOVERS
    assert docker_user_rules(node_names) == rules_before


def test_a_client_killed_mid_run_comes_back_and_a_killed_node_leaves_no_rule_after_its_next_stop(
    node_names, make_federation, station, researcher_for, docker_client, tmp_path
) -> None:
    rules_before = docker_user_rules(node_names)
    federation = make_federation(n_orgs=2)
    name_a, name_b = node_names
    gate = tmp_path / "gate"
    gate.mkdir()
    a = station(federation, 0, name_a, "listen")
    b = station(federation, 1, name_b, "talk", databases=[{"label": "gate", "uri": str(gate), "type": "folder"}])
    user = researcher_for(federation)

    task = exchange(user, federation)["task"]
    a.wait_for("reached over the VPN at", timeout=120)  # A's algorithm listens; B's waits at the gate
    mark = a.mark()
    docker_client.api.kill(vpn_client_name(name_a))
    a.wait_for("the VPN client is ready again", timeout=120, since=mark)
    (gate / "go").touch()
    by_role = results_by_role(user, task["id"])
    assert by_role["talk"]["reply"] == f"ack:{MESSAGE}" and by_role["listen"]["received"] == MESSAGE
    assert "the VPN client stopped (exit code 137" in a.output_since(mark)
    print("\n--- station A's log after the kill ---\n" + a.output_since(mark))

    assert a.stop(signal.SIGKILL) == -signal.SIGKILL
    assert any(vpn_tag(name_a) in rule for rule in docker_user_rules())  # a killed process leaves them
    again = NodeProcess(a.config_file)
    try:
        again.start(timeout=120)
        assert "VPN ready" in again.output
    finally:
        assert again.stop() == 0
    assert b.stop() == 0
    for name in node_names:
        assert leftovers(docker_client, name) == NO_LEFTOVERS
    assert docker_user_rules(node_names) == rules_before


def test_without_vpn_subnet_no_vpn_image_container_or_call(make_federation, start_node, researcher_for, docker_client) -> None:
    since = int(time.time())
    federation = make_federation(n_orgs=1)
    node = start_node(federation.nodes[0])
    user = researcher_for(federation)
    run, _ = run_task(user, federation, image("echo-algo"), {"method": "echo"})
    assert run["status"] == "completed"
    assert node.stop() == 0

    made = {labels.get("vantage6-type") for labels in container_creations(docker_client, node.name, since)}
    assert made == {"algorithm", "proxy-check"}
    pulls = docker_client.events(
        since=since, until=int(time.time()) + 1, decode=True, filters={"type": "image", "event": "pull"}
    )
    try:
        pulled = [event["Actor"]["ID"] for event in pulls]
    finally:
        pulls.close()
    assert not [name for name in pulled if "vpn" in name or "alpine" in name or "configurator" in name]
    calls = [line for line in node.lines if " -> HTTP " in line]
    assert calls and not [line for line in calls if " vpn" in line or " port" in line or "PATCH node/" in line]
