"""What the Node is made of besides its adapters: its use cases and the intervals of its loops."""
from __future__ import annotations

from attrs import frozen

from v6node.app.apply_kill_order import ApplyKillOrder
from v6node.app.authenticate import Authenticate
from v6node.app.clean_up import CleanUp
from v6node.app.execute_run import ExecuteRun
from v6node.app.link_docker_services import LinkDockerServices
from v6node.app.queue_new_runs import QueueNewRuns
from v6node.app.remove_job_volumes import RemoveJobVolumes
from v6node.app.report_metrics import ReportMetrics
from v6node.app.report_result import ReportResult
from v6node.app.serve_monitoring import ServeMonitoring
from v6node.app.set_up_encryption import SetUpEncryption
from v6node.app.set_up_squid_proxy import SetUpSquidProxy
from v6node.app.set_up_ssh_tunnels import SetUpSshTunnels
from v6node.app.share_node_details import ShareNodeDetails
from v6node.app.start_node import StartNode
from v6node.app.supervise_sidecars import SuperviseSidecars
from v6node.app.sync_runs import SyncRuns


@frozen
class NodeTimings:
    """Intervals of the node's background loops, in seconds."""

    heartbeat: float = 30.0  # the server marks a node offline after 65 s without a ping
    refresh_margin: float = 600.0  # renew the access token this long before it expires
    socket_connect_timeout: float = 60.0
    shutdown_report_timeout: float = 20.0


@frozen(kw_only=True)
class UseCases:
    """What the node does, one use case each (built by the container)."""

    start: StartNode
    authenticate: Authenticate
    set_up_encryption: SetUpEncryption
    sync_runs: SyncRuns
    queue_new_runs: QueueNewRuns
    execute_run: ExecuteRun
    report_result: ReportResult
    apply_kill_order: ApplyKillOrder
    share_node_details: ShareNodeDetails
    remove_job_volumes: RemoveJobVolumes
    clean_up: CleanUp
    report_metrics: ReportMetrics
    serve_monitoring: ServeMonitoring
    set_up_squid_proxy: SetUpSquidProxy
    set_up_ssh_tunnels: SetUpSshTunnels
    link_docker_services: LinkDockerServices
    supervise_sidecars: SuperviseSidecars
