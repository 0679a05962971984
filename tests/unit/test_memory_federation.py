"""The in-memory server of run-local: shared by several nodes, and the REST endpoints algorithms call."""
from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timezone

import httpx
import pytest

from v6node.adapters.crypto.rsa_cryptor import RsaCryptor
from v6node.adapters.memory.federation import MemoryFederation
from v6node.domain.errors import NodeError, ServerRejected
from v6node.domain.events import Connected, NewTask
from v6node.domain.model import RequestedDatabase, RunUpdate
from v6node.domain.status import RunStatus
from v6node.ports.local_federation import LocalFederation

NOW = datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def jwt_payload(token: str) -> dict:
    """What the algorithm client reads from a token (it does not check the signature)."""
    header, payload, signature = token.split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "HS256", "typ": "JWT"} and signature
    return json.loads(base64.urlsafe_b64decode(payload + "=="))


def b64(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


async def logged_in(federation: MemoryFederation) -> None:
    for server in federation.servers.values():
        await server.authenticate()


async def central_task(federation: MemoryFederation, image: str = "algo:1"):
    """A researcher's task on organization 1 and the container token of its run there."""
    await logged_in(federation)
    task = await federation.create_task(image, b'{"method": "central"}', (1,), (RequestedDatabase("default"),))
    token = await federation.servers[1].request_container_token(task.id, image)
    return task, token


def client(federation: MemoryFederation, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=federation.transport, base_url="http://localhost/api", headers=headers)


def announced(federation: MemoryFederation, org: int) -> list[object]:
    stream = federation.events[org]
    return [stream._queue.get_nowait() for _ in range(stream._queue.qsize())]  # noqa: SLF001 - what was pushed


def test_it_is_a_local_federation_and_points_each_node_at_itself(tmp_path) -> None:
    federation = MemoryFederation(2)
    assert isinstance(federation, LocalFederation)
    assert federation.organization_ids == (1, 2)
    assert federation.node_settings(2) == {"api_key": "api-key-2", "server_url": "http://localhost", "api_path": "/api"}
    adapters = federation.node_adapters(2)
    assert adapters["server"] is federation.servers[2] and adapters["events"] is federation.events[2]
    assert adapters["proxy_transport"] is federation.transport
    encrypted = MemoryFederation(1, encrypted=True, key_folder=str(tmp_path))
    key = encrypted.node_settings(1)["encryption"]["private_key"]
    assert (tmp_path / "privkey_org-1.pem").samefile(key)
    assert (tmp_path / "privkey_org-1.pem").stat().st_mode & 0o777 == 0o600


async def test_the_nodes_share_one_server_each_as_its_own_organization() -> None:
    federation = MemoryFederation(2)
    await logged_in(federation)
    task = await federation.create_task("algo:1", b'{"method": "m"}', (1, 2), ())
    for org in (1, 2):
        (run,) = await federation.servers[org].list_open_runs(task.id)
        assert run.organization_id == org and base64.b64decode(run.input) == b'{"method": "m"}'
        assert announced(federation, org) == [NewTask(task.id, None)]
    run_of_2 = next(r for r in federation.state.runs.values() if r.organization_id == 2)
    with pytest.raises(ServerRejected, match="not your algorithm run"):
        await federation.servers[1].update_run(run_of_2.id, RunUpdate.started(NOW))


async def test_container_tokens_are_jwts_that_say_who_the_algorithm_is() -> None:
    federation = MemoryFederation(2)
    task, token = await central_task(federation)
    sub = jwt_payload(token)["sub"]
    assert sub == {
        "client_type": "container", "node_id": 101, "organization_id": 1, "collaboration_id": 1, "study_id": None,
        "store_id": None, "task_id": task.id, "image": "algo:1", "databases": [{"label": "default"}],
    }


async def test_only_tokens_the_server_issued_are_served() -> None:
    federation = MemoryFederation(1)
    _, token = await central_task(federation)
    async with client(federation) as anonymous:
        assert (await anonymous.get("organization")).status_code == 401
    forged = token[:-4] + "AAAA"
    async with client(federation, forged) as impostor:
        assert (await impostor.get("organization")).status_code == 422
    async with client(federation, token) as algorithm:
        assert (await algorithm.get("organization")).status_code == 200


async def test_organizations_of_the_collaboration_page_by_page() -> None:
    federation = MemoryFederation(3)
    _, token = await central_task(federation)
    async with client(federation, token) as algorithm:
        first = (await algorithm.get("organization", params={"collaboration_id": 1, "per_page": 2})).json()
        assert [org["id"] for org in first["data"]] == [1, 2] and "next" in first["links"]
        second = (await algorithm.get("organization", params={"collaboration_id": 1, "per_page": 2, "page": 2})).json()
        assert [org["id"] for org in second["data"]] == [3] and "next" not in second["links"]
        assert (await algorithm.get("organization", params={"collaboration_id": 7})).status_code == 401
        assert (await algorithm.get("organization/2")).json()["name"] == "org-2"
        assert (await algorithm.get("organization/9")).status_code == 404
        assert (await algorithm.get("collaboration/1")).json()["encrypted"] is False


async def test_an_algorithm_creates_a_subtask_of_its_own_task_for_the_organizations_it_names() -> None:
    federation = MemoryFederation(2)
    task, token = await central_task(federation)
    for org in (1, 2):
        announced(federation, org)
    body = {
        "name": "partial", "image": "algo:1", "collaboration_id": 1, "description": "d", "databases": [{"label": "default"}],
        "organizations": [{"id": 1, "input": b64({"method": "partial", "kwargs": {"n": 1}})},
                          {"id": 2, "input": b64({"method": "partial", "kwargs": {"n": 2}})}],
    }
    async with client(federation, token) as algorithm:
        answer = await algorithm.post("task", json=body)
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["parent"]["id"] == task.id and created["job_id"] == task.job_id
    assert created["init_org"]["id"] == 1 and created["image"] == "algo:1" and created["status"] == "pending"
    assert created["databases"] == [{"label": "default", "parameters": "{}"}]
    sub = federation.state.tasks[created["id"]]
    assert sub.init_user_id == task.init_user_id and sub.databases == (RequestedDatabase("default"),)
    inputs = {run.organization_id: json.loads(base64.b64decode(run.input)) for run in federation.state.runs_of(sub.id)}
    assert inputs == {1: {"method": "partial", "kwargs": {"n": 1}}, 2: {"method": "partial", "kwargs": {"n": 2}}}
    for org in (1, 2):
        assert announced(federation, org) == [NewTask(sub.id, task.id)]
    assert federation.subtasks(task.id) == (sub,)


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"image": "other:1"}, 401, "Container-token is not valid"),
        ({"collaboration_id": 5}, 404, "Collaboration id=5 not found"),
        ({"organizations": [{"id": 9, "input": b64({})}]}, 400, "not within the collaboration"),
        ({"organizations": [{"id": 1, "input": "AAEC/w=="}]}, 400, "cannot be parsed"),
        ({"organizations": []}, 400, "Request body is incorrect"),
        ({"databases": [{"name": "x"}]}, 400, "Request body is incorrect"),
        ({"image": ""}, 400, "Request body is incorrect"),
    ],
)
async def test_the_server_refuses_what_it_refuses_a_container(change, status, says) -> None:
    federation = MemoryFederation(1)
    _, token = await central_task(federation)
    body = {"image": "algo:1", "collaboration_id": 1, "organizations": [{"id": 1, "input": b64({})}], **change}
    async with client(federation, token) as algorithm:
        answer = await algorithm.post("task", json=body)
    assert (answer.status_code, says in answer.json()["msg"]) == (status, True)
    assert len(federation.state.tasks) == 1


async def test_a_finished_task_cannot_get_subtasks() -> None:
    federation = MemoryFederation(1)
    task, token = await central_task(federation)
    (run,) = federation.state.runs_of(task.id)
    await federation.servers[1].update_run(run.id, RunUpdate.finished(RunStatus.CRASHED, NOW, "log"))
    async with client(federation, token) as algorithm:
        answer = await algorithm.post("task", json={"image": "algo:1", "collaboration_id": 1,
                                                    "organizations": [{"id": 1, "input": b64({})}]})
    assert answer.status_code == 401


async def test_status_runs_and_results_as_the_algorithm_client_reads_them() -> None:
    federation = MemoryFederation(2)
    await logged_in(federation)
    task = await federation.create_task("algo:1", b"{}", (1, 2), ())
    token = await federation.servers[1].request_container_token(task.id, "algo:1")
    runs = {run.organization_id: run for run in federation.state.runs_of(task.id)}
    await federation.servers[2].update_run(runs[2].id, RunUpdate.finished(RunStatus.COMPLETED, NOW, "two", b64({"n": 2})))
    async with client(federation, token) as algorithm:
        assert (await algorithm.get(f"task/{task.id}/status")).json() == {"status": "pending"}
        results = (await algorithm.get("result", params={"task_id": task.id})).json()["data"]
        assert [item["run"]["id"] for item in results] == [runs[2].id, runs[1].id]  # newest first, as the server
        assert json.loads(base64.b64decode(results[0]["result"])) == {"n": 2} and results[1]["result"] is None
        assert (await algorithm.get(f"result/{runs[2].id}")).json()["result"] == results[0]["result"]
        listed = (await algorithm.get("run", params={"task_id": task.id})).json()["data"]
        assert {run["status"] for run in listed} == {"completed", "pending"} and "result" not in listed[0]
        assert (await algorithm.get(f"run/{runs[2].id}")).json()["log"] == "two"
        assert (await algorithm.get(f"task/{task.id}")).json()["runs"] == f"/api/run?task_id={task.id}"
        assert (await algorithm.get("result", params={"task_id": 999})).status_code == 400
        assert (await algorithm.get("blobstream/status")).json() == {"blob_store_enabled": False}
        unknown = await algorithm.get("vpn/algorithm/addresses")
        assert unknown.status_code == 404 and "not served" in unknown.json()["msg"]


async def test_waiting_for_a_job_ends_when_its_last_run_is_reported() -> None:
    federation = MemoryFederation(1)
    task, token = await central_task(federation)
    (run,) = federation.state.runs_of(task.id)
    waiting = asyncio.create_task(federation.until_job_finished(task.id))
    await asyncio.sleep(0)
    assert not waiting.done()
    await federation.servers[1].update_run(run.id, RunUpdate.finished(RunStatus.COMPLETED, NOW, "ok", b64(1)))
    async with asyncio.timeout(5):
        await waiting
    report = federation.report(task.id)
    assert (report.status, report.runs[0].result_json(), report.runs[0].log) == ("completed", 1, "ok")


async def test_in_an_encrypted_collaboration_inputs_are_encrypted_per_organization_and_results_read_by_the_initiator(tmp_path) -> None:
    federation = MemoryFederation(2, encrypted=True, key_folder=str(tmp_path))
    keys = {org: RsaCryptor.from_file(federation.node_settings(org)["encryption"]["private_key"]) for org in (1, 2)}
    await logged_in(federation)
    with pytest.raises(NodeError, match="no public key"):
        await federation.create_task("algo:1", b"{}", (1, 2), ())
    for org, cryptor in keys.items():  # what each node does when it starts
        await federation.servers[org].set_organization_public_key(org, cryptor.own_public_key())
    task = await federation.create_task("algo:1", b'{"method": "m"}', (1, 2), ())
    runs = {run.organization_id: run for run in federation.state.runs_of(task.id)}
    assert all(keys[org].decrypt_str(runs[org].input) == b'{"method": "m"}' for org in (1, 2))
    result = keys[2].encrypt_to_str(b'{"mean": 4}', keys[1].own_public_key())  # node 2 reports for organization 1
    await federation.servers[2].update_run(runs[2].id, RunUpdate.finished(RunStatus.COMPLETED, NOW, "", result))
    reported = {run.organization_id: run for run in federation.report(task.id).runs}
    assert reported[2].result_json() == {"mean": 4}
    token = await federation.servers[1].request_container_token(task.id, "algo:1")
    async with client(federation, token) as algorithm:
        plain = await algorithm.post("task", json={"image": "algo:1", "collaboration_id": 1,
                                                   "organizations": [{"id": 2, "input": b64({})}]})
    assert plain.status_code == 400 and "requires encryption" in plain.json()["msg"]


async def test_events_of_a_node_start_with_its_connection() -> None:
    federation = MemoryFederation(1)
    await logged_in(federation)
    stream = federation.events[1].events()
    assert await anext(stream) == Connected(reconnect=False)
    await stream.aclose()
