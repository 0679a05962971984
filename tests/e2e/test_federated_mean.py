"""A real multi-step vantage6 algorithm through our proxy, on two nodes of two organizations."""
from __future__ import annotations

import json
import re

import pytest

from tests.e2e.conftest import encryption
from tests.rig.paths import image

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.server]

AGES = ([30, 40, 50], [20, 60, 35, 45])


def csv_database(folder, ages) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "patients.csv"
    path.write_text("age,name\n" + "".join(f"{age},p{i}\n" for i, age in enumerate(ages)))
    return {"databases": [{"label": "default", "uri": str(path), "type": "csv"}]}


def run_federated_mean(federation, start_node, researcher_for, tmp_path, keys=None):
    nodes = []
    for i, node in enumerate(federation.nodes):
        extra = csv_database(tmp_path / f"org{i}", AGES[i])
        if keys:
            extra.update(encryption(keys[i]))
        nodes.append(start_node(node, **extra))
    user = researcher_for(federation, private_key=str(keys[0]) if keys else None)
    central_org = federation.organization_ids[0]
    task = user.create_task(
        federation.collaboration_id,
        [central_org],
        image("v6-algo"),
        {"method": "central_mean", "kwargs": {"column": "age"}},
        databases=[{"label": "default"}],
    )
    (result,) = user.wait_for_results(task["id"])
    return json.loads(result["result"]), nodes, user, task


def expected_mean() -> float:
    ages = [age for org in AGES for age in org]
    return sum(ages) / len(ages)


def test_federated_mean_in_an_unencrypted_collaboration(make_federation, start_node, researcher_for, tmp_path, admin):
    federation = make_federation(n_orgs=2)
    combined, nodes, user, task = run_federated_mean(federation, start_node, researcher_for, tmp_path)
    assert combined["mean"] == pytest.approx(expected_mean())
    assert combined["count"] == sum(len(org) for org in AGES)
    assert combined["organizations"] == 2
    # The central task created one partial subtask per organization, all completed.
    children = admin.get("/task", parent_id=task["id"])["data"]
    assert len(children) == 1
    runs = admin.runs_of_task(children[0]["id"])
    assert sorted(run["organization"]["id"] for run in runs) == sorted(federation.organization_ids)
    assert {run["status"] for run in runs} == {"completed"}


def test_federated_mean_in_an_encrypted_collaboration(make_federation, start_node, researcher_for, tmp_path, org_keys, admin):
    federation = make_federation(n_orgs=2, encrypted=True)
    combined, nodes, user, task = run_federated_mean(federation, start_node, researcher_for, tmp_path, keys=org_keys)
    assert combined["mean"] == pytest.approx(expected_mean())
    # Subtask inputs and results are stored encrypted on the server.
    child = admin.get("/task", parent_id=task["id"])["data"][0]
    for run in admin.runs_of_task(child["id"]):
        assert run["input"].count("$") == 2 and "partial_mean" not in run["input"]


def test_a_request_with_a_forged_token_is_refused_by_the_proxy(make_federation, start_node, docker_client):
    federation = make_federation(n_orgs=1)
    node = start_node(federation.nodes[0])
    host, port = re.search(r"algorithm proxy at ([\d.]+):(\d+)", node.output).groups()
    network = f"vantage6-{node.name}-user-net"
    forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJmb3JnZWQifQ.c2lnbmF0dXJl"
    script = (
        f"wget -S -O- --header 'Authorization: Bearer {forged}' "
        f"http://{host}:{port}/organization/{federation.organization_ids[0]} 2>&1; true"
    )
    output = docker_client.containers.run(
        image("echo-algo"), ["sh", "-c", script], network=network, remove=True, labels={"v6node.test": "forged"}
    ).decode()
    assert "401" in output
