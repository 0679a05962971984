"""The composition root: configuration in, adapters wired to ports, use cases and a Node out.

``Adapters`` holds the production adapters and ``MemoryAdapters`` (``container_memory``, not
imported by a production start) the in-memory ones under the same names;
``NodeContainer.adapters`` is overridden with the latter by the test harness
(``v6node.adapters.memory.harness``), so tests exercise this very wiring.
"""
from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

from dependency_injector import containers, providers

from v6node.adapters.crypto.base64_cryptor import Base64Cryptor
from v6node.adapters.crypto.rsa_cryptor import RsaCryptor
from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.docker_service_linker import DockerServiceLinker
from v6node.adapters.filesystem.file_database_catalog import FileDatabaseCatalog
from v6node.adapters.filesystem.json_lines_audit_log import in_data_folder as audit_log_in
from v6node.adapters.filesystem.local_task_workspace import LocalTaskWorkspace
from v6node.adapters.http.httpx_server_api import HttpxServerApi
from v6node.adapters.http.httpx_vpn_server_api import HttpxVpnServerApi
from v6node.adapters.journal.sqlite_run_journal import SqliteRunJournal
from v6node.adapters.memory.audit_log import MemoryAuditLog
from v6node.adapters.monitoring.no_metrics import NoNodeMetrics
from v6node.adapters.monitoring.starlette_monitoring_server import StarletteMonitoringServer
from v6node.adapters.proxy.starlette_proxy_server import StarletteProxyServer
from v6node.adapters.socketio.websockets_event_stream import WebsocketsEventStream
from v6node.adapters.system.proc_host_metrics import ProcHostMetrics
from v6node.adapters.system.system_clock import SystemClock
from v6node.app.active_runs import ActiveRuns
from v6node.app.apply_kill_order import ApplyKillOrder
from v6node.app.audit_trail import AuditTrail
from v6node.app.authenticate import Authenticate
from v6node.app.bind_journal import BindJournal
from v6node.app.check_health import CheckHealth
from v6node.app.check_proxy import CheckProxyReachable
from v6node.app.check_shared_folder import CheckSharedFolder
from v6node.app import container_docker as docker_adapters
from v6node.app.clean_up import CleanUp
from v6node.app.emitter import Emitter
from v6node.app.execute_run import ExecuteRun
from v6node.app.link_docker_services import LinkDockerServices
from v6node.app.node import Node
from v6node.app.node_parts import NodeTimings, UseCases
from v6node.app.policy import CheckPolicy
from v6node.app.prepare_run import PrepareRun
from v6node.app.queue_new_runs import QueueNewRuns
from v6node.app.remove_job_volumes import RemoveJobVolumes
from v6node.app.report_metrics import ReportMetrics
from v6node.app.report_result import ReportResult
from v6node.app.run_events import RunEvents
from v6node.app.run_queue import RunQueue
from v6node.app.serve_monitoring import ServeMonitoring
from v6node.app.session import NodeSession
from v6node.app.set_up_egress import SetUpEgress
from v6node.app.set_up_encryption import SetUpEncryption
from v6node.app.set_up_squid_proxy import SetUpSquidProxy
from v6node.app.set_up_ssh_tunnels import SetUpSshTunnels
from v6node.app.set_up_vpn_connection import SetUpVpnConnection
from v6node.app.share_node_details import ShareNodeDetails
from v6node.app.sidecars import RunningSidecars
from v6node.app.start_node import StartNode
from v6node.app.stream_algorithm_logs import StreamAlgorithmLogs
from v6node.app.supervise_sidecars import SuperviseSidecars
from v6node.app.sync_runs import SyncRuns
from v6node.app.tear_down_egress import TearDownEgress
from v6node.app.tear_down_vpn import TearDownVpn
from v6node.app.vpn_run_forwarding import VpnRunForwarding
from v6node.domain.config import NodeConfig
from v6node.domain.errors import CryptoError, NodeError
from v6node.ports.clock import Clock
from v6node.ports.audit_log import AuditLog
from v6node.ports.cryptor import Cryptor
from v6node.ports.node_metrics import NodeMetrics


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


async def _server_api(config: NodeConfig, clock: Clock, metrics: NodeMetrics) -> AsyncIterator[HttpxServerApi]:
    api = HttpxServerApi(
        api_base=config.api_base, server_root=config.server_root, api_key=config.api_key, clock=clock,
        on_call=metrics.server_call,
    )
    try:
        yield api
    finally:
        await api.aclose()


def _journal(config: NodeConfig) -> Iterator[SqliteRunJournal]:
    journal = SqliteRunJournal(os.path.join(config.data_dir, "journal.sqlite"))
    try:
        yield journal
    finally:
        journal.close()


def _node_metrics(config: NodeConfig) -> NodeMetrics:
    """A Prometheus registry when the local endpoint (``monitoring.enabled``) serves it; otherwise
    nothing is kept, and prometheus-client is not loaded (≈ 5 MiB of the node's memory)."""
    if not config.monitoring.endpoint:
        return NoNodeMetrics()
    from v6node.adapters.monitoring.prometheus_node_metrics import PrometheusNodeMetrics

    return PrometheusNodeMetrics()


def _audit_log(config: NodeConfig) -> AuditLog:
    if not config.audit_log:
        return MemoryAuditLog()  # kept for the process only: audit_log is false
    return audit_log_in(config.data_dir)


class Adapters(containers.DeclarativeContainer):
    """The production adapters, one per port; each gets plain values, never the whole config."""

    config = providers.Dependency(instance_of=NodeConfig)
    # The name of the container the node runs in (`v6node start --dockerized`); None on the host.
    own_container: providers.Object[str | None] = providers.Object(None)
    clock = providers.Singleton(SystemClock)
    node_metrics = providers.Singleton(_node_metrics, config=config)
    server = providers.Resource(_server_api, config=config, clock=clock, metrics=node_metrics)
    events = providers.Singleton(
        WebsocketsEventStream, server_root=config.provided.server_root, token_provider=server.provided.access_token
    )
    runtime = providers.Resource(docker_adapters.docker_runtime, config=config, own_container=own_container)
    workspace = providers.Singleton(LocalTaskWorkspace, tasks_dir=providers.Callable(docker_adapters.tasks_dir, config))
    journal = providers.Resource(_journal, config=config)
    # How the proxy reaches the server: None is the network; an in-memory server gives its own.
    proxy_transport: providers.Object[object | None] = providers.Object(None)
    proxy = providers.Singleton(
        StarletteProxyServer, api_base=config.provided.api_base, clock=clock, transport=proxy_transport,
        # No run takes an input larger than this, so no algorithm needs to upload more.
        max_upload_size=config.provided.max_input_size,
    )
    cryptor_factory = providers.Object(make_cryptor)
    catalog = providers.Singleton(FileDatabaseCatalog)
    host_metrics = providers.Singleton(ProcHostMetrics)
    audit_log = providers.Singleton(_audit_log, config=config)
    monitoring = providers.Singleton(StarletteMonitoringServer, metrics=node_metrics)
    whitelist_proxy = providers.Singleton(docker_adapters.whitelist_proxy, config=config, runtime=runtime)
    tunnels = providers.Singleton(docker_adapters.tunnels, config=config, runtime=runtime)
    service_linker = providers.Singleton(DockerServiceLinker, runtime=runtime)
    service_firewall = providers.Singleton(docker_adapters.service_firewall, config=config, runtime=runtime)
    vpn_client = providers.Singleton(docker_adapters.vpn_client, config=config, runtime=runtime)
    vpn_server = providers.Singleton(HttpxVpnServerApi, server=server)


class NodeContainer(containers.DeclarativeContainer):
    """The node: its adapters, the small objects its use cases share, the use cases, the Node."""

    config = providers.Dependency(instance_of=NodeConfig)
    own_container: providers.Object[str | None] = providers.Object(None)
    timings = providers.Object(NodeTimings())
    adapters = providers.Container(Adapters, config=config, own_container=own_container)

    # Shared by several use cases: one each per node.
    session = providers.Singleton(NodeSession)
    run_events = providers.Singleton(
        RunEvents, clock=adapters.clock, listeners=providers.List(adapters.node_metrics.provided.observe)
    )
    queue = providers.Singleton(RunQueue, events=run_events)
    active = providers.Singleton(ActiveRuns)
    sidecars = providers.Singleton(RunningSidecars)
    emitter = providers.Singleton(Emitter, events=adapters.events, session=session)
    audit = providers.Singleton(AuditTrail, audit_log=adapters.audit_log, clock=adapters.clock)

    check_policy = providers.Factory(
        CheckPolicy, policy=config.provided.policies, server=adapters.server, runtime=adapters.runtime
    )
    authenticate = providers.Factory(
        Authenticate, config=config, server=adapters.server, clock=adapters.clock, session=session
    )
    set_up_encryption = providers.Factory(
        SetUpEncryption, config=config, server=adapters.server, clock=adapters.clock, session=session,
        cryptor_factory=adapters.cryptor_factory,
    )
    bind_journal = providers.Factory(
        BindJournal, config=config, journal=adapters.journal, runtime=adapters.runtime,
        workspace=adapters.workspace, session=session,
    )
    check_proxy = providers.Factory(CheckProxyReachable, config=config, runtime=adapters.runtime)
    check_shared = providers.Factory(
        CheckSharedFolder, config=config, runtime=adapters.runtime, workspace=adapters.workspace
    )
    # Stateful (the jobs it watches; the caches of public keys): one per node.
    remove_job_volumes = providers.Singleton(
        RemoveJobVolumes, config=config, server=adapters.server, runtime=adapters.runtime, queue=queue
    )
    report_result = providers.Singleton(
        ReportResult, config=config, server=adapters.server, workspace=adapters.workspace, journal=adapters.journal,
        clock=adapters.clock, session=session, active=active, emitter=emitter, events=run_events, audit=audit,
    )
    set_up_squid_proxy = providers.Factory(
        SetUpSquidProxy, config=config, proxy=adapters.whitelist_proxy, sidecars=sidecars
    )
    set_up_ssh_tunnels = providers.Factory(SetUpSshTunnels, config=config, tunnels=adapters.tunnels, sidecars=sidecars)
    link_docker_services = providers.Factory(LinkDockerServices, config=config, linker=adapters.service_linker)
    set_up_egress = providers.Factory(
        SetUpEgress, config=config, firewall=adapters.service_firewall, set_up_ssh_tunnels=set_up_ssh_tunnels,
        set_up_squid_proxy=set_up_squid_proxy, link_docker_services=link_docker_services,
    )
    tear_down_egress = providers.Factory(
        TearDownEgress, config=config, linker=adapters.service_linker, firewall=adapters.service_firewall,
        sidecars=sidecars,
    )
    supervise_sidecars = providers.Factory(SuperviseSidecars, sidecars=sidecars, clock=adapters.clock)
    set_up_vpn_connection = providers.Factory(
        SetUpVpnConnection, config=config, client=adapters.vpn_client, server=adapters.vpn_server, session=session,
        sidecars=sidecars,
    )
    tear_down_vpn = providers.Factory(
        TearDownVpn, config=config, client=adapters.vpn_client, server=adapters.vpn_server, session=session
    )
    # Remembers the runs whose ports it registered: one per node.
    vpn_run_forwarding = providers.Singleton(
        VpnRunForwarding, config=config, client=adapters.vpn_client, server=adapters.vpn_server, session=session
    )
    start = providers.Factory(
        StartNode, config=config, runtime=adapters.runtime, workspace=adapters.workspace, proxy=adapters.proxy,
        session=session, authenticate=authenticate, set_up_encryption=set_up_encryption,
        bind_journal=bind_journal, check_proxy=check_proxy, job_volumes=remove_job_volumes,
        check_shared=check_shared,
        set_up_egress=set_up_egress, set_up_vpn=set_up_vpn_connection,
    )
    sync_runs = providers.Factory(
        SyncRuns, config=config, server=adapters.server, runtime=adapters.runtime, workspace=adapters.workspace,
        journal=adapters.journal, clock=adapters.clock, session=session, queue=queue, active=active,
    )
    queue_new_runs = providers.Factory(
        QueueNewRuns, server=adapters.server, journal=adapters.journal, workspace=adapters.workspace,
        session=session, queue=queue,
    )
    prepare_run = providers.Factory(
        PrepareRun, config=config, server=adapters.server, runtime=adapters.runtime, workspace=adapters.workspace,
        clock=adapters.clock, session=session, check_policy=check_policy, audit=audit,
    )
    stream_algorithm_logs = providers.Factory(
        StreamAlgorithmLogs, config=config, runtime=adapters.runtime, emitter=emitter, session=session,
        clock=adapters.clock,
    )
    execute_run = providers.Factory(
        ExecuteRun, config=config, server=adapters.server, runtime=adapters.runtime, workspace=adapters.workspace,
        journal=adapters.journal, clock=adapters.clock, proxy=adapters.proxy, session=session, active=active,
        emitter=emitter, prepare=prepare_run, report=report_result, events=run_events,
        stream_logs=stream_algorithm_logs, audit=audit, vpn=vpn_run_forwarding,
    )
    apply_kill_order = providers.Factory(ApplyKillOrder, runtime=adapters.runtime, session=session, active=active)
    share_node_details = providers.Factory(
        ShareNodeDetails, config=config, catalog=adapters.catalog, emitter=emitter
    )
    report_metrics = providers.Factory(
        ReportMetrics, host=adapters.host_metrics, active=active, emitter=emitter
    )
    check_health = providers.Factory(
        CheckHealth, server=adapters.server, events=adapters.events, runtime=adapters.runtime, clock=adapters.clock
    )
    serve_monitoring = providers.Factory(
        ServeMonitoring, config=config, server=adapters.monitoring, check_health=check_health,
        metrics=adapters.node_metrics, queue=queue, journal=adapters.journal,
    )
    clean_up = providers.Factory(
        CleanUp, config=config, events=adapters.events, runtime=adapters.runtime, workspace=adapters.workspace,
        proxy=adapters.proxy, active=active, report=report_result,
        report_timeout=timings.provided.shutdown_report_timeout, run_events=run_events,
        monitoring=adapters.monitoring, tear_down_egress=tear_down_egress, tear_down_vpn=tear_down_vpn,
    )
    use_cases = providers.Factory(
        UseCases, start=start, authenticate=authenticate, set_up_encryption=set_up_encryption, sync_runs=sync_runs,
        queue_new_runs=queue_new_runs, execute_run=execute_run, report_result=report_result,
        apply_kill_order=apply_kill_order, share_node_details=share_node_details,
        remove_job_volumes=remove_job_volumes, clean_up=clean_up, report_metrics=report_metrics,
        serve_monitoring=serve_monitoring, set_up_squid_proxy=set_up_squid_proxy,
        set_up_ssh_tunnels=set_up_ssh_tunnels, link_docker_services=link_docker_services,
        supervise_sidecars=supervise_sidecars, set_up_vpn_connection=set_up_vpn_connection,
    )
    node = providers.Singleton(
        Node, config=config, timings=timings, server=adapters.server, events=adapters.events, clock=adapters.clock,
        session=session, queue=queue, active=active, emitter=emitter, metrics=adapters.node_metrics,
        use=use_cases,
    )


def replace_adapters(container: NodeContainer, **instances: object) -> None:
    """Wire ``instances`` in place of the production adapters of the same names."""
    names = set(Adapters.providers) - {"config"}
    unknown = sorted(set(instances) - names)
    if unknown:
        raise TypeError(f"no adapter named {', '.join(unknown)}; the adapters are {', '.join(sorted(names))}")
    for name, instance in instances.items():
        getattr(container.adapters, name).override(providers.Object(instance))
