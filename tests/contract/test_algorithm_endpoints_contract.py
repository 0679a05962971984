"""One suite for the REST endpoints algorithm containers call, with a container token: run against
the in-memory server that run-local's nodes share (MemoryFederation) and against the real server."""
from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any, Protocol

import httpx
import pytest
import pytest_asyncio

from v6node.adapters.http.httpx_server_api import HttpxServerApi
from v6node.adapters.memory.federation import MemoryFederation
from v6node.adapters.system.system_clock import SystemClock
from v6node.domain.model import RunUpdate
from v6node.domain.status import RunStatus
from v6node.ports.server_api import ServerApi
from tests.rig.server import AdminApi, Federation, RealServer, create_federation

IMAGE = "127.0.0.1:5999/contract-algo:1"
pytestmark = pytest.mark.asyncio(loop_scope="module")


def encoded(value: Any) -> str:
    """Input as the algorithm client sends it in an unencrypted collaboration."""
    return base64.b64encode(json.dumps(value).encode()).decode()


class Driver(Protocol):
    collaboration_id: int
    organization_ids: tuple[int, ...]
    node: ServerApi  # the node of the first organization, logged in

    async def central_task(self) -> tuple[int, str]:
        """A researcher's task for the first organization, and its run's container token there."""

    def client(self, token: str | None) -> httpx.AsyncClient: ...

    async def aclose(self) -> None: ...


class MemoryDriver:
    def __init__(self) -> None:
        self.federation = MemoryFederation(2)
        self.collaboration_id = self.federation.collaboration_id
        self.organization_ids = self.federation.organization_ids
        self.node = self.federation.servers[1]

    async def central_task(self) -> tuple[int, str]:
        task = await self.federation.create_task(IMAGE, json.dumps({"method": "central"}).encode(), (1,), ())
        return task.id, await self.node.request_container_token(task.id, IMAGE)

    def client(self, token: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(transport=self.federation.transport, base_url="http://localhost/api", headers=headers)

    async def aclose(self) -> None:
        pass


class RealServerDriver:
    def __init__(self, server: RealServer, federation: Federation) -> None:
        self.server = server
        self.collaboration_id = federation.collaboration_id
        self.organization_ids = federation.organization_ids
        self.node = HttpxServerApi(server.api, server.root, federation.nodes[0].api_key, SystemClock(), max_attempts=2)
        self.user = httpx.Client(base_url=server.api, timeout=30)
        login = self.user.post("/token/user", json={"username": federation.user.username, "password": federation.user.password})
        login.raise_for_status()
        self.user.headers["Authorization"] = f"Bearer {login.json()['access_token']}"

    async def central_task(self) -> tuple[int, str]:
        body = {
            "name": "central", "image": IMAGE, "collaboration_id": self.collaboration_id, "description": "",
            "organizations": [{"id": self.organization_ids[0], "input": encoded({"method": "central"})}],
            "databases": [],
        }
        made = self.user.post("/task", json=body)
        assert made.status_code == 201, made.text
        task_id = made.json()["id"]
        return task_id, await self.node.request_container_token(task_id, IMAGE)

    def client(self, token: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.server.api, headers=headers, timeout=30)

    async def aclose(self) -> None:
        self.user.close()
        await self.node.aclose()


@pytest_asyncio.fixture(
    scope="module", loop_scope="module", params=["memory", pytest.param("real", marks=pytest.mark.server)]
)
async def driver(request: pytest.FixtureRequest) -> AsyncIterator[Driver]:
    if request.param == "memory":
        made: Driver = MemoryDriver()
    else:
        federation = create_federation(request.getfixturevalue("admin"), f"algo-{uuid.uuid4().hex[:8]}", n_orgs=2)
        made = RealServerDriver(request.getfixturevalue("real_server"), federation)
    await made.node.authenticate()
    yield made
    await made.aclose()


async def subtask(driver: Driver, token: str, **changes: Any) -> httpx.Response:
    body = {
        "name": "partial", "image": IMAGE, "collaboration_id": driver.collaboration_id, "description": "sub",
        "organizations": [{"id": org, "input": encoded({"method": "partial", "org": org})} for org in driver.organization_ids],
        "databases": [{"label": "default"}],
        **changes,
    }
    async with driver.client(token) as algorithm:
        return await algorithm.post("task", json=body)


async def test_a_token_is_needed_and_must_be_the_servers(driver: Driver) -> None:
    _, token = await driver.central_task()
    async with driver.client(None) as anonymous:
        missing = await anonymous.get("organization")
        assert (missing.status_code, missing.json()) == (401, {"msg": "Missing Authorization Header"})
    header, payload, _ = token.split(".")
    async with driver.client(f"{header}.{payload}.c2lnbmF0dXJl") as impostor:
        forged = await impostor.get(f"organization/{driver.organization_ids[0]}")
        assert (forged.status_code, forged.json()) == (422, {"msg": "Signature verification failed"})


async def test_the_organizations_of_the_collaboration(driver: Driver) -> None:
    _, token = await driver.central_task()
    async with driver.client(token) as algorithm:
        listed = await algorithm.get("organization", params={"collaboration_id": driver.collaboration_id, "page": 1})
        assert listed.status_code == 200
        page = listed.json()
        assert sorted(org["id"] for org in page["data"]) == sorted(driver.organization_ids)
        assert {"id", "name", "public_key"} <= set(page["data"][0]) and "next" not in page["links"]
        other = (await algorithm.get(f"organization/{driver.organization_ids[1]}")).json()
        assert other["id"] == driver.organization_ids[1] and "public_key" in other
        collaboration = (await algorithm.get(f"collaboration/{driver.collaboration_id}")).json()
        assert collaboration["id"] == driver.collaboration_id and collaboration["encrypted"] is False
        assert (await algorithm.get("blobstream/status")).json() == {"blob_store_enabled": False}


async def test_an_algorithm_reads_its_task_and_its_status(driver: Driver) -> None:
    task_id, token = await driver.central_task()
    async with driver.client(token) as algorithm:
        assert (await algorithm.get(f"task/{task_id}/status")).json() == {"status": "pending"}
        task = (await algorithm.get(f"task/{task_id}")).json()
        assert (task["id"], task["image"], task["parent"], task["init_org"]["id"]) == (
            task_id, IMAGE, None, driver.organization_ids[0],
        )
        assert task["job_id"] is not None and task["databases"] == []


async def test_a_subtask_belongs_to_the_algorithms_task_and_job(driver: Driver) -> None:
    task_id, token = await driver.central_task()
    answer = await subtask(driver, token)
    assert answer.status_code == 201, answer.text
    created = answer.json()
    async with driver.client(token) as algorithm:
        parent = (await algorithm.get(f"task/{task_id}")).json()
        assert created["parent"]["id"] == task_id and created["job_id"] == parent["job_id"]
        assert created["init_org"]["id"] == driver.organization_ids[0] and created["image"] == IMAGE
        assert created["databases"] == [{"label": "default", "parameters": "{}"}]
        runs = (await algorithm.get("run", params={"task_id": created["id"]})).json()["data"]
        assert sorted(run["organization"]["id"] for run in runs) == sorted(driver.organization_ids)
        assert {run["status"] for run in runs} == {"pending"} and all("result" not in run for run in runs)
        assert [run["id"] for run in runs] == sorted((run["id"] for run in runs), reverse=True)


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"image": "127.0.0.1:5999/other-algo:1"}, 401, "Container-token is not valid"),
        ({"organizations": [{"id": 999999, "input": encoded({})}]}, 400, "not within the collaboration"),
        ({"organizations": [{"id": 0, "input": encoded({})}]}, 400, "not within the collaboration"),
        ({"databases": [{"parameters": {}}]}, 400, "Request body is incorrect"),
        ({"organizations": []}, 400, "Request body is incorrect"),
        ({"organizations": [{"input": encoded({})}]}, 400, "Request body is incorrect"),
        ({"collaboration_id": 999999}, 404, "Collaboration id=999999 not found"),
    ],
)
async def test_what_the_server_refuses_a_container(driver: Driver, change, status, says) -> None:
    _, token = await driver.central_task()
    answer = await subtask(driver, token, **change)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["msg"]


async def test_an_undecodable_input_is_refused_in_an_unencrypted_collaboration(driver: Driver) -> None:
    _, token = await driver.central_task()
    undecodable = base64.b64encode(bytes(range(256))).decode()
    answer = await subtask(driver, token, organizations=[{"id": driver.organization_ids[0], "input": undecodable}])
    assert answer.status_code == 400 and "cannot be parsed" in answer.json()["msg"]


async def test_results_of_the_subtasks_as_the_algorithm_client_reads_them(driver: Driver) -> None:
    task_id, token = await driver.central_task()
    created = (await subtask(driver, token)).json()
    ours = driver.organization_ids[0]
    async with driver.client(token) as algorithm:
        runs = (await algorithm.get("run", params={"task_id": created["id"]})).json()["data"]
        mine = next(run["id"] for run in runs if run["organization"]["id"] == ours)
        now = datetime.now(timezone.utc)
        await driver.node.update_run(mine, RunUpdate.started(now))
        await driver.node.update_run(mine, RunUpdate.finished(RunStatus.COMPLETED, now, "partial log", encoded({"n": 1})))
        results = (await algorithm.get("result", params={"task_id": created["id"]})).json()
        assert [item["run"]["id"] for item in results["data"]] == sorted((run["id"] for run in runs), reverse=True)
        by_run = {item["run"]["id"]: item for item in results["data"]}
        assert json.loads(base64.b64decode(by_run[mine]["result"])) == {"n": 1}
        assert {"id", "result", "blob_storage_used"} <= set(by_run[mine])
        assert (await algorithm.get(f"result/{mine}")).json()["result"] == by_run[mine]["result"]
        assert (await algorithm.get(f"run/{mine}")).json()["log"] == "partial log"
        assert (await algorithm.get(f"task/{created['id']}/status")).json() == {"status": "pending"}
        assert (await algorithm.get("result", params={"task_id": 999999})).status_code == 400
