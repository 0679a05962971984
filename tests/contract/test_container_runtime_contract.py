"""One ContainerRuntime contract, held by the in-memory twin, the Docker adapter and the Swarm adapter alike."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from attrs import define, field

from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.swarm_container_runtime import SwarmContainerRuntime
from v6node.adapters.memory.container_runtime import AlgorithmCall, MemoryContainerRuntime
from v6node.adapters.memory.workspace import MemoryTaskWorkspace
from v6node.domain.containers import (
    LABEL_MANAGED_BY,
    AlgorithmSettings,
    ContainerSpec,
    build_container_spec,
    managed_labels,
    network_name,
    task_folder_name,
    tmp_volume_name,
)
from v6node.domain.errors import ContainerNotFound, ContainerStartFailed, ImageNotFound, RuntimeUnavailable
from v6node.domain.model import Run, TaskRef
from v6node.ports.container_runtime import ContainerRuntime
from tests.rig.images import ensure_images
from tests.rig.paths import image
from tests.rig.swarm import SwarmRig

ECHO = image("echo-algo")
CRASH = image("crash-algo")
SLEEP = image("sleep-algo")
KILLED = 137  # 128 + SIGKILL, what both engines report for a killed container
PROMPTLY = 15  # seconds; generous for a loaded CI machine, far below the sleeper's 600 s


# --- the memory engine's images play the busybox test images ------------------------------------
async def echo_algo(call: AlgorithmCall) -> int:
    call.write_output(b'{"echo": ' + call.input + b"}")
    call.log(f"echo-algo: read {len(call.input)} bytes")
    return 0


async def crash_algo(call: AlgorithmCall) -> int:
    call.log("crash-algo: failing on purpose")
    return 3


async def sleep_algo(call: AlgorithmCall) -> int:
    seconds = json.loads(call.input or b"{}").get("seconds", 3600)
    call.log(f"sleep-algo: sleeping {seconds} seconds")
    await asyncio.sleep(seconds)
    call.write_output(json.dumps({"slept": seconds}).encode())
    return 0


@define
class Rig:
    """One engine, a node name unique to the test, and its task folders."""

    runtime: ContainerRuntime
    node: str
    settings: AlgorithmSettings
    prepare: Callable[[int, bytes], Awaitable[None]]
    read_output: Callable[[int], bytes | None]
    unreachable: ContainerRuntime
    label_sets: list[dict[str, str]] = field(factory=list)

    @property
    def labels(self) -> dict[str, str]:
        return managed_labels(self.node)

    def other_labels(self) -> dict[str, str]:
        """Labels of another (made-up) node; removed at teardown too."""
        labels = {LABEL_MANAGED_BY: f"{self.node}-other"}
        self.label_sets.append(labels)
        return labels

    def spec(self, run_id: int, img: str) -> ContainerSpec:
        run = Run(id=run_id, task=TaskRef(id=1000 + run_id, image=img, collaboration_id=1), input="")
        return build_container_spec(run, self.settings)

    async def start(self, run_id: int, img: str, input_data: bytes = b'{"x": 1}') -> str:
        """What the node does: task folder, tmp volume, container."""
        await self.prepare(run_id, input_data)
        await self.runtime.ensure_volume(tmp_volume_name(self.node, None, run_id), self.labels)
        return await self.runtime.run(self.spec(run_id, img))


def _node_name() -> str:
    return f"ct{uuid.uuid4().hex[:10]}"


async def _memory_rig() -> AsyncIterator[Rig]:
    workspace = MemoryTaskWorkspace()
    runtime = MemoryContainerRuntime(workspace)
    for img, program in ((ECHO, echo_algo), (CRASH, crash_algo), (SLEEP, sleep_algo)):
        runtime.add_image(img, program)
    unreachable = MemoryContainerRuntime(MemoryTaskWorkspace())
    unreachable.available = False
    node = _node_name()
    network = network_name(node)
    await runtime.ensure_network(network, managed_labels(node))
    settings = AlgorithmSettings(
        node_name=node, tasks_dir=workspace.tasks_dir(), network=network, proxy_host="proxy", proxy_port=80
    )

    async def prepare(run_id: int, data: bytes) -> None:
        await workspace.prepare(run_id, data, "token")

    def read_output(run_id: int) -> bytes | None:
        return workspace.folders[run_id].output

    rig = Rig(runtime, node, settings, prepare, read_output, unreachable)
    try:
        yield rig
    finally:
        for labels in [rig.labels, *rig.label_sets]:
            await runtime.remove_labelled(labels)


def _swarm_runtimes(swarm: SwarmRig, tmp_path: Path) -> tuple[ContainerRuntime, ContainerRuntime]:
    """On the rig every host shares the machine's file system, so any folder is "shared storage"."""
    volumes = str(tmp_path / "tasks" / ".volumes")
    runtime = SwarmContainerRuntime(
        swarm.manager.url, proxy_address=swarm.host_address, relay_image=ECHO, volumes_dir=volumes
    )
    unreachable = SwarmContainerRuntime(
        f"unix://{tmp_path}/no-engine.sock", relay_image=ECHO, volumes_dir=volumes
    )
    return runtime, unreachable


async def _docker_rig(tmp_path: Path, swarm: SwarmRig | None = None) -> AsyncIterator[Rig]:
    await asyncio.to_thread(ensure_images, ["echo-algo", "crash-algo", "sleep-algo"])
    runtime: ContainerRuntime
    unreachable: ContainerRuntime
    if swarm is None:
        runtime = DockerContainerRuntime()
        unreachable = DockerContainerRuntime(base_url=f"unix://{tmp_path}/no-engine.sock")
    else:
        runtime, unreachable = _swarm_runtimes(swarm, tmp_path)
    tasks = tmp_path / "tasks"
    node = _node_name()
    network = network_name(node)
    rig: Rig | None = None
    try:
        await runtime.ensure_network(network, managed_labels(node))
        settings = AlgorithmSettings(
            node_name=node, tasks_dir=str(tasks), network=network, proxy_host="proxy", proxy_port=80
        )

        async def prepare(run_id: int, data: bytes) -> None:
            folder = tasks / task_folder_name(run_id)
            folder.mkdir(parents=True)
            (folder / "input").write_bytes(data)
            (folder / "output").write_bytes(b"")
            (folder / "token").write_text("token")

        def read_output(run_id: int) -> bytes | None:
            output = tasks / task_folder_name(run_id) / "output"
            return output.read_bytes() if output.exists() else None

        rig = Rig(runtime, node, settings, prepare, read_output, unreachable)
        yield rig
    finally:
        for labels in [managed_labels(node), *(rig.label_sets if rig else [])]:
            await runtime.remove_labelled(labels)
        for made in (runtime, unreachable):
            assert isinstance(made, DockerContainerRuntime)
            made.close()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("swarm", marks=[pytest.mark.docker, pytest.mark.swarm]),
    ]
)
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    if request.param == "memory":
        rigs = _memory_rig()
    elif request.param == "docker":
        rigs = _docker_rig(tmp_path)
    else:
        rigs = _docker_rig(tmp_path, request.getfixturevalue("swarm_rig"))
    async for made in rigs:
        yield made


# --- engine --------------------------------------------------------------------------------------
async def test_the_runtime_is_a_container_runtime(rig: Rig) -> None:
    assert isinstance(rig.runtime, ContainerRuntime)


async def test_ping_answers(rig: Rig) -> None:
    await rig.runtime.ping()


async def test_ping_of_an_unreachable_engine_raises_runtime_unavailable(rig: Rig) -> None:
    with pytest.raises(RuntimeUnavailable) as caught:
        await rig.unreachable.ping()
    assert caught.value.retryable


# --- running -------------------------------------------------------------------------------------
async def test_an_algorithm_reads_its_input_and_writes_its_output(rig: Rig) -> None:
    container_id = await rig.start(1, ECHO, b'{"x": [1, 2]}')

    exit_ = await asyncio.wait_for(rig.runtime.wait(container_id), PROMPTLY)

    assert (exit_.exit_code, exit_.oom_killed) == (0, False)
    assert rig.read_output(1) == b'{"echo": {"x": [1, 2]}}'
    assert "echo-algo: read 13 bytes" in await rig.runtime.logs(container_id)


async def test_a_crashing_algorithm_reports_its_exit_code_and_stderr(rig: Rig) -> None:
    container_id = await rig.start(2, CRASH)

    exit_ = await asyncio.wait_for(rig.runtime.wait(container_id), PROMPTLY)

    assert exit_.exit_code == 3
    assert "crash-algo: failing on purpose" in await rig.runtime.logs(container_id)


async def test_wait_on_a_container_that_already_exited_returns_its_exit_code(rig: Rig) -> None:
    container_id = await rig.start(3, CRASH)
    await rig.runtime.wait(container_id)

    assert (await rig.runtime.wait(container_id)).exit_code == 3


async def test_a_second_container_with_the_same_name_fails_to_start(rig: Rig) -> None:
    await rig.start(4, SLEEP)

    with pytest.raises(ContainerStartFailed):
        await rig.runtime.run(rig.spec(4, SLEEP))
    assert len(await rig.runtime.list_containers(rig.labels)) == 1


async def test_a_container_of_a_missing_image_fails_to_start(rig: Rig) -> None:
    missing = image(f"no-such-image-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ContainerStartFailed):
        await rig.start(5, missing)
    assert await rig.runtime.list_containers(rig.labels) == []


# --- finding and removing ------------------------------------------------------------------------
async def test_list_finds_containers_by_all_of_their_labels(rig: Rig) -> None:
    echo_id = await rig.start(6, ECHO)
    crash_id = await rig.start(7, CRASH)
    await rig.runtime.wait(echo_id)
    await rig.runtime.wait(crash_id)

    found = {info.id: info for info in await rig.runtime.list_containers(rig.labels)}
    assert set(found) == {echo_id, crash_id}
    echo = found[echo_id]
    assert echo.name == rig.spec(6, ECHO).name
    assert rig.spec(6, ECHO).labels.items() <= echo.labels.items()
    assert (echo.running, echo.exit_code) == (False, 0)
    assert found[crash_id].exit_code == 3

    only_crash = await rig.runtime.list_containers({**rig.labels, "run_id": "7"})
    assert [info.id for info in only_crash] == [crash_id]
    assert await rig.runtime.list_containers({**rig.labels, "run_id": "999"}) == []
    assert await rig.runtime.list_containers(rig.other_labels()) == []


async def test_a_running_container_is_listed_as_running(rig: Rig) -> None:
    container_id = await rig.start(8, SLEEP)

    [info] = await rig.runtime.list_containers(rig.labels)

    assert (info.id, info.running, info.exit_code) == (container_id, True, None)


async def test_remove_makes_a_container_disappear_and_is_idempotent(rig: Rig) -> None:
    container_id = await rig.start(9, ECHO)
    await rig.runtime.wait(container_id)

    await rig.runtime.remove(container_id)
    await rig.runtime.remove(container_id)

    assert await rig.runtime.list_containers(rig.labels) == []
    with pytest.raises(ContainerNotFound):
        await rig.runtime.logs(container_id)
    with pytest.raises(ContainerNotFound):
        await rig.runtime.wait(container_id)


async def test_remove_of_a_running_container_stops_it(rig: Rig) -> None:
    container_id = await rig.start(10, SLEEP)

    await rig.runtime.remove(container_id)

    assert await rig.runtime.list_containers(rig.labels) == []


async def test_unknown_containers_raise_container_not_found(rig: Rig) -> None:
    unknown = f"no-such-container-{uuid.uuid4().hex}"
    for call in (rig.runtime.wait, rig.runtime.logs, rig.runtime.kill):
        with pytest.raises(ContainerNotFound):
            await call(unknown)
    await rig.runtime.remove(unknown)  # already gone is fine


# --- kill and cancellation -----------------------------------------------------------------------
async def test_kill_ends_wait_promptly_with_a_non_zero_exit_code(rig: Rig) -> None:
    container_id = await rig.start(11, SLEEP, b'{"seconds": 600}')
    waiter = asyncio.create_task(rig.runtime.wait(container_id))

    await rig.runtime.kill(container_id)
    exit_ = await asyncio.wait_for(waiter, PROMPTLY)

    assert exit_.exit_code == KILLED
    assert rig.read_output(11) == b""


async def test_a_killed_containers_output_stays_readable_until_it_is_removed(rig: Rig) -> None:
    container_id = await rig.start(16, SLEEP, b'{"seconds": 600}')
    lines = rig.runtime.follow_logs(container_id)
    try:
        first = await asyncio.wait_for(anext(lines), PROMPTLY)  # it printed: now kill it
    finally:
        await lines.aclose()
    assert first == "sleep-algo: sleeping 600 seconds"

    await rig.runtime.kill(container_id)
    assert (await asyncio.wait_for(rig.runtime.wait(container_id), PROMPTLY)).exit_code == KILLED
    assert "sleep-algo: sleeping 600 seconds" in await rig.runtime.logs(container_id)

    await rig.runtime.remove(container_id)
    with pytest.raises(ContainerNotFound):
        await rig.runtime.logs(container_id)


async def test_kill_of_an_exited_container_is_harmless(rig: Rig) -> None:
    container_id = await rig.start(12, CRASH)
    await rig.runtime.wait(container_id)

    await rig.runtime.kill(container_id)

    assert (await rig.runtime.wait(container_id)).exit_code == 3


async def test_cancelling_wait_stops_waiting_but_not_the_container(rig: Rig) -> None:
    container_id = await rig.start(13, SLEEP, b'{"seconds": 600}')
    waiter = asyncio.create_task(rig.runtime.wait(container_id))
    done, _ = await asyncio.wait({waiter}, timeout=0.5)
    assert not done

    waiter.cancel()
    await asyncio.wait({waiter}, timeout=PROMPTLY)

    assert waiter.cancelled()
    [info] = await rig.runtime.list_containers(rig.labels)
    assert info.running
    # A new wait still works after a cancelled one.
    again = asyncio.create_task(rig.runtime.wait(container_id))
    await rig.runtime.kill(container_id)
    assert (await asyncio.wait_for(again, PROMPTLY)).exit_code == KILLED


# --- images, networks, volumes ---------------------------------------------------------------------
async def test_ensure_image_of_a_missing_image_raises_image_not_found(rig: Rig) -> None:
    missing = image(f"no-such-image-{uuid.uuid4().hex[:8]}")
    for require_pull in (False, True):
        with pytest.raises(ImageNotFound) as caught:
            await rig.runtime.ensure_image(missing, require_pull)
        assert missing in str(caught.value)


async def test_ensure_image_uses_a_local_only_image_when_pulling_is_not_required(rig: Rig) -> None:
    assert await rig.runtime.ensure_image(ECHO, require_pull=False) == "local"


async def test_ensure_image_refuses_a_local_only_image_when_pulling_is_required(rig: Rig) -> None:
    with pytest.raises(ImageNotFound) as caught:
        await rig.runtime.ensure_image(ECHO, require_pull=True)
    assert "require_algorithm_pull" in str(caught.value)


async def test_ensure_network_is_idempotent_and_returns_the_gateway(rig: Rig) -> None:
    name = f"{network_name(rig.node)}-2"

    first = await rig.runtime.ensure_network(name, rig.labels)
    second = await rig.runtime.ensure_network(name, rig.labels)

    assert first == second
    assert ipaddress.ip_address(first).version == 4


async def test_ensure_volume_is_idempotent(rig: Rig) -> None:
    name = f"{rig.node}-vol"
    await rig.runtime.ensure_volume(name, rig.labels)
    await rig.runtime.ensure_volume(name, rig.labels)

    assert await rig.runtime.remove_labelled(rig.labels) == 2  # the volume and the rig's network


async def test_remove_labelled_removes_containers_networks_and_volumes_with_the_labels(rig: Rig) -> None:
    other = rig.other_labels()
    await rig.runtime.ensure_network(f"{network_name(rig.node)}-other", other)
    await rig.runtime.ensure_volume(f"{rig.node}-other-vol", other)
    sleeping = await rig.start(14, SLEEP)  # + its tmp volume; on the rig's network
    exited = await rig.start(15, CRASH)  # + its tmp volume
    await rig.runtime.wait(exited)

    removed = await rig.runtime.remove_labelled(rig.labels)

    assert removed == 5  # two containers, one network, two volumes
    assert await rig.runtime.list_containers(rig.labels) == []
    for container_id in (sleeping, exited):
        with pytest.raises(ContainerNotFound):
            await rig.runtime.logs(container_id)
    assert await rig.runtime.remove_labelled(rig.labels) == 0
    # Resources of other labels were left alone.
    assert await rig.runtime.remove_labelled(other) == 2


async def test_remove_labelled_refuses_an_empty_label_set(rig: Rig) -> None:
    with pytest.raises(ValueError):
        await rig.runtime.remove_labelled({})
