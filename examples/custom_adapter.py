"""Write your own adapter and give it to a node: a container runtime that records every
algorithm container it starts, wrapping another runtime that does the work.

    python examples/custom_adapter.py

The node is built by the same container as ``v6node start``; any adapter can be replaced
by the name of its port in the container (``runtime``, ``server``, ``events``,
``workspace``, ``journal``, ``clock``, ``proxy``, ``proxy_transport``, ``catalog``,
``cryptor_factory``). To stay self-contained this example replaces the server, the
websocket and the engine with the in-memory ones that ship with v6node
(``v6node.adapters.memory``); wrap ``DockerContainerRuntime`` the same way for a real one.
"""
from __future__ import annotations

import asyncio
import base64
import tempfile
from typing import Any

from v6node.adapters.memory.container_runtime import AlgorithmCall, MemoryContainerRuntime
from v6node.adapters.memory.event_stream import MemoryEventStream
from v6node.adapters.memory.proxy import MemoryProxyServer
from v6node.adapters.memory.server_api import MemoryServerApi
from v6node.adapters.memory.workspace import MemoryTaskWorkspace
from v6node.app import EmbeddedNode, Stage, config_from_dict
from v6node.domain.containers import LABEL_RUN, ContainerSpec
from v6node.domain.events import NewTask
from v6node.ports.container_runtime import ContainerRuntime


class RecordingRuntime:
    """A ``ContainerRuntime`` that notes each container it starts and leaves the work to ``inner``."""

    def __init__(self, inner: ContainerRuntime) -> None:
        self.inner = inner
        self.started: list[ContainerSpec] = []

    async def run(self, spec: ContainerSpec) -> str:
        container_id = await self.inner.run(spec)
        self.started.append(spec)
        print(f"recorded: container {container_id} runs {spec.image} for run {spec.labels[LABEL_RUN]}", flush=True)
        return container_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # every other call of the port goes to the wrapped runtime


async def shout(call: AlgorithmCall) -> int:
    """An in-memory algorithm image: writes its input back in capitals."""
    call.write_output(call.input.upper())
    return 0


async def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        config = config_from_dict(
            {"api_key": "api-key", "server_url": "https://v6.example", "proxy_check_image": None,
             "policies": {"require_algorithm_pull": False}},
            name="custom-adapter-example", data_dir=data_dir,
        )
        server = MemoryServerApi(api_key="api-key")
        events = MemoryEventStream(token_provider=server.access_token)
        workspace = MemoryTaskWorkspace()
        engine = MemoryContainerRuntime(workspace)
        engine.add_image("example/shout:1", shout)
        runtime = RecordingRuntime(engine)
        node = EmbeddedNode(
            config, runtime=runtime, server=server, events=events, workspace=workspace, proxy=MemoryProxyServer()
        )
        stream = node.events()
        async with node:
            task = server.create_task("example/shout:1", {"method": "shout", "kwargs": {"text": "hello"}})
            events.push(NewTask(task.id))  # what the server's websocket would say
            async for event in stream:
                if event.stage is Stage.FINISHED:
                    print(f"run {event.run_id} finished: {event.status}", flush=True)
                    break
        print(f"the runtime started {len(runtime.started)} container(s): {[spec.image for spec in runtime.started]}")
        stored = server.our_run(task.id).result or ""
        print(f"result on the server (base64 in an unencrypted collaboration): {base64.b64decode(stored).decode()}")


if __name__ == "__main__":
    asyncio.run(main())
