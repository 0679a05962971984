"""The composition root: configuration in, adapters wired to ports, a Node out."""
from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

from dependency_injector import containers, providers

from v6node.adapters.crypto.base64_cryptor import Base64Cryptor
from v6node.adapters.crypto.rsa_cryptor import RsaCryptor
from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.filesystem.file_database_catalog import FileDatabaseCatalog
from v6node.adapters.filesystem.local_task_workspace import LocalTaskWorkspace
from v6node.adapters.http.httpx_server_api import HttpxServerApi
from v6node.adapters.journal.sqlite_run_journal import SqliteRunJournal
from v6node.adapters.proxy.starlette_proxy import StarletteProxyServer
from v6node.adapters.socketio.websockets_event_stream import WebsocketsEventStream
from v6node.adapters.system.clock import SystemClock
from v6node.app.node import Node, NodeContext, NodeTimings
from v6node.domain.config import NodeConfig
from v6node.domain.errors import CryptoError, NodeError
from v6node.ports.clock import Clock
from v6node.ports.cryptor import Cryptor


def make_cryptor(encrypted: bool, private_key_path: str) -> Cryptor:
    if not encrypted:
        return Base64Cryptor()
    try:
        return RsaCryptor.from_file(private_key_path)
    except CryptoError as exc:
        raise NodeError(
            f"{exc}. The collaboration is encrypted, so the node needs its organization's private key: "
            "set encryption.private_key, or create one with `v6node create-private-key -c <config>`"
        ) from exc


async def _server_api(config: NodeConfig, clock: Clock) -> AsyncIterator[HttpxServerApi]:
    api = HttpxServerApi(
        api_base=config.api_base, server_root=config.server_root, api_key=config.api_key, clock=clock
    )
    try:
        yield api
    finally:
        await api.aclose()


def _docker_runtime() -> Iterator[DockerContainerRuntime]:
    runtime = DockerContainerRuntime()
    try:
        yield runtime
    finally:
        runtime.close()


def _journal(config: NodeConfig) -> Iterator[SqliteRunJournal]:
    journal = SqliteRunJournal(os.path.join(config.data_dir, "journal.sqlite"))
    try:
        yield journal
    finally:
        journal.close()


def _tasks_dir(config: NodeConfig) -> str:
    return os.path.join(config.data_dir, "tasks")


class Adapters(containers.DeclarativeContainer):
    """The production adapters; tests override this container (or single providers)."""

    config = providers.Dependency(instance_of=NodeConfig)
    clock = providers.Singleton(SystemClock)
    server = providers.Resource(_server_api, config=config, clock=clock)
    events = providers.Singleton(
        WebsocketsEventStream, server_root=config.provided.server_root, token_provider=server.provided.access_token
    )
    runtime = providers.Resource(_docker_runtime)
    workspace = providers.Singleton(LocalTaskWorkspace, tasks_dir=providers.Callable(_tasks_dir, config))
    journal = providers.Resource(_journal, config=config)
    proxy = providers.Singleton(StarletteProxyServer, api_base=config.provided.api_base, clock=clock)
    cryptor_factory = providers.Object(make_cryptor)
    catalog = providers.Singleton(FileDatabaseCatalog)


class NodeContainer(containers.DeclarativeContainer):
    config = providers.Dependency(instance_of=NodeConfig)
    timings = providers.Object(NodeTimings())
    adapters = providers.Container(Adapters, config=config)
    context = providers.Factory(
        NodeContext,
        config=config,
        server=adapters.server,
        events=adapters.events,
        runtime=adapters.runtime,
        workspace=adapters.workspace,
        journal=adapters.journal,
        clock=adapters.clock,
        proxy=adapters.proxy,
        cryptor_factory=adapters.cryptor_factory,
        catalog=adapters.catalog,
        timings=timings,
    )
    node = providers.Factory(Node, ctx=context)
