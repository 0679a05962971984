"""The algorithm proxy on the gateway of a real internal Docker network, as containers see it."""
from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from v6node.adapters.crypto.base64_cryptor import Base64Cryptor
from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.proxy.starlette_proxy_server import StarletteProxyServer
from v6node.domain.containers import ContainerSpec, Mount, managed_labels
from tests.rig.images import ensure_images
from tests.rig.paths import image

pytestmark = pytest.mark.docker

SHELL = image("shell-algo")
V6_ALGO = image("v6-algo")
API = "http://server.test/api"
TOKEN = "container-token-of-run-7"
PROMPTLY = 5


@pytest.fixture(scope="module", autouse=True)
def images() -> None:
    ensure_images(["shell-algo", "v6-algo"])


class FakeServer:
    """Just enough of the vantage6 server for one central_mean run, over two organizations."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self.subtasks: list[dict[str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/")
        self.seen.append((request.method, path, request.headers.get("authorization", "")))
        route = (request.method, path)
        if route == ("GET", "organization"):
            return httpx.Response(200, json={"data": [{"id": 1}, {"id": 2}], "links": {}})
        if route in (("GET", "organization/1"), ("GET", "organization/2")):
            return httpx.Response(200, json={"id": int(path[-1]), "public_key": ""})
        if route == ("GET", "blobstream/status"):
            return httpx.Response(200, json={"blob_store_enabled": False})
        if route == ("POST", "task"):
            self.subtasks.append(json.loads(request.content))
            return httpx.Response(201, json={"id": 42})
        if route == ("GET", "task/42/status"):
            return httpx.Response(200, json={"status": "completed"})
        if route == ("GET", "result") and request.url.params.get("task_id") == "42":
            partials = [{"sum": 10, "count": 4}, {"sum": 20.5, "count": 1}]
            data = [{"id": i, "result": _b64(json.dumps(p).encode())} for i, p in enumerate(partials, 1)]
            return httpx.Response(200, json={"data": data, "links": {}})
        return httpx.Response(404, json={"msg": f"no fake route for {request.method} {path}"})


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
async def proxy(network: tuple[str, str], server: FakeServer) -> AsyncIterator[StarletteProxyServer]:
    """The proxy listening on the network's gateway address, TOKEN authorized."""
    proxy = StarletteProxyServer(API, transport=httpx.MockTransport(server.handle))
    await proxy.start(network[1], Base64Cryptor())
    proxy.authorize(TOKEN)
    yield proxy
    await proxy.stop()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def container_token(**identity: Any) -> str:
    """A JWT shaped like the server's container tokens (the algorithm client does not verify it)."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps({"sub": identity, "iat": 1, "type": "container"}).encode())
    return f"{header}.{payload}.{_b64url(b'not-checked')}"


async def run_to_end(runtime: DockerContainerRuntime, spec: ContainerSpec) -> tuple[int, str]:
    container_id = await runtime.run(spec)
    exit_ = await asyncio.wait_for(runtime.wait(container_id), 120)
    return exit_.exit_code, await runtime.logs(container_id)


def shell(node: str, name: str, script: str, network: str) -> ContainerSpec:
    return ContainerSpec(
        name=f"{node}-{name}", image=SHELL, network=network, environment={"SCRIPT": script},
        labels=managed_labels(node),
    )


async def test_a_container_on_the_algorithm_network_reaches_health_on_the_gateway(
    runtime: DockerContainerRuntime, network: tuple[str, str], node: str, proxy: StarletteProxyServer
) -> None:
    name, gateway = network
    spec = shell(node, "health", f"timeout 5 wget -qO- http://{gateway}:{proxy.port}/health", name)

    code, logs = await run_to_end(runtime, spec)

    assert code == 0, logs
    assert json.loads(logs.strip().splitlines()[-1]) == {"status": "ok"}


async def test_bound_to_the_gateway_the_proxy_is_not_on_loopback(
    network: tuple[str, str], proxy: StarletteProxyServer
) -> None:
    async with httpx.AsyncClient(timeout=PROMPTLY) as host:
        on_gateway = await host.get(f"http://{network[1]}:{proxy.port}/health")
        with pytest.raises(httpx.ConnectError):
            await host.get(f"http://127.0.0.1:{proxy.port}/health")

    assert on_gateway.status_code == 200


async def test_a_container_with_an_authorized_token_is_forwarded_and_one_without_is_refused(
    runtime: DockerContainerRuntime, network: tuple[str, str], node: str, proxy: StarletteProxyServer,
    server: FakeServer,
) -> None:
    name, gateway = network
    url = f"http://{gateway}:{proxy.port}/organization/1"
    script = (
        f"timeout 5 wget -qO- --header 'Authorization: Bearer {TOKEN}' {url}; echo; "
        f"timeout 5 wget -qO- --header 'Authorization: Bearer forged' {url} 2>&1 || echo REFUSED"
    )

    code, logs = await run_to_end(runtime, shell(node, "forward", script, name))

    assert code == 0, logs
    assert json.loads(logs.strip().splitlines()[0]) == {"id": 1, "public_key": ""}
    assert logs.strip().splitlines()[1:] == ["wget: server returned error: HTTP/1.1 401 Unauthorized", "REFUSED"]
    assert server.seen == [("GET", "organization/1", f"Bearer {TOKEN}")]


async def test_the_real_algorithm_client_computes_a_federated_mean_through_the_proxy(
    runtime: DockerContainerRuntime, network: tuple[str, str], node: str, proxy: StarletteProxyServer,
    server: FakeServer, tmp_path: Path,
) -> None:
    name, gateway = network
    (tmp_path / "input").write_text(json.dumps({"method": "central_mean", "kwargs": {"column": "age"}}))
    (tmp_path / "output").write_bytes(b"")
    token = container_token(
        image=V6_ALGO, databases=[{"label": "default", "type": "csv"}], node_id=5, collaboration_id=3,
        organization_id=1, task_id=41,
    )
    (tmp_path / "token").write_text(token)
    proxy.authorize(token)
    spec = ContainerSpec(
        name=f"{node}-central",
        image=V6_ALGO,
        network=name,
        environment={
            "INPUT_FILE": "/mnt/data/input", "OUTPUT_FILE": "/mnt/data/output", "TOKEN_FILE": "/mnt/data/token",
            "HOST": f"http://{gateway}", "PORT": str(proxy.port), "API_PATH": "",
        },
        mounts=(Mount(str(tmp_path), "/mnt/data"),),
        labels=managed_labels(node),
    )

    code, logs = await run_to_end(runtime, spec)

    assert code == 0, logs
    assert json.loads((tmp_path / "output").read_text()) == {
        "mean": 30.5 / 5, "sum": 30.5, "count": 5, "organizations": 2
    }
    [subtask] = server.subtasks
    assert [org["id"] for org in subtask["organizations"]] == [1, 2]
    for org in subtask["organizations"]:
        assert json.loads(base64.b64decode(org["input"])) == {"method": "partial_mean", "kwargs": {"column": "age"}}
    assert subtask["image"] == V6_ALGO and subtask["collaboration_id"] == 3
    assert {auth for _, _, auth in server.seen} == {f"Bearer {token}"}


async def test_partial_mean_reads_the_requested_database(
    runtime: DockerContainerRuntime, network: tuple[str, str], node: str, tmp_path: Path
) -> None:
    (tmp_path / "input").write_text(json.dumps({"method": "partial_mean", "kwargs": {"column": "age"}}))
    (tmp_path / "output").write_bytes(b"")
    (tmp_path / "db.csv").write_text("age,name\n30,a\n41,b\nunknown,c\n")
    spec = ContainerSpec(
        name=f"{node}-partial",
        image=V6_ALGO,
        network=network[0],
        environment={
            "INPUT_FILE": "/mnt/data/input", "OUTPUT_FILE": "/mnt/data/output",
            "USER_REQUESTED_DATABASE_LABELS": "default", "DEFAULT_DATABASE_URI": "/mnt/data/db.csv",
            "DEFAULT_DATABASE_TYPE": "csv",
        },
        mounts=(Mount(str(tmp_path), "/mnt/data"),),
        labels=managed_labels(node),
    )

    code, logs = await run_to_end(runtime, spec)

    assert code == 0, logs
    assert json.loads((tmp_path / "output").read_text()) == {"sum": 71, "count": 2}
