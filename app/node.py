"""The Node: the supervisor that logs in, listens to the server and runs algorithms."""
from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from attrs import frozen

from v6node.app.active_runs import ActiveRuns
from v6node.app.execute_run import ExecuteRun
from v6node.app.retry import backoff_delays, until_done
from v6node.domain.config import NodeConfig
from v6node.domain.containers import (
    LABEL_MANAGED_BY,
    AlgorithmSettings,
    job_of_tmp_volume,
    managed_labels,
    network_name,
    proxy_check_spec,
    stable_proxy_port,
    tmp_volume_name,
)
from v6node.domain.errors import (
    AuthenticationFailed,
    CleanupIncomplete,
    NodeError,
    NotConnected,
    ResourcesLeft,
    ServerRejected,
)
from v6node.domain.events import (
    Connected,
    Disconnected,
    KillRequested,
    NewTask,
    NodeEvent,
    PeerStatusChanged,
    ServerMessage,
    SyncRequested,
    TokenExpired,
    TokenInvalid,
)
from v6node.domain.journal import JournalIdentity, RunStep, stale_because
from v6node.domain.kill import KilledRun, KillOrder
from v6node.domain.model import NodeIdentity, Run, RunUpdate, StatusChange
from v6node.domain.reconcile import ActionKind, Reconciliation, RunAction, reconcile
from v6node.domain.status import RunStatus, has_failed, has_finished
from v6node.ports.clock import Clock
from v6node.ports.container_runtime import ContainerRuntime
from v6node.ports.cryptor import Cryptor
from v6node.ports.database_catalog import DatabaseCatalog
from v6node.ports.event_stream import EventStream
from v6node.ports.proxy_server import ProxyServer
from v6node.ports.run_journal import RunJournal
from v6node.ports.server_api import ServerApi
from v6node.ports.task_workspace import TaskWorkspace

log = logging.getLogger("v6node.node")

# (encrypted collaboration?, private key path) -> the cryptor to use.
CryptorFactory = Callable[[bool, str], Cryptor]


def same_public_key(a: str, b: str) -> bool:
    """Compare two public keys in the server's form (base64 of PEM) by their PEM text."""
    try:
        return bool(a) and base64.b64decode(a).strip() == base64.b64decode(b).strip()
    except (binascii.Error, ValueError):
        return False


# Journal entries of finished runs are kept this long (they show how often a run started).
JOURNAL_KEEPS = timedelta(days=7)


class EncryptionMismatch(NodeError):
    """The node's ``encryption.enabled`` disagrees with the collaboration's setting."""


@frozen
class NodeTimings:
    """Intervals of the node's background loops, in seconds."""

    heartbeat: float = 30.0  # the server marks a node offline after 65 s without a ping
    refresh_margin: float = 600.0  # refresh the access token this long before it expires
    socket_connect_timeout: float = 60.0
    shutdown_report_timeout: float = 20.0


@frozen(kw_only=True)
class NodeContext:
    """Everything a Node works with: its configuration and one adapter per port."""

    config: NodeConfig
    server: ServerApi
    events: EventStream
    runtime: ContainerRuntime
    workspace: TaskWorkspace
    journal: RunJournal
    clock: Clock
    proxy: ProxyServer
    cryptor_factory: CryptorFactory
    catalog: DatabaseCatalog
    timings: NodeTimings = NodeTimings()


class Node:
    """A vantage6 node. Method names follow the reference node; all are coroutines.

    Nothing starts in the constructor. ``run_forever`` initializes when needed and runs
    the event listener, the run executors (at most ``max_concurrent_runs`` at once), the
    heartbeat, the token refresher and the sync loops in one task group; ``stop`` (or
    cancelling it) ends them and ``cleanup`` removes everything the node created.
    """

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.identity: NodeIdentity | None = None
        self.cryptor: Cryptor | None = None
        self.settings: AlgorithmSettings | None = None
        self.active = ActiveRuns()
        self._queue: asyncio.Queue[tuple[Run, RunAction | None]] = asyncio.Queue()
        self._queue_lock = asyncio.Lock()
        self._in_process: dict[int, int | None] = {}  # run id -> job id, queued or executing here
        self._jobs_with_volume: set[int] = set()
        self._executor: ExecuteRun | None = None
        self._events: AsyncIterator[NodeEvent] | None = None
        self._sync_wanted = asyncio.Event()
        self._share_details_wanted = False
        self._initialized = False
        self._cleaned = False
        self._main: asyncio.Task[None] | None = None
        self._group: asyncio.TaskGroup | None = None
        self.connected = asyncio.Event()

    # --- start-up ------------------------------------------------------------------------
    async def initialize(self) -> None:
        """Check the engine, log in, set up encryption, the network, the proxy and the socket."""
        ctx = self.ctx
        await ctx.runtime.ping()
        await self._log_in_to_registries()
        await self.authenticate()
        await self.setup_encryption()
        assert self.identity is not None and self.cryptor is not None
        journal_identity = await self._bind_journal(self.identity)
        await self._find_leftover_volumes()
        labels = managed_labels(self.config.name)
        network = network_name(self.config.name)
        gateway = await ctx.runtime.ensure_network(network, labels)
        port = await self._start_proxy(gateway)
        checked = await self._check_proxy_reachable(network, gateway, port)
        self.settings = AlgorithmSettings(
            node_name=self.config.name,
            tasks_dir=ctx.workspace.tasks_dir(),
            network=network,
            proxy_host=gateway,
            proxy_port=port,
            databases=self.config.databases,
            algorithm_env=dict(self.config.algorithm_env),
            gpu=self.config.gpu,
            limits=self.config.limits,
            run_context_file=self.config.run_context_file,
            node_id=self.identity.node_id,
            identity=journal_identity.fingerprint,
        )
        self._executor = ExecuteRun(
            config=self.config,
            identity=self.identity,
            settings=self.settings,
            cryptor=self.cryptor,
            server=ctx.server,
            runtime=ctx.runtime,
            workspace=ctx.workspace,
            journal=ctx.journal,
            clock=ctx.clock,
            active=self.active,
            proxy=ctx.proxy,
            on_status=self._emit_status,
        )
        await self.connect_to_socket()
        self._initialized = True
        log.info(
            "node '%s' (id %s) of organization '%s' ready; algorithm proxy at %s:%s (%s)",
            self.identity.node_name, self.identity.node_id, self.identity.organization_name, gateway, port, checked,
        )

    async def _bind_journal(self, identity: NodeIdentity) -> JournalIdentity:
        """The journal holds only this server's and this node's runs (a re-installed server, a reset
        one or another collaboration reuse run ids: another server's records must never be reported)."""
        me = JournalIdentity.of(
            self.config.api_base, identity.node_id, identity.organization_id, identity.collaboration_id
        )
        binding = await self.ctx.journal.bind(me)
        if binding.set_aside is None:
            return me
        before = binding.previous.describe() if binding.previous else "an unknown server and node (an older v6node)"
        log.warning(
            "the run journal was written for %s, but this node is %s: it is kept as %s and a fresh journal is "
            "used; none of its %d record(s) is reported to this server, and this node's containers, volumes and "
            "task folders are removed as leftovers",
            before, me.describe(), binding.set_aside, binding.entries_set_aside,
        )
        await self.ctx.runtime.remove_labelled(managed_labels(self.config.name))
        for run_id in await self.ctx.workspace.run_ids():
            await self.ctx.workspace.remove(run_id)
        return me

    async def _find_leftover_volumes(self) -> None:
        """Temporary volumes an earlier process left (a crash, a clean-up that failed) go once their
        job is finished, like those of this process (``_remove_job_volumes``, after each sync)."""
        if self.config.keep_task_folders:
            return
        for volume in await self.ctx.runtime.list_volumes(managed_labels(self.config.name)):
            job_id = job_of_tmp_volume(self.config.name, volume)
            if job_id is not None:
                self._jobs_with_volume.add(job_id)

    async def _start_proxy(self, host: str) -> int:
        """The configured port, or this node's stable one, so re-attached algorithms find it again."""
        assert self.cryptor is not None
        if self.config.proxy_port:
            return await self.ctx.proxy.start(host, self.cryptor, self.config.proxy_port)
        stable = stable_proxy_port(self.config.name)
        try:
            return await self.ctx.proxy.start(host, self.cryptor, stable)
        except NodeError as exc:
            log.warning(
                "%s; using another port (algorithms started before a restart cannot reach the proxy)", exc
            )
            return await self.ctx.proxy.start(host, self.cryptor, 0)

    async def _log_in_to_registries(self) -> None:
        """``docker_registries``: a refused login is logged and the node goes on (pulls may fail later)."""
        for login in self.config.docker_registries:
            try:
                await self.ctx.runtime.login(login.registry, login.username, login.password)
                log.info("logged in to docker registry %s as %s", login.registry, login.username)
            except NodeError as exc:
                log.error("could not log in to docker registry %s: %s", login.registry, exc)

    async def _check_proxy_reachable(self, network: str, host: str, port: int) -> str:
        """Fail start-up when algorithm containers cannot reach the proxy; returns what was checked.

        The check image is used only when it is present locally (or ``proxy_check_pull`` allows
        a pull): the start never reaches for a public registry on its own.
        """
        image = self.config.proxy_check_image
        if image is None:
            log.info("proxy reachability check skipped (proxy_check_image is null)")
            return "reachability not checked: proxy_check_image is null"
        runtime = self.ctx.runtime
        if await runtime.local_image_id(image) is None:
            if not self.config.proxy_check_pull:
                log.info(
                    "proxy reachability check skipped: the image %s is not present locally (pull it, name a local "
                    "image with proxy_check_image, or set proxy_check_pull: true)", image,
                )
                return f"reachability not checked: {image} is not present locally"
            try:
                await runtime.ensure_image(image, require_pull=False)
            except NodeError as exc:
                log.warning("could not check that algorithms reach the proxy: %s (set proxy_check_image)", exc)
                return f"reachability not checked: {image} could not be pulled"
        spec = proxy_check_spec(self.config.name, image, network, host, port)
        await runtime.remove_labelled({**managed_labels(self.config.name), "vantage6-type": "proxy-check"})
        container_id = await runtime.run(spec)
        try:
            exit_ = await runtime.wait(container_id)
            output = await runtime.logs(container_id, 64 * 1024)
        finally:
            await runtime.remove(container_id)
        if exit_.exit_code != 0 or '"ok"' not in output:
            raise NodeError(
                f"algorithm containers on Docker network {network} cannot reach the node's proxy at "
                f"http://{host}:{port} (check container exited with {exit_.exit_code}: {output.strip()[:300]!r}). "
                "The Docker engine may not route an internal network to its gateway, or a firewall "
                "blocks the port; see 'Networking' in the README."
            )
        log.info("algorithm containers reach the proxy at %s:%s", host, port)
        return "reachable from a container on the algorithm network"

    async def authenticate(self) -> NodeIdentity:
        """Log in with the API key, retrying while the server is unreachable.

        A wrong API key raises ``AuthenticationFailed`` at once: retrying cannot help.
        """
        self.identity = await until_done(
            self.ctx.server.authenticate, self.ctx.clock, log, f"logging in to {self.config.api_base}"
        )
        log.info(
            "logged in as node '%s' (id %s) of organization '%s' in collaboration %s",
            self.identity.node_name, self.identity.node_id, self.identity.organization_name,
            self.identity.collaboration_id,
        )
        return self.identity

    def private_key_filename(self) -> str:
        """``encryption.private_key`` (default ``private_key.pem``), relative to the data folder."""
        name = self.config.private_key or "private_key.pem"
        return name if os.path.isabs(name) else os.path.join(self.config.data_dir, name)

    async def setup_encryption(self) -> Cryptor:
        """The collaboration's ``encrypted`` flag must match ``encryption.enabled``."""
        assert self.identity is not None
        collaboration = await until_done(
            lambda: self.ctx.server.get_collaboration(self.identity.collaboration_id),
            self.ctx.clock, log, "reading the collaboration",
        )
        if collaboration.encrypted != self.config.encryption_enabled:
            server_says = "encrypted" if collaboration.encrypted else "not encrypted"
            raise EncryptionMismatch(
                f"collaboration '{collaboration.name}' (id {collaboration.id}) is {server_says} on the "
                f"server, but {self.config.source or 'the node config'} has encryption.enabled: "
                f"{str(self.config.encryption_enabled).lower()}. Set encryption.enabled to "
                f"{str(collaboration.encrypted).lower()}"
                + (" and point encryption.private_key to the organization's private key" if collaboration.encrypted else "")
                + "."
            )
        self.cryptor = self.ctx.cryptor_factory(collaboration.encrypted, self.private_key_filename())
        if collaboration.encrypted:
            await self._publish_public_key(self.cryptor)
        return self.cryptor

    async def _publish_public_key(self, cryptor: Cryptor) -> None:
        """Make the server's copy of our organization's public key match our private key."""
        assert self.identity is not None
        org_id = self.identity.organization_id
        organization = await until_done(
            lambda: self.ctx.server.get_organization(org_id), self.ctx.clock, log, "reading our organization"
        )
        ours = cryptor.own_public_key()
        if same_public_key(organization.public_key, ours):
            return
        what = "has no public key" if not organization.public_key else "has a different public key"
        log.warning("organization '%s' %s on the server; uploading ours", organization.name, what)
        await until_done(
            lambda: self.ctx.server.set_organization_public_key(org_id, ours),
            self.ctx.clock, log, "uploading our public key",
        )

    async def connect_to_socket(self) -> None:
        """Open the websocket and wait until it is connected (or time out with an error)."""
        self._events = aiter(self.ctx.events.events())
        try:
            async with asyncio.timeout(self.ctx.timings.socket_connect_timeout):
                while True:
                    event = await anext(self._events)
                    if isinstance(event, Connected):
                        break
                    await self._handle(event)
        except TimeoutError:
            raise NodeError(
                f"could not connect to the websocket of {self.config.server_root} within "
                f"{self.ctx.timings.socket_connect_timeout:.0f} s"
            ) from None
        await self._on_connected()
        log.info("connected to the websocket of %s", self.config.server_root)

    # --- the run queue -------------------------------------------------------------------
    async def sync_task_queue_with_server(self) -> int:
        """Reconcile the server's open runs with the journal and the containers, then act.

        New runs are queued; a run whose container still runs is waited for again; a run
        that ended unreported is reported; a run the node lost is ended ``failed`` (never
        re-run). Containers, task folders and journal entries of no open run are removed.
        Returns how many runs were queued for any of these.
        """
        async with self._queue_lock:
            here_before = set(self._in_process)
            runs = [run for run in await self.ctx.server.list_open_runs() if self._is_ours(run, log_if_not=True)]
            await self._stop_runs_finished_on_the_server(here_before - {run.id for run in runs})
            containers = await self.ctx.runtime.list(
                {**managed_labels(self.config.name), "vantage6-type": "algorithm"}
            )
            plan = reconcile(
                runs,
                await self.ctx.journal.entries(),
                containers,
                await self.ctx.workspace.runs_with_output(),
                task_folders=await self.ctx.workspace.run_ids(),
                in_process=set(self._in_process),
                keep_entries_since=self.ctx.clock.now() - JOURNAL_KEEPS,
                identity=self.settings.identity if self.settings is not None else None,
            )
            return await self._apply(plan)

    async def _stop_runs_finished_on_the_server(self, run_ids: set[int]) -> None:
        """Runs this process holds that the server lists closed, though they were here before it
        was asked: killed while the websocket was down (the kill order never came), or reported
        by us meanwhile. The first are stopped as a kill would; for the second it changes nothing."""
        for run_id in sorted(run_ids):
            active = self.active.get(run_id)
            if run_id not in self._in_process or (active is not None and (active.killed or active.reported)):
                continue
            self.active.mark_killed(run_id)
            if active is None or active.container_id is None:
                continue  # queued or starting: it never starts now
            log.warning("run %s is finished on the server (killed while the websocket was down?); stopping it", run_id)
            with contextlib.suppress(NodeError):
                await self.ctx.runtime.kill(active.container_id)

    async def _apply(self, plan: Reconciliation) -> int:
        for note in plan.notes:
            log.info("reconcile: %s", note)
        for run_id in plan.entries_to_forget:
            await self.ctx.journal.forget(run_id)
        for container_id in plan.containers_to_remove:
            await self.ctx.runtime.remove(container_id)
        for run_id in plan.folders_to_remove:
            await self.ctx.workspace.remove(run_id)
        queued = 0
        for action in plan.actions:
            run = action.run
            if action.needs_claim:
                await self._claim(run)
            if action.needs_start_recorded:
                await self.ctx.journal.advance(run.id, RunStep.STARTED, container_id=action.container_id)
            if action.kind is not ActionKind.START:
                log.warning("%s", action.reason)
            self._enqueue(run, action)
            queued += 1
        if queued:
            log.info("queued %d run(s)", queued)
        return queued

    async def get_task_and_add_to_queue(self, task_id: int) -> int:
        """Queue this node's open runs of one task (there may be none).

        A run that is not plainly new is never dropped in silence: it is logged with the
        reason, and one known from before is left to the reconciliation (a sync is asked).
        """
        runs = await self.ctx.server.list_open_runs(task_id=task_id)
        async with self._queue_lock:
            queued = 0
            for run in sorted(runs, key=lambda r: r.id):
                if await self._admit_new(run):
                    self._enqueue(run, None)
                    queued += 1
            if queued:
                log.info("queued %d new run(s)", queued)
            return queued

    async def _admit_new(self, run: Run) -> bool:
        """Claim a run announced by ``new_task``; False (with a log line saying why) when it is not run now."""
        if not self._is_ours(run, log_if_not=True):
            return False
        if run.id in self._in_process:
            log.info("run %s is already queued or running here", run.id)
            return False
        if run.started_at is not None or run.status is not RunStatus.PENDING:
            log.info(
                "run %s was started before (status '%s'); the reconciliation decides what to do with it", run.id, run.status
            )
            self.request_sync()
            return False
        # The journal's claim is what keeps sync + new_task from starting a run twice.
        if await self._claim(run):
            return True
        entry = await self.ctx.journal.get(run.id)
        why = stale_because(entry, run) if entry is not None else None
        if why is not None:
            log.warning("run %s: the journal's record describes another run (%s); replacing it", run.id, why)
            await self.ctx.journal.forget(run.id)
            await self.ctx.workspace.remove(run.id)
            return await self._claim(run)
        step = entry.step.name.lower() if entry is not None else "unknown"
        log.info("run %s is in the journal from before (%s); the reconciliation decides what to do with it", run.id, step)
        self.request_sync()
        return False

    async def _claim(self, run: Run) -> bool:
        return await self.ctx.journal.claim(run.id, run.task.id, job_id=run.task.job_id, assigned_at=run.assigned_at)

    def _is_ours(self, run: Run, log_if_not: bool = False) -> bool:
        assert self.identity is not None
        ours = run.organization_id in (None, self.identity.organization_id)
        if not ours and log_if_not:
            log.info("run %s belongs to organization %s, not to ours; not run here", run.id, run.organization_id)
        return ours

    def _enqueue(self, run: Run, action: RunAction | None) -> None:
        self._in_process[run.id] = run.task.job_id
        self._queue.put_nowait((run, action))

    async def share_node_details(self) -> None:
        """Tell the server what this node offers (``node_info_update``), unless ``share_config`` is false."""
        if not self.config.share_config:
            return
        policies = self.config.policies
        details: dict[str, object] = {
            "encryption": self.config.encryption_enabled,
            "allowed_algorithms": list(policies.allowed_algorithms) or "all",
            "database_labels": [db.label for db in self.config.databases],
            "database_types": {f"db_type_{db.label}": db.type for db in self.config.databases},
        }
        if policies.allowed_users:
            details["allowed_users"] = list(policies.allowed_users)
        if policies.allowed_organizations:
            details["allowed_orgs"] = list(policies.allowed_organizations)
        columns = {}
        for db in self.config.databases:
            if names := await self.ctx.catalog.columns(db):
                columns[f"columns_{db.label}"] = names
        if columns:
            details["database_columns"] = columns
        await self._emit("node_info_update", details)

    # --- kills ---------------------------------------------------------------------------------
    async def kill_containers(self, order: KillOrder) -> list[KilledRun]:
        """Kill what ``order`` targets on this node; returns the runs killed."""
        assert self.identity is not None
        me = self.identity
        if order.collaboration_id not in (None, me.collaboration_id):
            return []
        if order.node_id is not None and order.node_id != me.node_id:
            return []
        if order.node_wide:
            targets = [a.run.id for a in self.active.all()]
        else:
            targets = [t.run_id for t in order.targets if t.organization_id == me.organization_id]
        killed = []
        for run_id in targets:
            active = self.active.mark_killed(run_id)
            if active is None:
                log.info("kill order for run %s, which is not running here", run_id)
                continue
            if active.container_id is not None:
                with contextlib.suppress(NodeError):
                    await self.ctx.runtime.kill(active.container_id)
            killed.append(KilledRun(run_id, active.run.task.id, active.run.task.parent_id))
            log.info("killed run %s of task %s", run_id, active.run.task.id)
        return killed

    # --- the event loop -------------------------------------------------------------------------
    async def run_forever(self) -> None:
        """Serve until cancelled or ``stop()``; always cleans up."""
        self._main = asyncio.current_task()
        try:
            if not self._initialized:
                await self.initialize()
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self._listen(), name="listener")
                for i in range(self.config.max_concurrent_runs):
                    group.create_task(self._work(), name=f"executor-{i}")
                group.create_task(self._heartbeat(), name="heartbeat")
                group.create_task(self._refresh_tokens(), name="token-refresh")
                group.create_task(self._sync_loop(), name="sync")
                group.create_task(self._periodic_sync(), name="periodic-sync")
        finally:
            self._group = None
            await self.cleanup()

    async def stop(self) -> None:
        if self._main is not None and not self._main.done():
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main

    async def cleanup(self) -> None:
        """Close the socket and remove every container, network and volume of this node."""
        if self._cleaned:
            return
        self._cleaned = True
        if self._executor is not None:
            try:
                async with asyncio.timeout(self.ctx.timings.shutdown_report_timeout):
                    reported = await self._executor.report_interrupted("the node was stopped")
                if reported:
                    log.warning("reported %d run(s) as failed: the node stopped while they ran", reported)
            except TimeoutError:
                log.error("could not report the interrupted runs in time; they are reported at the next start")
        with contextlib.suppress(NodeError):
            await self.ctx.events.close()
        left: list[str] = []
        try:
            removed = await self.ctx.runtime.remove_labelled(managed_labels(self.config.name))
            log.info("cleanup: removed %d container(s), network(s) and volume(s)", removed)
        except ResourcesLeft as exc:
            left.extend(exc.left)
        except NodeError as exc:
            left.append(f"every container, network and volume labelled {LABEL_MANAGED_BY}={self.config.name} ({exc})")
        for run_id in await self.ctx.workspace.run_ids():
            try:
                await self.ctx.workspace.remove(run_id)
            except OSError as exc:
                left.append(f"the task folder of run {run_id} ({exc.strerror or exc})")
        left.extend(f"the task folder of run {run_id}" for run_id in await self.ctx.workspace.run_ids())
        await self.ctx.proxy.stop()
        if left:
            raise CleanupIncomplete(
                "the node stopped, but could not remove: " + "; ".join(dict.fromkeys(left))
                + ". The next start removes these leftovers; or remove them by hand."
            )

    def _spawn(self, coro, name: str) -> None:
        if self._group is not None:
            self._group.create_task(self._guarded(coro, name), name=name)
        else:
            coro.close()

    async def _guarded(self, coro, what: str) -> None:
        try:
            await coro
        except NodeError as exc:
            log.error("%s failed: %s", what, exc)
        except Exception:
            log.exception("%s failed unexpectedly", what)

    async def _listen(self) -> None:
        assert self._events is not None
        async for event in self._events:
            try:
                await self._handle(event)
            except Exception:
                log.exception("handling %r failed", event)

    async def _handle(self, event: NodeEvent) -> None:
        match event:
            case Connected(reconnect=reconnect):
                await self._on_connected()
                if reconnect:
                    log.info("websocket reconnected; synchronising")
                    self.request_sync()
            case Disconnected(reason=reason):
                self.connected.clear()
                log.warning("websocket disconnected (%s); reconnecting", reason)
            case SyncRequested():
                self._share_details_wanted = True
                self.request_sync()
            case NewTask(task_id=task_id):
                self._spawn(self.get_task_and_add_to_queue(task_id), f"fetching runs of task {task_id}")
            case KillRequested(order=order):
                self._spawn(self.kill_containers(order), "kill order")
            case TokenExpired():
                self._spawn(self._renew_socket(refresh=True), "renewing the expired token")
            case TokenInvalid():
                self._spawn(self._renew_socket(refresh=False), "logging in again")
            case ServerMessage(text=text):
                log.info("server: %s", text)
            case PeerStatusChanged(status=status, run_id=run_id) if has_failed(status):
                log.warning("run %s reported status '%s'", run_id, status)
            case _:
                log.debug("ignored event %r", event)

    async def _on_connected(self) -> None:
        self.connected.set()
        # A ping at once: the server's liveness check trips over an online node that
        # has never been seen, and sockets alone do not count as seen.
        await self._emit("ping", None)

    def request_sync(self) -> None:
        self._sync_wanted.set()

    async def _renew_socket(self, refresh: bool) -> None:
        if refresh:
            try:
                await until_done(self.ctx.server.refresh_token, self.ctx.clock, log, "refreshing the token")
            except AuthenticationFailed:
                await self.authenticate()
        else:
            await self.authenticate()
        await self.ctx.events.reconnect()

    async def _sync_loop(self) -> None:
        # Sync requests that arrive while a sync runs collapse into one more sync.
        delays = backoff_delays()
        while True:
            await self._sync_wanted.wait()
            self._sync_wanted.clear()
            try:
                await self.sync_task_queue_with_server()
                await self._remove_job_volumes()
                if self._share_details_wanted:
                    self._share_details_wanted = False
                    await self.share_node_details()
                delays = backoff_delays()
            except NodeError as exc:
                delay = next(delays)
                log.warning("synchronising with the server failed (%s); again in %.0f s", exc, delay)
                await self.ctx.clock.sleep(delay)
                self._sync_wanted.set()

    async def _periodic_sync(self) -> None:
        # A safety net against lost websocket events, and a socket that died silently.
        while True:
            await self.ctx.clock.sleep(self.config.sync_interval)
            self.request_sync()

    async def _work(self) -> None:
        assert self._executor is not None
        executor = self._executor
        while True:
            run, action = await self._queue.get()
            try:
                if action is None or action.kind is ActionKind.START:
                    await executor(run)
                elif action.kind is ActionKind.REATTACH:
                    assert action.container_id is not None
                    entry = action.entry
                    await executor.reattach(run, action.container_id, entry.token if entry else None)
                else:
                    await executor.conclude(run, action)
            except NodeError as exc:
                log.error("run %s could not be executed: %s", run.id, exc)
                await self._report_unexpected(run, str(exc))
            except Exception as exc:
                log.exception("run %s failed unexpectedly", run.id)
                await self._report_unexpected(run, f"{type(exc).__name__}: {exc}")
            finally:
                self._in_process.pop(run.id, None)
            await self._remove_finished_job_volume(run)

    async def _remove_finished_job_volume(self, run: Run) -> None:
        """A job's temporary volume goes once the job's root task is finished and none of its runs is here."""
        job_id = run.task.job_id
        if job_id is None or self.config.keep_task_folders:
            return
        self._jobs_with_volume.add(job_id)
        await self._remove_job_volumes()

    async def _remove_job_volumes(self) -> None:
        for job_id in sorted(self._jobs_with_volume):
            if job_id in self._in_process.values() or job_id not in self._jobs_with_volume:
                continue
            # Out of the set while it is looked at: every executor runs this loop after each
            # run, and without this they would all ask the server about the same jobs at once.
            self._jobs_with_volume.discard(job_id)
            try:
                try:
                    root = await self.ctx.server.get_task(job_id)
                    finished = root.status is not None and has_finished(root.status)
                except ServerRejected as exc:
                    if exc.status != 404:
                        raise
                    finished = True  # the server knows no such job: nothing will use the volume again
                if not finished:
                    self._jobs_with_volume.add(job_id)
                    continue
                await self.ctx.runtime.remove_volume(tmp_volume_name(self.config.name, job_id, 0))
            except NodeError as exc:
                self._jobs_with_volume.add(job_id)
                log.debug("temporary volume of job %s stays for now: %s", job_id, exc)
                continue
            log.info("job %s is finished; its temporary volume is removed", job_id)

    async def _report_unexpected(self, run: Run, reason: str) -> None:
        """The run must still end: report ``unknown error`` so it is not stuck open."""
        try:
            update = RunUpdate.finished(
                RunStatus.UNKNOWN_ERROR, self.ctx.clock.now(), f"[v6node] the node could not execute this run: {reason}"
            )
            await self.ctx.server.update_run(run.id, update)
            await self.ctx.journal.advance(run.id, RunStep.REPORTED, status=RunStatus.UNKNOWN_ERROR)
        except NodeError as exc:
            log.error("could not report run %s as failed: %s", run.id, exc)

    async def _heartbeat(self) -> None:
        while True:
            await self.ctx.clock.sleep(self.ctx.timings.heartbeat)
            with contextlib.suppress(NotConnected):
                await self.ctx.events.emit("ping")

    async def _refresh_tokens(self) -> None:
        server, clock = self.ctx.server, self.ctx.clock
        while True:
            remaining = server.token_expires_at() - clock.now().timestamp()
            margin = min(self.ctx.timings.refresh_margin, max(remaining, 0) / 2)
            await clock.sleep(max(remaining - margin, 1.0))
            try:
                await until_done(server.refresh_token, clock, log, "refreshing the access token")
            except AuthenticationFailed:
                log.warning("the refresh token was refused; logging in again with the API key")
                await self.authenticate()

    async def _emit(self, event: str, data: object) -> None:
        try:
            await self.ctx.events.emit(event, data)
        except NotConnected:
            log.debug("not connected; %s not sent", event)

    async def _emit_status(self, change: StatusChange) -> None:
        await self._emit("algorithm_status_change", change.as_payload())
