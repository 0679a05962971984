"""A user creates tasks with the real vantage6 client; our node runs them in real Docker."""
from __future__ import annotations

import json
import re
import signal

import attrs
import pytest

from tests.e2e.conftest import NO_LEFTOVERS, leftovers
from tests.rig.paths import image

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.server]


@pytest.fixture
def node_and_user(make_federation, start_node, researcher_for):
    federation = make_federation()
    node = start_node(federation.nodes[0])
    return federation, node, researcher_for(federation)


def run_of(researcher, task_id):
    (run,) = researcher.runs(task_id)
    return run


def as_json(result):
    return json.loads(result) if isinstance(result, str) else result


def test_result_is_what_the_algorithm_wrote(node_and_user, admin):
    federation, node, user = node_and_user
    task_input = {"method": "echo", "args": [], "kwargs": {"x": 1}}
    task = user.create_task(federation.collaboration_id, [federation.organization_ids[0]], image("echo-algo"), task_input)
    (result,) = user.wait_for_results(task["id"])
    assert as_json(result["result"]) == {"echo": task_input}
    run = run_of(user, task["id"])
    assert run["status"] == "completed"
    assert "echo-algo: read" in run["log"]
    assert run["started_at"] and run["finished_at"]
    # The server saw the node online (websocket connected).
    assert admin.get(f"/node/{federation.nodes[0].node_id}")["status"] == "online"


def test_a_crashing_algorithm_ends_crashed_with_its_log(node_and_user):
    federation, node, user = node_and_user
    task = user.create_task(federation.collaboration_id, [federation.organization_ids[0]], image("crash-algo"), {"method": "x"})
    user.wait_for_results(task["id"])
    run = run_of(user, task["id"])
    assert run["status"] == "crashed"
    assert "crash-algo: failing on purpose" in run["log"]


def test_an_unknown_image_ends_as_non_existing_docker_image(node_and_user, docker_client):
    federation, node, user = node_and_user
    missing = image("no-such-algorithm", "404")
    task = user.create_task(federation.collaboration_id, [federation.organization_ids[0]], missing, {"method": "x"})
    user.wait_for_results(task["id"])
    run = run_of(user, task["id"])
    assert run["status"] == "non-existing Docker image"
    assert missing in run["log"]
    assert docker_client.containers.list(all=True, filters={"label": f"v6node.node={node.name}"}) == []


def test_ten_tasks_at_once_all_complete(node_and_user):
    federation, node, user = node_and_user
    org = federation.organization_ids[0]
    tasks = [
        user.create_task(federation.collaboration_id, [org], image("echo-algo"), {"method": "echo", "kwargs": {"i": i}})
        for i in range(10)
    ]
    for i, task in enumerate(tasks):
        (result,) = user.wait_for_results(task["id"])
        assert as_json(result["result"])["echo"]["kwargs"] == {"i": i}
        assert run_of(user, task["id"])["status"] == "completed"
    # One container start per run: the node ran none of them twice.
    starts = re.findall(r"run (\d+) \(task (\d+)\) started", node.output)
    assert sorted(int(task_id) for _, task_id in starts) == sorted(task["id"] for task in tasks)


def test_stopping_the_node_leaves_nothing_behind(make_federation, start_node, researcher_for, docker_client, admin):
    federation = make_federation()
    node = start_node(federation.nodes[0])
    user = researcher_for(federation)
    task = user.create_task(
        federation.collaboration_id, [federation.organization_ids[0]], image("sleep-algo"), {"method": "sleep", "kwargs": {"seconds": 600}}
    )
    run_id = admin.runs_of_task(task["id"])[0]["id"]
    # Wait until the algorithm container is really there (the node logs its start).
    node.wait_for(f"run {run_id} (task {task['id']}) started")
    assert leftovers(docker_client, node.name)["containers"]
    assert node.stop(signal.SIGTERM) == 0
    assert leftovers(docker_client, node.name) == NO_LEFTOVERS


def test_a_wrong_api_key_is_a_clear_fatal_error(make_federation, start_node):
    federation = make_federation()
    bad = attrs.evolve(federation.nodes[0], api_key="00000000-0000-0000-0000-000000000000")
    node = start_node(bad, wait=False)
    assert node.wait_exit(timeout=60) == 3
    assert "not recognised" in node.output or "not recognized" in node.output
