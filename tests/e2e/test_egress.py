"""Squid, SSH tunnels and a linked container through `v6node start`, with a task created by
the real vantage6 client: the algorithm uses all three and returns what it fetched.

The "internet" is a bridge network the test makes (the node's ``sidecar_network``) with a
web server and an SSH server on it; the operator's container is a busybox web server of the
test's own. Nothing leaves the machine.
"""
from __future__ import annotations

import shlex
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.e2e.conftest import NO_LEFTOVERS, leftovers
from tests.e2e.test_policies_and_data import as_json, run_task
from tests.rig.egress import Outside, docker_user_rules, other_host_key, ssh_key_pair
from tests.rig.images import SIDECARS, SSHD_HOST, ensure_images, sidecar_images
from tests.rig.node_process import NodeProcess
from tests.rig.paths import image
from v6node.adapters.docker.docker_service_firewall import firewall_tag
from v6node.domain.containers import network_name

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.server]

SHELL = image("shell-algo")
# Every env var the node gives is base32-encoded (as the reference does); the busybox
# algorithm decodes http_proxy itself. busybox wget has no no_proxy: -Y off goes direct.
SCRIPT = """
proxy=$(decode "$http_proxy")
get() {{ timeout 20 wget "$@" 2>&1 | head -n 1 | tr -d '"\\\\'; }}
web=$(http_proxy="$proxy" get -qO- http://{web}/)
refused=$(http_proxy="$proxy" get -qO- http://{other}/)
one=$(get -Y off -qO- http://one:8000/)
two=$(get -Y off -qO- http://two:8000/)
warehouse=$(get -Y off -qO- http://warehouse:5432/)
node=$(get -Y off -qO- "http://proxyserver:$(decode "$PORT")/health")
printf '{{"proxy":"%s","web":"%s","refused":"%s","one":"%s","two":"%s","warehouse":"%s","node":"%s"}}' \\
  "$proxy" "$web" "$refused" "$one" "$two" "$warehouse" "$node" > "$OUTPUT_FILE"
"""


@pytest.fixture(scope="module", autouse=True)
def egress_images() -> None:
    ensure_images(["shell-algo", "echo-algo", SSHD_HOST, SIDECARS])


@pytest.fixture
def node_name(docker_client: docker.DockerClient) -> Iterator[str]:
    """A fresh node name; whatever a failed test left of that node is removed afterwards
    (containers, network, volumes by label, and its tagged DOCKER-USER rules). Ask for it
    first, so that it is cleaned up after the node process has stopped."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    yield name
    label = {"label": f"v6node.node={name}"}
    for container in docker_client.containers.list(all=True, filters=label):
        container.remove(force=True)
    for network in docker_client.networks.list(filters=label):
        network.remove()
    for volume in docker_client.volumes.list(filters=label):
        volume.remove(force=True)
    for rule in docker_user_rules():
        if firewall_tag(name) in rule:
            subprocess.run(["iptables", "-w", *shlex.split(rule.replace("-A ", "-D ", 1))], check=True)


@pytest.fixture
def stations_world(outside: Outside, docker_client: docker.DockerClient, tmp_path: Path) -> dict[str, Any]:
    """The hosts and the node config keys for all three: a whitelisted web server, an SSH
    server with two services (and a tunnel with a wrong fingerprint), an operator's container."""
    web, other = f"data-{outside.tag}.example.test", f"other-{outside.tag}.example.test"
    outside.web(web, "from-the-whitelist")
    outside.web(other, "not-whitelisted")
    key, public = ssh_key_pair(tmp_path, "tunnel")
    sshd = f"sshd-{outside.tag}"
    _, host_key = outside.sshd(sshd, public)
    operator = docker_client.containers.run(
        image("echo-algo"), ["sh", "-c", "mkdir -p /tmp/w && echo operator-db > /tmp/w/index.html && "
                             "exec httpd -f -p 5432 -h /tmp/w"],
        detach=True, name=f"v6t-warehouse-{outside.tag}", labels={"v6node.test": outside.tag},
    )
    outside.containers.append(operator.id)

    def tunnel(hostname: str, dest_port: int, fingerprint: str = host_key) -> dict[str, Any]:
        return {
            "hostname": hostname,
            "ssh": {"host": sshd, "port": 22, "fingerprint": fingerprint,
                    "identity": {"username": "tunnel", "key": str(key)}},
            "tunnel": {"bind": {"ip": "0.0.0.0", "port": 8000}, "dest": {"ip": "127.0.0.1", "port": dest_port}},
        }

    config = {
        "whitelist": {"domains": [web], "ips": [], "ports": [80]},
        "ssh-tunnels": [tunnel("one", 8001), tunnel("two", 8002), tunnel("bad", 8001, other_host_key())],
        "docker_services": {"warehouse": operator.name},
        "images": sidecar_images(),
        "sidecar_network": outside.name,
        "algorithm_env": {"SCRIPT": SCRIPT.format(web=web, other=other)},
    }
    return {"config": config, "operator": operator}


def test_one_task_reaches_the_whitelist_two_tunnels_and_a_linked_container(
    node_name, make_federation, start_node, researcher_for, stations_world, docker_client
) -> None:
    rules_before = docker_user_rules(node_name)
    federation = make_federation(n_orgs=1)
    name = node_name
    node = start_node(federation.nodes[0], name=name, **stations_world["config"])
    user = researcher_for(federation)

    run, result = run_task(user, federation, SHELL, {"method": "fetch"})

    assert run["status"] == "completed", run["log"]
    fetched = as_json(result["result"])
    assert fetched["proxy"] == "http://squid:3128"
    assert fetched["web"] == "from-the-whitelist"
    assert "403 Forbidden" in fetched["refused"]
    assert (fetched["one"], fetched["two"], fetched["warehouse"]) == ("one", "two", "operator-db")
    # The reference's name of the node's proxy reaches it (a hosts entry naming the gateway).
    assert fetched["node"] == "{status:ok}"
    log = node.output
    assert "whitelist proxy ready: algorithms reach domains [data-" in log
    assert "ssh tunnel 'one' ready: algorithms reach one:8000" in log
    assert "ssh tunnel 'two' ready: algorithms reach two:8000" in log
    assert ("ssh tunnel 'bad' (ssh-tunnels[2], tunnel@sshd-" in log
            and "failed: the SSH server's host key does not match ssh.fingerprint" in log)
    assert f"linked docker service: algorithms reach container {stations_world['operator'].name} as warehouse" in log

    assert node.stop() == 0
    assert leftovers(docker_client, name) == NO_LEFTOVERS
    operator = stations_world["operator"]
    operator.reload()
    assert operator.status == "running"  # the operator's: disconnected, never stopped
    assert network_name(name) not in operator.attrs["NetworkSettings"]["Networks"]
    assert docker_user_rules(name) == rules_before


def test_a_killed_node_leaves_its_sidecars_the_next_one_supervises_them_and_its_stop_removes_everything(
    node_name, make_federation, start_node, stations_world, docker_client
) -> None:
    rules_before = docker_user_rules(node_name)
    federation = make_federation(n_orgs=1)
    name = node_name
    node = start_node(federation.nodes[0], name=name, **stations_world["config"])

    assert node.stop(signal.SIGKILL) == -signal.SIGKILL
    left = leftovers(docker_client, name)
    assert f"vantage6-{name}-squid" in left["containers"]
    assert any(firewall_tag(name) in rule for rule in docker_user_rules())

    again = NodeProcess(node.config_file)  # the same config file: the same node name and data folder
    try:
        again.start(timeout=120)
        assert "ssh tunnel 'two' ready" in again.output
        # A sidecar that dies while the node runs is started again.
        docker_client.api.kill(f"vantage6-{name}-ssh-tunnel-one")
        again.wait_for("ssh tunnel 'one' is ready again (one:8000)", timeout=120)
        assert "ssh tunnel 'one' stopped (exit code 137" in again.output
    finally:
        assert again.stop() == 0
    assert leftovers(docker_client, name) == NO_LEFTOVERS
    assert docker_user_rules(name) == rules_before
    operator = stations_world["operator"]
    operator.reload()
    assert operator.status == "running" and network_name(name) not in operator.attrs["NetworkSettings"]["Networks"]
