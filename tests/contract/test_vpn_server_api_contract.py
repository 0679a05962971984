"""One VpnServerApi suite, run against MemoryVpnServerApi and HttpxVpnServerApi on the real server.

What the node registers is read back as algorithms read it: ``GET vpn/algorithm/addresses``
with a container token of the task (on the memory server: ``vpn_addresses``). ``GET vpn``
needs an EduVPN portal behind the server, which cannot run here: the real server without
one answers 501; its documented answer (200 with ``ovpn_config``, 500 and 503) is tested
on a fake server in ``tests/unit/test_httpx_vpn_server_api.py``, and what the node does
with it on the memory server.
"""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx
import pytest
import pytest_asyncio

from tests.contract.test_server_api_contract import INPUT, MemoryDriver, RealServerDriver
from tests.rig.server import create_federation
from v6node.adapters.http.httpx_server_api import HttpxServerApi
from v6node.adapters.http.httpx_vpn_server_api import HttpxVpnServerApi
from v6node.adapters.memory.vpn import MemoryVpnServerApi
from v6node.domain.errors import ServerRejected
from v6node.ports.vpn_server_api import VpnServerApi

pytestmark = pytest.mark.asyncio(loop_scope="module")
IMAGE = "127.0.0.1:5999/contract-vpn-algo:1"


class VpnDriver(Protocol):
    vpn: VpnServerApi
    node_id: int

    def create_task(self) -> int: ...

    def run_id(self, task_id: int, ours: bool = True) -> int: ...

    async def addresses(self, task_id: int) -> list[dict[str, Any]]:
        """What an algorithm of our run of ``task_id`` gets from ``GET vpn/algorithm/addresses``."""


class MemoryVpnDriver:
    def __init__(self) -> None:
        self.base = MemoryDriver()
        self.vpn = self.memory = MemoryVpnServerApi(self.base.server)
        self.node_id = self.base.identity.node_id

    def create_task(self) -> int:
        return self.base.server.create_task(IMAGE, INPUT, (1, 2)).id

    def run_id(self, task_id: int, ours: bool = True) -> int:
        return self.base.run_id(task_id, ours)

    async def addresses(self, task_id: int) -> list[dict[str, Any]]:
        return self.memory.vpn_addresses(task_id, self.base.identity.organization_id)


class RealVpnDriver:
    def __init__(self, base: RealServerDriver) -> None:
        self.base = base
        assert isinstance(base.api, HttpxServerApi)
        self.vpn = HttpxVpnServerApi(base.api)
        self.node_id = base.identity.node_id

    def create_task(self) -> int:
        return self.base.create_task(IMAGE)

    def run_id(self, task_id: int, ours: bool = True) -> int:
        return self.base.run_id(task_id, ours)

    async def addresses(self, task_id: int) -> list[dict[str, Any]]:
        token = await self.base.api.request_container_token(task_id, IMAGE)
        async with httpx.AsyncClient(base_url=self.base.server.api, timeout=30) as http:
            answer = await http.get("/vpn/algorithm/addresses", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        return list(answer.json()["addresses"])


@pytest_asyncio.fixture(
    scope="module", loop_scope="module", params=["memory", pytest.param("httpx", marks=pytest.mark.server)]
)
async def driver(request: pytest.FixtureRequest) -> AsyncIterator[MemoryVpnDriver | RealVpnDriver]:
    if request.param == "memory":
        made: MemoryVpnDriver | RealVpnDriver = MemoryVpnDriver()
        await made.base.api.authenticate()
        yield made
        return
    admin = request.getfixturevalue("admin")
    federation = create_federation(admin, f"vpnapi-{uuid.uuid4().hex[:8]}", n_orgs=2)
    base = RealServerDriver(request.getfixturevalue("real_server"), admin, federation)
    await base.api.authenticate()
    yield RealVpnDriver(base)
    await base.aclose()


def shown(addresses: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((a["ip"], a["port"], a["label"]) for a in addresses)


async def test_registered_ports_are_found_at_the_published_address(driver: VpnDriver) -> None:
    task_id = driver.create_task()
    run_id = driver.run_id(task_id)
    await driver.vpn.set_vpn_address(driver.node_id, "10.76.0.2")
    await driver.vpn.register_port(run_id, 49152, "message")
    await driver.vpn.register_port(run_id, 49153, None)
    assert shown(await driver.addresses(task_id)) == [("10.76.0.2", 49152, "message"), ("10.76.0.2", 49153, None)]


async def test_a_new_address_is_what_peers_find_and_a_cleared_one_is_none(driver: VpnDriver) -> None:
    task_id = driver.create_task()
    await driver.vpn.set_vpn_address(driver.node_id, "10.76.0.2")
    await driver.vpn.register_port(driver.run_id(task_id), 49152, None)
    await driver.vpn.set_vpn_address(driver.node_id, "10.76.0.9")
    assert shown(await driver.addresses(task_id)) == [("10.76.0.9", 49152, None)]
    await driver.vpn.set_vpn_address(driver.node_id, None)
    assert shown(await driver.addresses(task_id)) == [(None, 49152, None)]


async def test_removed_ports_are_gone_and_removing_again_is_harmless(driver: VpnDriver) -> None:
    task_id = driver.create_task()
    run_id = driver.run_id(task_id)
    await driver.vpn.register_port(run_id, 49152, "message")
    await driver.vpn.remove_ports(run_id)
    await driver.vpn.remove_ports(run_id)
    assert await driver.addresses(task_id) == []


async def test_a_port_for_another_organizations_run_is_refused(driver: VpnDriver) -> None:
    task_id = driver.create_task()
    with pytest.raises(ServerRejected) as refused:
        await driver.vpn.register_port(driver.run_id(task_id, ours=False), 49152, None)
    assert refused.value.status == 401
    with pytest.raises(ServerRejected):
        await driver.vpn.remove_ports(driver.run_id(task_id, ours=False))


async def test_a_server_without_a_vpn_service_answers_get_vpn_with_501(driver: VpnDriver) -> None:
    with pytest.raises(ServerRejected) as refused:
        await driver.vpn.vpn_config()
    assert (refused.value.status, refused.value.message) == (501, "This server does not support VPN")
