"""Use case: everything the node does before it can take runs."""
from __future__ import annotations

import logging

from attrs import frozen

from v6node.app.authenticate import Authenticate
from v6node.app.bind_journal import BindJournal
from v6node.app.check_proxy import CheckProxyReachable
from v6node.app.check_shared_folder import CheckSharedFolder
from v6node.app.checklist import step_done
from v6node.app.together import together
from v6node.app.remove_job_volumes import RemoveJobVolumes
from v6node.app.session import NodeSession
from v6node.app.set_up_egress import SetUpEgress
from v6node.app.set_up_encryption import SetUpEncryption
from v6node.app.set_up_vpn_connection import SetUpVpnConnection
from v6node.domain.config import NodeConfig
from v6node.domain.containers import AlgorithmSettings, managed_labels, network_name, stable_proxy_port
from v6node.domain.errors import NodeError
from v6node.domain.journal import JournalIdentity
from v6node.domain.model import NodeIdentity
from v6node.ports.container_runtime import ContainerRuntime
from v6node.ports.cryptor import Cryptor
from v6node.ports.proxy_server import ProxyServer
from v6node.ports.task_workspace import TaskWorkspace

log = logging.getLogger("v6node.node")


@frozen
class StartedNode:
    """Where algorithms reach the node, for the proxy check and the "ready" line."""

    network: str
    host: str
    port: int
    summary: str


class StartNode:
    """Check the engine; log in, set up encryption and bind the journal (while logging in to
    registries); make the algorithm network, start the proxy, then what else algorithms may
    reach (SSH tunnels, Squid, linked containers, the VPN). ``check_reachable`` is the proxy
    check, run apart so that it does not delay the node's going online.

    Business rules:
    - the Docker engine must answer first (exit 4 otherwise); ``docker_registries`` logins
      that are refused are logged and the node goes on (a pull may fail later);
    - the proxy listens on the algorithm network's gateway at ``proxy_port``, else at a
      port stable per node name, so that algorithms that outlived a node process reach
      the new one; when that port is taken, any free port (and a WARNING saying so);
    - leftovers of earlier processes (volumes) are noted for removal.
    """

    def __init__(
        self,
        config: NodeConfig,
        runtime: ContainerRuntime,
        workspace: TaskWorkspace,
        proxy: ProxyServer,
        session: NodeSession,
        authenticate: Authenticate,
        set_up_encryption: SetUpEncryption,
        bind_journal: BindJournal,
        check_proxy: CheckProxyReachable,
        job_volumes: RemoveJobVolumes,
        check_shared: CheckSharedFolder,
        set_up_egress: SetUpEgress,
        set_up_vpn: SetUpVpnConnection,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.workspace = workspace
        self.proxy = proxy
        self.session = session
        self.authenticate = authenticate
        self.set_up_encryption = set_up_encryption
        self.bind_journal = bind_journal
        self.check_proxy = check_proxy
        self.job_volumes = job_volumes
        self.check_shared = check_shared
        self.set_up_egress = set_up_egress
        self.set_up_vpn = set_up_vpn

    async def __call__(self) -> StartedNode:
        config = self.config
        await self.runtime.ping()
        step_done("engine", "the Docker engine answers")
        network = network_name(config.name)
        labels = managed_labels(config.name)
        # Registry logins do not wait for the server; what the engine holds for this node
        # waits for the journal's binding, which may remove it all as another server's.
        (identity, cryptor, journal_identity), _ = await together(self._server_side(), self._log_in_to_registries())
        if not config.keep_task_folders:
            await self.job_volumes.find_leftovers()
        gateway = await self.runtime.ensure_network(network, labels)
        if config.runtime.cluster:
            step_done("cluster", await self.check_shared())
        listening = await self._start_proxy(gateway, cryptor)
        # On one engine the same address; on a cluster a relay on the algorithm network.
        host, port = await self.runtime.expose_proxy(network, gateway, listening, labels)
        via = "" if (host, port) == (gateway, listening) else f" (relayed to the proxy at {gateway}:{listening})"
        step_done("proxy", f"algorithms reach the node at {host}:{port}{via} on network {network}")
        egress_env = await self.set_up_egress(host)
        await self.set_up_vpn()
        self.session.settings = AlgorithmSettings(
            node_name=config.name,
            tasks_dir=self.workspace.tasks_dir(),
            network=network,
            proxy_host=host,
            proxy_port=port,
            databases=config.databases,
            algorithm_env=dict(config.algorithm_env),
            gpu=config.gpu or config.runtime.gpu,
            limits=config.limits,
            run_context_file=config.run_context_file,
            node_id=identity.node_id,
            identity=journal_identity.fingerprint,
            egress_env=egress_env,
        )
        return StartedNode(network=network, host=host, port=port, summary=f"algorithm proxy at {host}:{port}{via}")

    async def check_reachable(self, started: StartedNode) -> str:
        """The proxy check (a container on the algorithm network); the node runs it while it
        connects to the server, and takes no run before it passed."""
        return await self.check_proxy(started.network, started.host, started.port)

    async def _server_side(self) -> tuple[NodeIdentity, Cryptor, JournalIdentity]:
        identity = await self.authenticate()
        cryptor = await self.set_up_encryption()
        step_done("encryption", "on: results are encrypted for the organization that asked"
                  if cryptor.encrypted else "off: the collaboration is not encrypted")
        journal_identity = await self.bind_journal()
        step_done("journal", f"bound to {journal_identity.describe()}")
        return identity, cryptor, journal_identity

    async def _log_in_to_registries(self) -> None:
        for login in self.config.docker_registries:
            try:
                await self.runtime.login(login.registry, login.username, login.password)
                log.info("logged in to docker registry %s as %s", login.registry, login.username)
            except NodeError as exc:
                log.error("could not log in to docker registry %s: %s", login.registry, exc)

    async def _start_proxy(self, host: str, cryptor: Cryptor) -> int:
        if self.config.proxy_port:
            return await self.proxy.start(host, cryptor, self.config.proxy_port)
        stable = stable_proxy_port(self.config.name)
        try:
            return await self.proxy.start(host, cryptor, stable)
        except NodeError as exc:
            log.warning("%s; using another port (algorithms started before a restart cannot reach the proxy)", exc)
            return await self.proxy.start(host, cryptor, 0)
