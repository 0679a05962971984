"""``v6node start`` with ``runtime.kind: swarm`` on the rig's three-host swarm, with the real server.

The node runs on the machine (the host namespace), talks to the swarm through the manager's
socket (``DOCKER_HOST``) and serves its proxy on the rig's link (``runtime.proxy_address``),
which the relay on the manager forwards to. Every host shares the machine's file system, so
the task folders are "shared storage" here as NFS would be on a real cluster.
"""
from __future__ import annotations

import collections
import contextlib
import json
import re
import time
import uuid

import docker
import pytest

from tests.e2e.test_policies_and_data import csv_database
from tests.rig.paths import image
from tests.rig.swarm import SwarmRig

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.server, pytest.mark.swarm]

PLACED = re.compile(r"job vantage6-(?P<node>\S+)-run-(?P<run>\d+) \(\w+\) runs on swarm host (?P<host>\S+)")


@pytest.fixture(scope="module")
def swarm(swarm_rig: SwarmRig, test_images) -> SwarmRig:
    """The rig with the real wrapper's image on every host too (435 MB, loaded once per module)."""
    with contextlib.closing(docker.from_env()) as source:
        swarm_rig.load_images(source, [image("v6-algo")])
    return swarm_rig


@pytest.fixture
def start_swarm_node(start_node, swarm: SwarmRig):
    def start(node, **extra):
        runtime = {"kind": "swarm", "proxy_address": swarm.host_address, **extra.pop("runtime", {})}
        return start_node(node, env={"DOCKER_HOST": swarm.manager.url}, runtime=runtime, **extra)

    return start


def as_json(result):
    return json.loads(result) if isinstance(result, str) else result


def placements(output: str, node_name: str) -> dict[int, str]:
    """Run id -> the swarm host its job ran on, from the node's log."""
    return {int(m["run"]): m["host"] for m in PLACED.finditer(output) if m["node"] == node_name}


def left_in_swarm(swarm: SwarmRig, node_name: str) -> dict[str, list[str]]:
    """The node's services, networks (manager) and containers in any state (every running host)."""
    label = f"v6node.node={node_name}"
    with contextlib.closing(swarm.manager.client()) as manager:
        found = {
            "services": [s["Spec"]["Name"] for s in manager.api.services(filters={"label": label})],
            "networks": sorted(n["Name"] for n in manager.api.networks(filters={"label": label})),
        }
    found.update({f"containers on {host}": names for host, names in swarm.containers(label).items() if names})
    return found


def networks_of(node_name: str) -> list[str]:
    return sorted([f"vantage6-{node_name}-user-net", f"vantage6-{node_name}-user-net-relay"])


def until_nothing_left(
    swarm: SwarmRig, node_name: str, expected: dict[str, list[str]] | None = None, timeout: float = 60.0
) -> dict[str, list[str]]:
    """A host removes the container of a removed job once the manager tells it (no event reaches
    the test for that: the state is polled, and a timeout shows what stayed)."""
    wanted = {"services": [], "networks": [], **(expected or {})}
    deadline = time.monotonic() + timeout
    while (left := left_in_swarm(swarm, node_name)) != wanted and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_start_up_checks_the_cluster_and_the_basic_runs_pass(
    make_federation, start_swarm_node, researcher_for, admin, swarm, tmp_path
):
    federation = make_federation(n_orgs=1)
    node = start_swarm_node(federation.nodes[0], databases=[csv_database(tmp_path / "db")])
    hosts = sorted(host.name for host in swarm.hosts)
    assert f"3 host(s) see the task folder: {', '.join(hosts)}" in node.output
    assert "reachable from a container on the algorithm network on each of 3 hosts" in node.output
    user = researcher_for(federation)
    org, collab = federation.organization_ids[0], federation.collaboration_id

    echo_input = {"method": "echo", "kwargs": {"x": 1}}
    echo = user.create_task(collab, [org], image("echo-algo"), echo_input)
    (result,) = user.wait_for_results(echo["id"])
    assert as_json(result["result"]) == {"echo": echo_input}

    wrapper = user.create_task(
        collab, [org], image("v6-algo"), {"method": "column_sums", "args": [], "kwargs": {}},
        databases=[{"label": "default"}],
    )
    (result,) = user.wait_for_results(wrapper["id"])
    (run,) = user.runs(wrapper["id"])
    assert run["status"] == "completed", run["log"]
    assert as_json(result["result"]) == {"a": 4, "b": 6.5}

    crash = user.create_task(collab, [org], image("crash-algo"), {"method": "x"})
    user.wait_for_results(crash["id"])
    (run,) = user.runs(crash["id"])
    assert run["status"] == "crashed"
    assert "crash-algo: failing on purpose" in run["log"]

    missing = image("no-such-algorithm", "404")
    absent = user.create_task(collab, [org], missing, {"method": "x"})
    user.wait_for_results(absent["id"])
    (run,) = user.runs(absent["id"])
    assert run["status"] == "non-existing Docker image"
    assert missing in run["log"] and "these swarm hosts have no local copy" in run["log"]

    assert len(placements(node.output, node.name)) == 3  # echo, wrapper, crash: each job placed once
    assert node.stop() == 0
    assert until_nothing_left(swarm, node.name) == {"services": [], "networks": []}


def test_a_task_folder_that_a_host_does_not_see_stops_the_node_naming_that_host(make_federation, start_swarm_node, swarm):
    federation = make_federation(n_orgs=1)
    home = swarm.unshared / f"node-{uuid.uuid4().hex[:8]}"  # not on the unsharing host
    directories = {"data": str(home / "data"), "log": str(home / "log")}
    node = start_swarm_node(federation.nodes[0], wait=False, directories=directories)
    tasks = home / "data" / "tasks"
    assert node.wait_exit(timeout=180) != 0
    output = node.output
    assert f"the task folder {tasks}" in output and "these hosts do not see it: " in output, output[-3000:]
    named = output.split("these hosts do not see it: ", 1)[1].split(". Mount it there", 1)[0]
    assert named.startswith(f"{swarm.unsharing_host.name} ("), named
    assert all(host.name not in named for host in swarm.hosts if host is not swarm.unsharing_host), named
    print(f"the refusal names: {named}")
    assert until_nothing_left(swarm, node.name) == {"services": [], "networks": []}


def test_a_burst_of_twenty_runs_spreads_over_the_hosts(make_federation, start_swarm_node, researcher_for, swarm):
    federation = make_federation(n_orgs=1)
    node = start_swarm_node(federation.nodes[0], max_concurrent_runs=20)
    user = researcher_for(federation)
    org, collab = federation.organization_ids[0], federation.collaboration_id
    tasks = [
        user.create_task(collab, [org], image("sleep-algo"), {"method": "sleep", "kwargs": {"seconds": 2}})
        for _ in range(20)
    ]
    for task in tasks:
        user.wait_for_results(task["id"])
        (run,) = user.runs(task["id"])
        assert run["status"] == "completed", run["log"]
    placed = placements(node.output, node.name)
    spread = collections.Counter(placed.values())
    print(f"spread of 20 runs over the swarm hosts: {dict(sorted(spread.items()))}")
    assert len(placed) == 20
    assert set(spread) == {host.name for host in swarm.hosts}, spread
    assert node.stop() == 0
    assert until_nothing_left(swarm, node.name) == {"services": [], "networks": []}


def test_a_kill_ends_the_job_on_its_host(make_federation, start_swarm_node, researcher_for, admin, swarm):
    federation = make_federation(n_orgs=1)
    node = start_swarm_node(federation.nodes[0])
    user = researcher_for(federation)
    task = user.create_task(
        federation.collaboration_id, [federation.organization_ids[0]], image("sleep-algo"),
        {"method": "sleep", "kwargs": {"seconds": 600}},
    )
    (run_id,) = [run["id"] for run in admin.runs_of_task(task["id"])]
    node.wait_for(f"run {run_id} (task {task['id']}) started")
    user.call("kill_task", task_id=task["id"])
    node.wait_for(f"run {run_id} reported: killed by user")
    (run,) = user.runs(task["id"])
    assert run["status"] == "killed by user"
    # Removed while the node still runs, on whichever host ran it: only the node's networks stay.
    still = {
        "networks": networks_of(node.name),  # the node's, and its relay on the manager, until it stops
        f"containers on {swarm.manager.name}": [f"/vantage6-{node.name}-user-net-proxy"],
    }
    assert until_nothing_left(swarm, node.name, expected=still) == {"services": [], **still}
    assert node.stop() == 0
    assert until_nothing_left(swarm, node.name) == {"services": [], "networks": []}


def test_a_worker_that_dies_mid_run_fails_the_run_with_why(
    make_federation, start_swarm_node, researcher_for, admin, swarm
):
    federation = make_federation(n_orgs=1)
    # Kept off the manager, which must survive to tell what happened.
    node = start_swarm_node(federation.nodes[0], runtime={"constraints": ["node.role == worker"]})
    user = researcher_for(federation)
    task = user.create_task(
        federation.collaboration_id, [federation.organization_ids[0]], image("sleep-algo"),
        {"method": "sleep", "kwargs": {"seconds": 600}},
    )
    (run_id,) = [run["id"] for run in admin.runs_of_task(task["id"])]
    node.wait_for(f"run {run_id} (task {task['id']}) started")
    worker = next(host for host in swarm.workers if host.name == placements(node.output, node.name)[run_id])
    try:
        worker.kill()
        node.wait_for(f"run {run_id} reported: failed", timeout=120)
        (run,) = user.runs(task["id"])
        assert run["status"] == "failed"
        assert f"the swarm host {worker.name} that ran the algorithm went down" in run["log"]
        assert left_in_swarm(swarm, node.name)["services"] == []
    finally:
        swarm.restart_host(worker)
    assert node.stop() == 0
    # Back up, the worker removes the container of the job that no longer exists.
    assert until_nothing_left(swarm, node.name) == {"services": [], "networks": []}
