"""A container engine in memory: images are Python coroutines that play the algorithm."""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

from attrs import define, field

from v6node.adapters.memory.workspace import MemoryTaskWorkspace
from v6node.ports.container_runtime import DEFAULT_LOG_LIMIT, FOLLOW_LINE_LIMIT, ContainerRuntime
from v6node.domain.containers import (
    LABEL_RUN,
    ContainerExit,
    ContainerInfo,
    ContainerSpec,
    HostRun,
    decode_env_value,
    log_tail,
)
from v6node.domain.errors import (
    ContainerError,
    ContainerNotFound,
    ContainerStartFailed,
    ImageNotFound,
    RuntimeUnavailable,
)

KILLED_EXIT_CODE = 137


@define
class AlgorithmCall:
    """What a fake algorithm sees: its env (decoded), its input, and a way to write output."""

    spec: ContainerSpec
    run_id: int | None  # None for the node's own helper containers
    workspace: MemoryTaskWorkspace
    log_lines: list[str] = field(factory=list)
    # Set by a fake algorithm to play one that the engine killed for using too much memory.
    oom_killed: bool = False

    @property
    def env(self) -> dict[str, str]:
        return {key: decode_env_value(value) for key, value in self.spec.environment.items()}

    @property
    def input(self) -> bytes:
        return self.workspace.folders[self._run_id()].input

    def write_output(self, data: bytes | None) -> None:
        self.workspace.write_output(self._run_id(), data)

    def _run_id(self) -> int:
        if self.run_id is None:
            raise ContainerError(f"{self.spec.name} is not an algorithm run: it has no task folder")
        return self.run_id

    def log(self, line: str) -> None:
        self.log_lines.append(line)
        self.logged.set()

    # Set on every line: followers wake up (and clear it).
    logged: asyncio.Event = field(factory=asyncio.Event)


Program = Callable[[AlgorithmCall], Awaitable[int]]


async def echo_program(call: AlgorithmCall) -> int:
    """The default image: writes its input back as output."""
    call.log("echo algorithm")
    call.write_output(call.input)
    return 0


@define
class FakeContainer:
    id: str
    spec: ContainerSpec
    call: AlgorithmCall
    task: asyncio.Task[int] | None = None
    exit: ContainerExit | None = None
    removed: bool = False

    @property
    def running(self) -> bool:
        return self.exit is None


class MemoryContainerRuntime(ContainerRuntime):
    """Test-side: ``add_image``; ``started`` lists every spec run; ``containers`` by id."""

    def __init__(self, workspace: MemoryTaskWorkspace) -> None:
        self.workspace = workspace
        self.local_images: dict[str, Program] = {}
        self.pullable: set[str] = set()
        self.pull_attempts: list[str] = []  # every ensure_image call, in order
        self.containers: dict[str, FakeContainer] = {}
        self.started: list[ContainerSpec] = []
        self.networks: dict[str, dict[str, str]] = {}
        self.volumes: dict[str, dict[str, str]] = {}
        self.available = True
        self.fail_start: set[str] = set()
        self.logins: list[tuple[str, str]] = []
        self.refused_registries: set[str] = set()
        self._ids = itertools.count(1)
        self.gateway = "172.30.0.1"

    def add_image(self, image: str, program: Program = echo_program, pullable: bool = False) -> None:
        """Another tag of the same program counts as the same local image."""
        self.local_images[image] = program
        if pullable:
            self.pullable.add(image)

    def alive(self) -> list[FakeContainer]:
        return [c for c in self.containers.values() if not c.removed]

    # --- the port -----------------------------------------------------------------------
    async def ping(self) -> None:
        if not self.available:
            raise RuntimeUnavailable("memory engine switched off")

    async def login(self, registry: str, username: str, password: str) -> None:
        if registry in self.refused_registries:
            raise ContainerError(f"logging in to {registry}: unauthorized")
        self.logins.append((registry, username))

    async def ensure_network(self, name: str, labels: dict[str, str]) -> str:
        self.networks.setdefault(name, dict(labels))
        return self.gateway

    async def expose_proxy(self, network: str, host: str, port: int, labels: dict[str, str]) -> tuple[str, int]:
        return host, port

    async def run_on_every_host(self, spec: ContainerSpec) -> list[HostRun]:
        container_id = await self.run(spec)
        try:
            exit_ = await self.wait(container_id)
            return [HostRun("memory", exit_.exit_code, await self.logs(container_id))]
        finally:
            await self.remove(container_id)

    async def local_image_id(self, image: str) -> str | None:
        program = self.local_images.get(image)
        return None if program is None else f"sha256:{id(program):x}"

    async def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        self.volumes.setdefault(name, dict(labels))

    async def remove_volume(self, name: str) -> None:
        self.volumes.pop(name, None)

    async def list_volumes(self, labels: dict[str, str]) -> list[str]:
        return sorted(name for name, found in self.volumes.items() if labels.items() <= found.items())

    async def ensure_image(self, image: str, require_pull: bool) -> str:
        self.pull_attempts.append(image)
        if image in self.pullable:
            return "pulled"
        if image in self.local_images:
            if require_pull:
                raise ImageNotFound(
                    f"pulling {image} failed and require_algorithm_pull is true, so the local copy is not used"
                )
            return "local"
        raise ImageNotFound(f"image {image} could not be pulled and is not present locally")

    async def run(self, spec: ContainerSpec) -> str:
        program = self.local_images.get(spec.image)
        if program is None:
            raise ContainerStartFailed(f"No such image: {spec.image}")
        if spec.image in self.fail_start:
            raise ContainerStartFailed(f"engine refused to start {spec.name}")
        if any(c.spec.name == spec.name for c in self.alive()):
            raise ContainerStartFailed(f'Conflict. The container name "/{spec.name}" is already in use')
        container_id = f"memory-{next(self._ids):04d}"
        run_id = int(spec.labels[LABEL_RUN]) if LABEL_RUN in spec.labels else None
        container = FakeContainer(container_id, spec, AlgorithmCall(spec, run_id, self.workspace))
        container.task = asyncio.create_task(self._play(container, program))
        self.containers[container_id] = container
        self.started.append(spec)
        return container_id

    async def _play(self, container: FakeContainer, program: Program) -> int:
        try:
            code = await program(container.call)
        except asyncio.CancelledError:
            code = KILLED_EXIT_CODE
        container.exit = ContainerExit(exit_code=code, oom_killed=container.call.oom_killed)
        container.call.logged.set()
        return code

    def _get(self, container_id: str) -> FakeContainer:
        container = self.containers.get(container_id)
        if container is None or container.removed:
            raise ContainerNotFound(f"No such container: {container_id}")
        return container

    async def wait(self, container_id: str) -> ContainerExit:
        container = self._get(container_id)
        assert container.task is not None
        # asyncio.wait neither cancels the program when the waiter is cancelled nor raises
        # when the program was killed.
        await asyncio.wait({container.task})
        assert container.exit is not None
        return container.exit

    async def logs(self, container_id: str, limit: int = DEFAULT_LOG_LIMIT) -> str:
        container = self._get(container_id)
        return log_tail(((line + "\n").encode() for line in container.call.log_lines), limit)

    async def follow_logs(self, container_id: str) -> AsyncIterator[str]:
        container = self._get(container_id)
        sent = 0
        while True:
            lines = container.call.log_lines
            while sent < len(lines):
                line = lines[sent]
                sent += 1
                for start in range(0, max(len(line), 1), FOLLOW_LINE_LIMIT):
                    yield line[start : start + FOLLOW_LINE_LIMIT]
            if container.exit is not None:
                return
            container.call.logged.clear()
            await container.call.logged.wait()

    async def kill(self, container_id: str) -> None:
        container = self._get(container_id)
        if container.task is not None and not container.task.done():
            container.task.cancel()
            await asyncio.gather(container.task, return_exceptions=True)
        if container.exit is None:  # killed before its program took its first step
            container.exit = ContainerExit(exit_code=KILLED_EXIT_CODE)

    async def remove(self, container_id: str) -> None:
        container = self.containers.get(container_id)
        if container is None or container.removed:
            return
        await self.kill(container_id)
        container.removed = True

    async def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        return [
            ContainerInfo(
                id=c.id,
                name=c.spec.name,
                labels=dict(c.spec.labels),
                running=c.running,
                exit_code=None if c.exit is None else c.exit.exit_code,
            )
            for c in self.alive()
            if labels.items() <= c.spec.labels.items()
        ]

    async def remove_labelled(self, labels: dict[str, str]) -> int:
        if not labels:
            raise ValueError("remove_labelled needs at least one label (it would remove everything)")
        removed = 0
        for info in await self.list_containers(labels):
            await self.remove(info.id)
            removed += 1
        for store in (self.networks, self.volumes):
            for name in [n for n, lab in store.items() if labels.items() <= lab.items()]:
                del store[name]
                removed += 1
        return removed
