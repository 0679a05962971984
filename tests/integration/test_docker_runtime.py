"""What only the real Docker engine can show: isolation, limits, concurrency, time-outs, OOM."""
from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import docker.errors
import pytest
from attrs import evolve

from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.domain.containers import (
    AlgorithmSettings,
    ContainerSpec,
    Mount,
    algorithm_environment,
    build_container_spec,
    managed_labels,
    network_name,
    task_folder_name,
    tmp_volume_name,
)
from v6node.domain.errors import ContainerError, ContainerStartFailed, RuntimeUnavailable
from v6node.domain.config import DatabaseConfig
from v6node.domain.model import RequestedDatabase, Run, TaskRef
from tests.rig.images import ensure_images
from tests.rig.paths import image

pytestmark = pytest.mark.docker

SHELL = image("shell-algo")
SLEEP = image("sleep-algo")
ENV = image("env-algo")
MiB = 1024 * 1024
PROMPTLY = 15


@pytest.fixture(scope="module", autouse=True)
def images() -> None:
    ensure_images(["shell-algo", "sleep-algo", "env-algo"])


def shell(node: str, name: str, script: str, network: str, **kwargs: object) -> ContainerSpec:
    """A busybox container running ``script``, labelled as the node's."""
    return ContainerSpec(
        name=f"{node}-{name}",
        image=SHELL,
        network=network,
        environment={"SCRIPT": script},
        labels=managed_labels(node),
        **kwargs,  # type: ignore[arg-type]
    )


async def run_to_end(runtime: DockerContainerRuntime, spec: ContainerSpec) -> tuple[int, bool, str]:
    container_id = await runtime.run(spec)
    exit_ = await asyncio.wait_for(runtime.wait(container_id), 60)
    return exit_.exit_code, exit_.oom_killed, await runtime.logs(container_id)


# --- network -------------------------------------------------------------------------------------
async def test_the_network_is_an_internal_labelled_bridge(
    network: tuple[str, str], docker_client: docker.DockerClient, node: str
) -> None:
    name, gateway = network
    attrs = docker_client.networks.get(name).attrs

    assert attrs["Internal"] is True
    assert attrs["Driver"] == "bridge"
    assert managed_labels(node).items() <= attrs["Labels"].items()
    assert [c["Gateway"] for c in attrs["IPAM"]["Config"]] == [gateway]


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        body = self.server.token.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.visited.set()  # type: ignore[attr-defined]

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def http_on_gateway(network: tuple[str, str]) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer((network[1], 0), _Hello)
    server.token = f"hello-{uuid.uuid4().hex}"  # type: ignore[attr-defined]
    server.visited = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


async def test_a_host_server_on_the_gateway_address_is_reachable_from_the_network(
    runtime: DockerContainerRuntime, network: tuple[str, str], node: str, http_on_gateway: ThreadingHTTPServer
) -> None:
    host, port = http_on_gateway.server_address[:2]
    spec = shell(node, "probe", f"timeout 10 wget -q -O - http://{host}:{port}/", network[0])

    code, _, logs = await run_to_end(runtime, spec)

    assert code == 0, logs
    assert http_on_gateway.token in logs  # type: ignore[attr-defined]
    assert http_on_gateway.visited.is_set()  # type: ignore[attr-defined]


async def test_an_unused_network_that_is_not_isolated_is_replaced_by_an_isolated_one(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, node: str
) -> None:
    name = f"{network_name(node)}-open"
    docker_client.networks.create(name, driver="bridge", internal=False, labels=managed_labels(node))

    await runtime.ensure_network(name, managed_labels(node))

    attrs = docker_client.networks.get(name).attrs
    assert attrs["Internal"] is True
    assert attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"


async def test_a_network_that_is_not_isolated_and_in_use_is_refused(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, node: str
) -> None:
    name = f"{network_name(node)}-open"
    docker_client.networks.create(name, driver="bridge", internal=True, labels=managed_labels(node))
    await runtime.run(shell(node, "user", "sleep 600", name))

    with pytest.raises(ContainerError, match="reach each other"):
        await runtime.ensure_network(name, managed_labels(node))


async def test_containers_on_the_network_cannot_reach_each_other(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, network: tuple[str, str], node: str
) -> None:
    listener_id = await runtime.run(shell(node, "listener", "echo ready; nc -l -p 7000", network[0]))
    address = docker_client.api.inspect_container(listener_id)["NetworkSettings"]["Networks"][network[0]]["IPAddress"]
    probe = shell(node, "neighbour", f"echo hello | timeout 5 nc {address} 7000 && echo reached", network[0])

    code, _, logs = await run_to_end(runtime, probe)

    assert "reached" not in logs and code != 0, logs


async def test_extra_hosts_are_names_in_the_containers_hosts_file(
    runtime: DockerContainerRuntime, network: tuple[str, str], node: str
) -> None:
    spec = evolve(shell(node, "hosts", "cat /etc/hosts", network[0]), extra_hosts={"proxyserver": network[1]})

    code, _, logs = await run_to_end(runtime, spec)

    assert code == 0 and f"{network[1]}\tproxyserver" in logs, logs


async def test_remove_labelled_removes_a_network_that_foreign_containers_still_use(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, network: tuple[str, str], node: str
) -> None:
    stranger = {"v6node.node": f"{node}-stranger"}
    spec = evolve(shell(node, "stranger", "sleep 600", network[0]), labels=stranger)
    container_id = await runtime.run(spec)
    try:
        assert await runtime.remove_labelled(managed_labels(node)) == 1

        with pytest.raises(docker.errors.NotFound):
            docker_client.networks.get(network[0])
        [info] = await runtime.list_containers(stranger)
        assert info.id == container_id and info.running
    finally:
        await runtime.remove_labelled(stranger)


# --- mounts and confinement ---------------------------------------------------------------------------
async def test_a_read_only_bind_mount_cannot_be_written_and_a_read_write_one_can(
    runtime: DockerContainerRuntime, network: tuple[str, str], node: str, tmp_path: Path
) -> None:
    (tmp_path / "ro").mkdir()
    (tmp_path / "rw").mkdir()
    script = "echo a > /mnt/rw/written || exit 41; echo b > /mnt/ro/written && exit 0; exit 42"
    spec = shell(
        node, "mounts", script, network[0],
        mounts=(Mount(str(tmp_path / "ro"), "/mnt/ro", read_only=True), Mount(str(tmp_path / "rw"), "/mnt/rw")),
    )

    code, _, logs = await run_to_end(runtime, spec)

    assert code == 42, logs
    assert "Read-only file system" in logs
    assert (tmp_path / "rw" / "written").read_text() == "a\n"
    assert not (tmp_path / "ro" / "written").exists()


async def test_limits_and_confinement_are_applied(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, network: tuple[str, str], node: str
) -> None:
    script = "grep NoNewPrivs /proc/self/status; touch /tmp/f && chown 65534 /tmp/f"
    confined = shell(
        node, "confined", script, network[0],
        cap_drop=("ALL",), security_opt=("no-new-privileges",),
        pids_limit=64, mem_limit=64 * MiB, nano_cpus=500_000_000,
    )
    free = shell(node, "free", script, network[0])

    confined_id = await runtime.run(confined)
    exit_ = await asyncio.wait_for(runtime.wait(confined_id), 60)
    logs = await runtime.logs(confined_id)
    free_code, _, _ = await run_to_end(runtime, free)

    host_config = docker_client.api.inspect_container(confined_id)["HostConfig"]
    assert host_config["CapDrop"] == ["ALL"]
    assert host_config["SecurityOpt"] == ["no-new-privileges"]
    assert (host_config["PidsLimit"], host_config["Memory"], host_config["NanoCpus"]) == (64, 64 * MiB, 500_000_000)
    assert host_config["AutoRemove"] is False
    assert "NoNewPrivs:\t1" in logs
    assert exit_.exit_code != 0, "chown needs CAP_CHOWN, which was dropped"
    assert free_code == 0


async def test_a_read_only_root_leaves_a_writable_tmpfs_and_the_user_is_applied(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, network: tuple[str, str], node: str
) -> None:
    script = "id -u; touch /tmp/ok && echo tmp-writable; touch /root-file || echo root-read-only"
    spec = shell(
        node, "read-only", script, network[0],
        read_only_root=True, tmpfs={"/tmp": "rw,nosuid,nodev,size=1m"}, user="65534:65534",
    )

    code, _, logs = await run_to_end(runtime, spec)

    assert code == 0, logs
    assert "65534" in logs.split()
    assert "tmp-writable" in logs and "root-read-only" in logs


CHATTY = "i=0; while [ $i -lt 8 ]; do head -c 1048576 /dev/zero | tr '\\0' x; echo; i=$((i+1)); done; echo last-line"


async def test_logs_keep_only_the_tail_of_what_was_printed(
    runtime: DockerContainerRuntime, network: tuple[str, str], node: str
) -> None:
    container_id = await runtime.run(shell(node, "chatty", CHATTY, network[0]))  # 8 MiB, no engine cap
    await asyncio.wait_for(runtime.wait(container_id), 60)

    tail = await runtime.logs(container_id, limit=64 * 1024)

    note, _, kept = tail.partition("\n")
    assert note == f"[v6node] {8 * (MiB + 1) + 10 - 64 * 1024} bytes of earlier output were left out (max_log_size)"
    assert len(kept.encode()) == 64 * 1024
    assert kept.endswith("x\nlast-line\n")


async def test_the_engine_keeps_at_most_log_size_bytes_of_output(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, network: tuple[str, str], node: str
) -> None:
    container_id = await runtime.run(shell(node, "capped", CHATTY, network[0], log_size=2 * MiB))
    await asyncio.wait_for(runtime.wait(container_id), 60)

    logs = await runtime.logs(container_id)

    host_config = docker_client.api.inspect_container(container_id)["HostConfig"]
    assert host_config["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "2", "max-size": str(MiB)}}
    assert logs.endswith("x\nlast-line\n")
    assert MiB <= len(logs.encode()) <= 2 * MiB  # of the 8 MiB printed: the newest part


async def test_a_gpu_request_on_a_machine_without_gpus_fails_to_start_and_leaves_nothing(
    runtime: DockerContainerRuntime, network: tuple[str, str], node: str
) -> None:
    with pytest.raises(ContainerStartFailed):
        await runtime.run(shell(node, "gpu", "true", network[0], gpu=True))

    assert await runtime.list_containers(managed_labels(node)) == []


async def test_the_algorithm_sees_the_decoded_environment_and_only_its_own_task_folder(
    runtime: DockerContainerRuntime, network: tuple[str, str], node: str, tmp_path: Path
) -> None:
    settings = AlgorithmSettings(
        node_name=node, tasks_dir=str(tmp_path), network=network[0], proxy_host=network[1], proxy_port=8080,
        algorithm_env={"GREETING": 'héllo "wörld" \\ 1=2'},
    )
    run = Run(id=7, task=TaskRef(id=70, image=ENV, collaboration_id=1), input="")
    for run_id in (7, 8):  # 8: another run's folder, which must stay invisible
        folder = tmp_path / task_folder_name(run_id)
        folder.mkdir()
        (folder / "input").write_text("{}")
        (folder / "output").write_text("")
    await runtime.ensure_volume(tmp_volume_name(node, None, run.id), managed_labels(node))

    code, _, logs = await run_to_end(runtime, build_container_spec(run, settings))

    assert code == 0, logs
    seen = json.loads((tmp_path / task_folder_name(7) / "output").read_text("utf-8"))
    expected = algorithm_environment(run, settings)
    assert {key: seen["env"][key] for key in expected} == expected
    assert seen["mounts"] == ["/mnt/data", "/mnt/data/task-000000007", "/mnt/tmp"]


@pytest.fixture(scope="module")
def v6_algo() -> str:
    """A real vantage6 algorithm image (debootstrap + algorithm-tools; built once, then cached)."""
    ensure_images(["v6-algo"])
    return image("v6-algo")


@pytest.mark.parametrize(
    ("method", "kwargs", "expected"),
    [("echo", {"value": [1, "é"]}, {"echo": [1, "é"]}), ("column_sums", {}, {"a": 4, "b": 6.5})],
)
async def test_a_real_vantage6_algorithm_runs_with_the_node_environment_and_database(
    runtime: DockerContainerRuntime, network: tuple[str, str], node: str, tmp_path: Path, v6_algo: str,
    method: str, kwargs: dict[str, object], expected: dict[str, object],
) -> None:
    csv = tmp_path / "data.csv"
    csv.write_text("a,b,name\n1,2.5,x\n3,4,y\n")
    settings = AlgorithmSettings(
        node_name=node, tasks_dir=str(tmp_path / "tasks"), network=network[0], proxy_host=network[1],
        proxy_port=8080, databases=(DatabaseConfig(label="default", uri=str(csv), type="csv", mount_mode="ro"),),
    )
    task = TaskRef(id=90, image=v6_algo, collaboration_id=1, databases=(RequestedDatabase("default"),))
    run = Run(id=9, task=task, input="")
    folder = tmp_path / "tasks" / task_folder_name(run.id)
    folder.mkdir(parents=True)
    (folder / "input").write_text(json.dumps({"method": method, "args": [], "kwargs": kwargs}))
    (folder / "output").write_text("")
    (folder / "token").write_text("not-a-real-token")
    await runtime.ensure_volume(tmp_volume_name(node, None, run.id), managed_labels(node))

    code, _, logs = await run_to_end(runtime, build_container_spec(run, settings))

    assert code == 0, logs
    assert json.loads((folder / "output").read_text()) == expected


# --- waiting --------------------------------------------------------------------------------------------
async def test_thirty_containers_are_waited_on_concurrently(
    runtime: DockerContainerRuntime, network: tuple[str, str], node: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    script = "while [ ! -e /mnt/gate/open ]; do sleep 0.1; done"
    specs = [
        shell(node, f"c{i}", script, network[0], mounts=(Mount(str(gate), "/mnt/gate", read_only=True),))
        for i in range(30)
    ]
    ids = await asyncio.gather(*(runtime.run(spec) for spec in specs))
    waits = [asyncio.create_task(runtime.wait(container_id)) for container_id in ids]

    # The last wait is answered only if the 29 blocked ones before it did not take every thread.
    await runtime.kill(ids[-1])
    assert (await asyncio.wait_for(waits[-1], PROMPTLY)).exit_code == 137
    assert not any(wait.done() for wait in waits[:-1])

    (gate / "open").touch()
    exits = await asyncio.wait_for(asyncio.gather(*waits[:-1]), 120)

    assert [exit_.exit_code for exit_ in exits] == [0] * 29
    assert "Connection pool is full" not in caplog.text


async def test_wait_is_not_cut_short_by_the_client_timeout(
    runtime: DockerContainerRuntime, network: tuple[str, str], node: str
) -> None:
    impatient = DockerContainerRuntime(timeout=1)
    try:
        container_id = await runtime.run(shell(node, "slow", "sleep 3", network[0]))
        started = time.monotonic()

        exit_ = await impatient.wait(container_id)

        assert exit_.exit_code == 0
        assert time.monotonic() - started > 1.5
    finally:
        impatient.close()


async def test_a_cancelled_wait_gives_its_thread_back(
    network: tuple[str, str], node: str
) -> None:
    one_wait = DockerContainerRuntime(max_waits=1)
    try:
        sleeping = await one_wait.run(shell(node, "sleeping", "sleep 600", network[0]))
        waiter = asyncio.create_task(one_wait.wait(sleeping))
        done, _ = await asyncio.wait({waiter}, timeout=0.5)
        assert not done
        waiter.cancel()

        quick = await one_wait.run(shell(node, "quick", "exit 5", network[0]))
        assert (await asyncio.wait_for(one_wait.wait(quick), PROMPTLY)).exit_code == 5
    finally:
        await one_wait.remove_labelled(managed_labels(node))
        one_wait.close()


async def test_running_out_of_memory_is_reported(
    runtime: DockerContainerRuntime, network: tuple[str, str], node: str
) -> None:
    spec = shell(node, "hungry", "head -c 200m /dev/zero | tail", network[0], mem_limit=32 * MiB)

    code, oom_killed, _ = await run_to_end(runtime, spec)

    assert (code, oom_killed) == (137, True)


# --- engine down ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("call", ["ping", "list", "run", "wait", "logs", "ensure_image", "ensure_network"])
async def test_an_unreachable_engine_raises_runtime_unavailable(call: str, tmp_path: Path) -> None:
    gone = DockerContainerRuntime(base_url=f"unix://{tmp_path}/no-engine.sock")
    calls = {
        "ping": gone.ping,
        "list": lambda: gone.list_containers({"a": "b"}),
        "run": lambda: gone.run(shell("gone", "x", "true", "none")),
        "wait": lambda: gone.wait("abc"),
        "logs": lambda: gone.logs("abc"),
        "ensure_image": lambda: gone.ensure_image(SHELL, False),
        "ensure_network": lambda: gone.ensure_network("n", {"a": "b"}),
    }
    try:
        with pytest.raises(RuntimeUnavailable):
            await calls[call]()
    finally:
        gone.close()


# --- clean-up ---------------------------------------------------------------------------------------------
def _remove_racing(docker_client: docker.DockerClient, container_id: str) -> None:
    """The other side of the race: whichever removal comes second is told so (404 or 409)."""
    try:
        docker_client.api.remove_container(container_id, force=True)
    except docker.errors.APIError as exc:
        if exc.status_code not in (404, 409):
            raise


async def test_remove_labelled_waits_for_a_container_removal_already_in_progress(
    runtime: DockerContainerRuntime, node: str, docker_client: docker.DockerClient
) -> None:
    """A node stopping while a run's own clean-up removes its container (found by the fault
    suite): the container's network endpoint and volume are busy until that removal ends."""
    labels = managed_labels(node)
    label = {"label": f"v6node.node={node}"}
    volume = tmp_volume_name(node, 1, 1)
    for attempt in range(5):  # the race is lost most of the time without the wait; five tries make it sure
        name = network_name(node)
        await runtime.ensure_network(name, labels)
        await runtime.ensure_volume(volume, labels)
        mounts = (Mount(source=volume, target="/mnt/tmp", kind="volume"),)
        container_id = await runtime.run(shell(node, f"busy{attempt}", "sleep 600", name, mounts=mounts))
        removing = threading.Thread(target=_remove_racing, args=(docker_client, container_id))
        removing.start()
        try:
            await runtime.remove_labelled(labels)
        finally:
            removing.join()

        assert docker_client.api.containers(all=True, filters=label) == []
        assert docker_client.api.networks(filters=label) == []
        assert (docker_client.api.volumes(filters=label).get("Volumes") or []) == []
