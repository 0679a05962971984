"""The Node: the supervisor that runs the use cases, the event dispatch and the loops."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from v6node.app.active_runs import ActiveRuns
from v6node.app.checklist import step_done
from v6node.app.emitter import Emitter
from v6node.app.node_parts import NodeTimings, UseCases
from v6node.app.together import together
from v6node.app.report_result import RunOutcome
from v6node.app.retry import until_done
from v6node.app.run_queue import RunQueue
from v6node.app.session import NodeSession
from v6node.app.set_up_encryption import private_key_filename
from v6node.domain.backoff import Backoff
from v6node.domain.config import NodeConfig
from v6node.domain.egress import LinkedService, Sidecar
from v6node.domain.errors import NodeError, NotConnected
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
from v6node.domain.kill import KilledRun, KillOrder
from v6node.domain.model import NodeIdentity, Run
from v6node.domain.status import RunStatus, has_failed
from v6node.domain.vpn import VpnConnection
from v6node.ports.clock import Clock
from v6node.ports.cryptor import Cryptor
from v6node.ports.event_stream import EventStream
from v6node.ports.node_metrics import NodeMetrics
from v6node.ports.server_api import ServerApi

log = logging.getLogger("v6node.node")


class Node:
    """A vantage6 node. Method names follow the reference node; all are coroutines.

    Nothing starts in the constructor. ``run_forever`` initializes when needed and runs
    the event listener, the run executors (at most ``max_concurrent_runs`` at once), the
    heartbeat, the token renewal, the sync loops and the sidecars' supervision in one task
    group; ``stop`` (or cancelling it) ends them and ``cleanup`` removes everything the node
    created. Each loop logs and survives its own errors; cancellation always stops it.
    """

    def __init__(
        self,
        *,
        config: NodeConfig,
        timings: NodeTimings,
        server: ServerApi,
        events: EventStream,
        clock: Clock,
        session: NodeSession,
        queue: RunQueue,
        active: ActiveRuns,
        emitter: Emitter,
        metrics: NodeMetrics,
        use: UseCases,
    ) -> None:
        self.config = config
        self.timings = timings
        self.server = server
        self.events = events
        self.clock = clock
        self.session = session
        self.queue = queue
        self.active = active
        self.emitter = emitter
        self.metrics = metrics
        self.use = use
        self.connected = asyncio.Event()
        self.ready = asyncio.Event()  # set once start-up is done (the "ready" line); never cleared
        self._stream: AsyncIterator[NodeEvent] | None = None
        self._share_details_wanted = False
        self._initialized = False
        self._cleaned = False
        self._main: asyncio.Task[None] | None = None
        self._group: asyncio.TaskGroup | None = None

    # --- the reference node's methods ------------------------------------------------------------
    async def initialize(self) -> None:
        """Start up (``StartNode``), then open the websocket."""
        started = await self.use.start()
        # The proxy check runs while the node goes online; no run is taken before it passed.
        _, checked = await together(self._go_online(), self.use.start.check_reachable(started))
        step_done("reach", checked)
        self._initialized = True
        me = self.session.me()
        step_done(
            "ready",
            f"node '{me.node_name}' (id {me.node_id}) of organization '{me.organization_name}' ready; "
            f"{started.summary} ({checked})",
        )
        self.ready.set()

    async def _go_online(self) -> None:
        await self.use.serve_monitoring()
        await self.connect_to_socket()

    async def authenticate(self) -> NodeIdentity:
        return await self.use.authenticate()

    async def setup_encryption(self) -> Cryptor:
        return await self.use.set_up_encryption()

    def private_key_filename(self) -> str:
        return private_key_filename(self.config)

    async def connect_to_socket(self) -> None:
        """Open the websocket and wait until it is connected (or time out with an error)."""
        self._stream = aiter(self.events.events())
        try:
            async with asyncio.timeout(self.timings.socket_connect_timeout):
                while True:
                    event = await anext(self._stream)
                    if isinstance(event, Connected):
                        break
                    await self._handle(event)
        except TimeoutError:
            raise NodeError(
                f"could not connect to the websocket of {self.config.server_root} within "
                f"{self.timings.socket_connect_timeout:.0f} s"
            ) from None
        await self._on_connected()
        step_done("websocket", f"connected to {self.config.server_root}")

    async def sync_task_queue_with_server(self) -> int:
        return await self.use.sync_runs()

    async def get_task_and_add_to_queue(self, task_id: int) -> int:
        return await self.use.queue_new_runs(task_id)

    async def kill_containers(self, order: KillOrder) -> list[KilledRun]:
        return await self.use.apply_kill_order(order)

    async def share_node_details(self) -> None:
        await self.use.share_node_details()

    async def setup_squid_proxy(self) -> Sidecar | None:
        return await self.use.set_up_squid_proxy()

    async def setup_ssh_tunnels(self) -> list[Sidecar]:
        return await self.use.set_up_ssh_tunnels()

    async def link_docker_services(self) -> list[LinkedService]:
        return await self.use.link_docker_services()

    async def setup_vpn_connection(self) -> VpnConnection | None:
        return await self.use.set_up_vpn_connection()

    async def cleanup(self) -> None:
        """Report interrupted runs and remove everything the node made (once)."""
        if self._cleaned:
            return
        self._cleaned = True
        await self.use.clean_up()

    # --- lifetime -----------------------------------------------------------------------------------
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
                group.create_task(self._renew_tokens(), name="token-renewal")
                group.create_task(self._sync_loop(), name="sync")
                group.create_task(self._periodic_sync(), name="periodic-sync")
                if self.config.monitoring.server_metrics:
                    group.create_task(self._report_metrics(), name="metrics")
                group.create_task(self.use.supervise_sidecars(), name="sidecars")
        finally:
            self._group = None
            await self.cleanup()

    async def stop(self) -> None:
        if self._main is not None and not self._main.done():
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main

    def request_sync(self) -> None:
        self.queue.ask_for_sync()

    # --- event dispatch -----------------------------------------------------------------------------
    async def _listen(self) -> None:
        assert self._stream is not None
        async for event in self._stream:
            try:
                await self._handle(event)
            except Exception:
                log.exception("handling %r failed", event)

    async def _handle(self, event: NodeEvent) -> None:
        match event:
            case Connected(reconnect=reconnect):
                await self._on_connected()
                if reconnect:
                    self.metrics.reconnected()
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
                self._spawn(self._renew_socket(log_in=False), "renewing the expired token")
            case TokenInvalid():
                self._spawn(self._renew_socket(log_in=True), "logging in again")
            case ServerMessage(text=text):
                log.info("server: %s", text)
            case PeerStatusChanged(status=status, run_id=run_id) if has_failed(status):
                log.warning("run %s reported status '%s'", run_id, status)
            case _:
                log.debug("ignored event %r", event)

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        if self._group is not None:
            self._group.create_task(self._guarded(coro, name), name=name)
        else:
            coro.close()

    @staticmethod
    async def _guarded(coro: Coroutine[Any, Any, object], what: str) -> None:
        try:
            await coro
        except NodeError as exc:
            log.error("%s failed: %s", what, exc)
        except Exception:
            log.exception("%s failed unexpectedly", what)

    async def _on_connected(self) -> None:
        self.connected.set()
        # A ping at once: the server's liveness check trips over an online node that
        # has never been seen, and sockets alone do not count as seen.
        await self.emitter.emit("ping")

    async def _renew_socket(self, log_in: bool) -> None:
        if log_in:
            await self.authenticate()
        else:
            await until_done(self.server.renew_token, self.clock, log, "renewing the access token")
        await self.events.reconnect()

    # --- loops ---------------------------------------------------------------------------------------
    async def _sync_loop(self) -> None:
        backoff = Backoff()
        failures = 0
        while True:
            await self.queue.wait_for_sync_request()
            try:
                await self.sync_task_queue_with_server()
                await self.use.remove_job_volumes()
                if self._share_details_wanted:
                    self._share_details_wanted = False
                    await self.share_node_details()
                failures = 0
            except NodeError as exc:
                delay = backoff.delay(failures)
                failures += 1
                log.warning("synchronising with the server failed (%s); again in %.0f s", exc, delay)
                await self.clock.sleep(delay)
                self.request_sync()

    async def _periodic_sync(self) -> None:
        # A safety net against lost websocket events, and a socket that died silently.
        while True:
            await self.clock.sleep(self.config.sync_interval)
            self.request_sync()

    async def _work(self) -> None:
        while True:
            run, action = await self.queue.get()
            try:
                await self.use.execute_run(run, action)
            except NodeError as exc:
                log.error("run %s could not be executed: %s", run.id, exc)
                await self._report_unexpected(run, str(exc))
            except Exception as exc:
                log.exception("run %s failed unexpectedly", run.id)
                await self._report_unexpected(run, f"{type(exc).__name__}: {exc}")
            finally:
                self.queue.done(run.id)
            self.use.remove_job_volumes.note(run.task.job_id)
            await self.use.remove_job_volumes()

    async def _report_unexpected(self, run: Run, reason: str) -> None:
        """The run must still end: report ``unknown error`` so it is not stuck open."""
        try:
            log_text = f"[v6node] the node could not execute this run: {reason}"
            await self.use.report_result(run, RunOutcome(RunStatus.UNKNOWN_ERROR, log_text))
        except NodeError as exc:
            log.error("could not report run %s as failed: %s", run.id, exc)

    async def _report_metrics(self) -> None:
        while True:
            await self.clock.sleep(self.config.monitoring.server_metrics_interval)
            try:
                await self.use.report_metrics()
            except Exception:
                log.exception("reporting metrics to the server failed")

    async def _heartbeat(self) -> None:
        while True:
            await self.clock.sleep(self.timings.heartbeat)
            with contextlib.suppress(NotConnected):
                await self.events.emit("ping")

    async def _renew_tokens(self) -> None:
        while True:
            remaining = self.server.token_expires_at() - self.clock.now().timestamp()
            margin = min(self.timings.refresh_margin, max(remaining, 0) / 2)
            await self.clock.sleep(max(remaining - margin, 1.0))
            await until_done(self.server.renew_token, self.clock, log, "renewing the access token")
