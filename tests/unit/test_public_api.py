"""The library's public names, and a node embedded through them (on in-memory adapters)."""
from __future__ import annotations

import asyncio

import pytest

import v6node.app
from v6node.adapters.memory.container_runtime import MemoryContainerRuntime
from v6node.adapters.memory.cryptors import memory_cryptor_factory
from v6node.adapters.memory.database_catalog import MemoryDatabaseCatalog
from v6node.adapters.memory.event_stream import MemoryEventStream
from v6node.adapters.memory.journal import MemoryRunJournal
from v6node.adapters.memory.manual_clock import ManualClock
from v6node.adapters.memory.proxy import MemoryProxyServer
from v6node.adapters.memory.server_api import MemoryServerApi
from v6node.adapters.memory.workspace import MemoryTaskWorkspace
from v6node.app import ConfigError, EmbeddedNode, RunStatus, Stage, config_from_dict
from v6node.domain.events import NewTask

PUBLIC = {
    "ConfigError", "EmbeddedNode", "Node", "NodeConfig", "NodeError", "NodeTimings", "RunEvent",
    "RunEventStream", "RunStatus", "Stage", "config_from_dict", "load_config",
    "LocalRunReport", "RunLocal", "RunReport", "TaskReport", "run_locally",
}


def test_the_public_names_are_pinned() -> None:
    # Adding a name is fine (add it here); removing or renaming one breaks users: a major version.
    assert PUBLIC <= set(v6node.app.__all__)
    assert all(getattr(v6node.app, name) is not None for name in v6node.app.__all__)
    assert all(getattr(v6node.app, name).__doc__ for name in v6node.app.__all__)


def test_a_config_from_a_dict_is_checked_like_a_file(tmp_path) -> None:
    config = config_from_dict({"api_key": "k", "server_url": "https://v6.example"}, name="alpha", data_dir=tmp_path)
    assert (config.name, config.data_dir, config.api_base) == ("alpha", str(tmp_path), "https://v6.example/api")
    with pytest.raises(ConfigError, match="key 'port'"):
        config_from_dict({"api_key": "k", "server_url": "https://v6.example", "port": "x"}, name="alpha", data_dir=tmp_path)


def test_an_unknown_adapter_name_is_refused(tmp_path) -> None:
    config = config_from_dict({"api_key": "k", "server_url": "https://v6.example"}, name="alpha", data_dir=tmp_path)
    with pytest.raises(TypeError, match="no adapter named engine"):
        EmbeddedNode(config, engine=object())


async def test_an_embedded_node_runs_a_task_and_tells_its_run_events(tmp_path) -> None:
    config = config_from_dict(
        {"api_key": "api-key", "server_url": "https://v6.example", "proxy_check_image": None,
         "policies": {"require_algorithm_pull": False}},
        name="alpha", data_dir=tmp_path,
    )
    clock = ManualClock()
    server = MemoryServerApi(api_key="api-key", clock=clock)
    workspace = MemoryTaskWorkspace()
    runtime = MemoryContainerRuntime(workspace)
    runtime.add_image("algo:1")
    events = MemoryEventStream(token_provider=server.access_token)
    embedded = EmbeddedNode(
        config, server=server, events=events, runtime=runtime, workspace=workspace, clock=clock,
        journal=MemoryRunJournal(now=clock.now), proxy=MemoryProxyServer(), catalog=MemoryDatabaseCatalog(),
        cryptor_factory=memory_cryptor_factory,
    )
    stream = embedded.events()
    async with embedded:
        task = server.create_task("algo:1", {"method": "echo"})
        events.push(NewTask(task.id))
        seen = []
        async with asyncio.timeout(5):
            async for event in stream:
                seen.append(event)
                if event.stage is Stage.FINISHED:
                    break
    assert [e.stage for e in seen] == [Stage.RECEIVED, Stage.STARTED, Stage.FINISHED]
    assert seen[-1].status is RunStatus.COMPLETED and seen[-1].image == "algo:1"
    assert server.our_run(task.id).status is RunStatus.COMPLETED
    async with asyncio.timeout(5):
        assert [e async for e in stream] == []  # the stream ended with the node
