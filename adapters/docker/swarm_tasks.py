"""Swarm task states, and one watcher that tells every waiting caller when its job's task moved.

Measured on Engine 20.10 (see tests/rig/swarm.py): the manager's event stream carries no
task events. It has ``service`` create/update/remove, ``node`` update (a node going down,
or gaining/losing its first/last task on a network) and ``container`` events of the
manager's own containers only; a task that ends on a worker emits nothing on the manager,
and a ``service logs --follow`` stream stays open after the task ended. So the watcher
lists the tasks of all waited-for jobs in one call whenever the manager's stream has an
event, and otherwise after an interval that grows from ``FIRST_INTERVAL`` to
``LONGEST_INTERVAL`` while nothing changes (one call per interval however many runs wait).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import docker
import docker.errors
from attrs import frozen

from v6node.adapters.docker.errors import docker_errors
from v6node.adapters.docker.swarm_specs import was_killed
from v6node.domain.containers import ContainerExit
from v6node.domain.errors import ContainerNotFound, ContainerStartFailed, NodeError

log = logging.getLogger(__name__)

FINAL = frozenset({"complete", "failed", "shutdown", "rejected", "orphaned", "remove"})
FIRST_INTERVAL = 0.25
LONGEST_INTERVAL = 2.0
_NON_ZERO = re.compile(r"^task: non-zero exit \((-?\d+)\)")
KILLED = 137


@frozen
class TaskView:
    id: str
    service_id: str
    node_id: str
    state: str
    err: str
    exit_code: int | None
    created: str

    @classmethod
    def of(cls, raw: dict[str, Any]) -> TaskView:
        status = raw.get("Status") or {}
        container = status.get("ContainerStatus") or {}
        return cls(
            id=raw["ID"], service_id=raw.get("ServiceID", ""), node_id=raw.get("NodeID", ""),
            state=status.get("State", ""), err=status.get("Err") or "", exit_code=container.get("ExitCode"),
            created=raw.get("CreatedAt", ""),
        )

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def never_ran(self) -> bool:
        """Ended before its container ran: rejected (no such image, bad mount) or failed to start."""
        return self.state == "rejected" or (self.state == "failed" and not _NON_ZERO.match(self.err))

    def exit(self) -> ContainerExit:
        if self.state == "complete":
            return ContainerExit(0)
        if self.state == "failed" and (match := _NON_ZERO.match(self.err)):
            return ContainerExit(int(match.group(1)))
        code = self.exit_code if self.exit_code not in (None, 0, -1) else KILLED
        return ContainerExit(code)


def the_run(tasks: list[TaskView]) -> TaskView | None:
    """The task that runs (or ran) a job: its first. A job's service never starts a task
    again (restart ``none``); the only later task is the one a kill's update creates, which
    never gets a node (``killed_template``)."""
    return min(tasks, key=lambda task: task.created, default=None)


def tasks_of(api: docker.APIClient, service_ids: list[str]) -> tuple[list[dict[str, Any]], set[str]]:
    """The tasks of the services, and those of them that were removed meanwhile. The manager
    answers a listing filtered by a service it no longer has with 404 as a whole (measured),
    so a service removed between the listing of services and this one is then left out."""
    if not service_ids:
        return [], set()
    try:
        return list(api.tasks(filters={"service": service_ids})), set()
    except docker.errors.NotFound:
        pass
    raw: list[dict[str, Any]] = []
    gone = set()
    for service_id in service_ids:
        try:
            raw += api.tasks(filters={"service": service_id})
        except docker.errors.NotFound:
            gone.add(service_id)
    return raw, gone


@frozen
class Snapshot:
    """One listing: the waited-for jobs that still exist, their tasks, and the nodes."""

    services: set[str]
    killed: set[str]  # jobs a kill scaled to no completions
    tasks: dict[str, list[TaskView]]
    nodes: dict[str, tuple[str, str]]  # node id -> (host name, state)

    def host(self, node_id: str) -> str:
        name, _ = self.nodes.get(node_id, (node_id[:12], "unknown"))
        return name


def _down(snap: Snapshot, task: TaskView) -> bool:
    return bool(task.node_id) and snap.nodes.get(task.node_id, ("", ""))[1] == "down"


def _decide(kind: str, service_id: str, snap: Snapshot) -> Any:
    """For a waiter of ``kind``: its answer (an error to raise), or None to keep waiting.

    "started": the host name once the task runs; "ended": its ``ContainerExit``; "all": the
    first task on each host of a global job once each has ended (or its host is down).
    Only each host's first task counts (there is one: restart ``none``).
    """
    if service_id not in snap.services:
        return ContainerNotFound(f"no such job: {service_id}")
    tasks = snap.tasks.get(service_id, [])
    if kind == "all":
        first: dict[str, TaskView] = {}
        for each in sorted(tasks, key=lambda each: each.created):
            first.setdefault(each.node_id, each)
        done = first and all(each.final or _down(snap, each) for each in first.values())
        return list(first.values()) if done else None
    task = the_run(tasks)
    if task is None:
        return ContainerExit(KILLED) if service_id in snap.killed and kind == "ended" else None
    if service_id in snap.killed and not task.node_id and not task.final:
        # Killed before its task had a host: that task waits for one no host is, for good.
        return ContainerExit(KILLED) if kind == "ended" else ContainerStartFailed("the job was killed before it started")
    if task.state == "shutdown" and service_id in snap.killed:
        return task.exit() if kind == "ended" else snap.host(task.node_id)
    if task.never_ran and task.final:
        why = task.err or task.state
        where = f" on {snap.host(task.node_id)}" if task.node_id else ""
        return ContainerStartFailed(f"the job's task could not start{where}: {why}")
    if task.final:
        return task.exit() if kind == "ended" else snap.host(task.node_id)
    if _down(snap, task):
        host = snap.host(task.node_id)
        lost = (
            f"the swarm host {host} that ran the algorithm went down (its engine no longer answers the "
            "manager); how the algorithm ended is unknown"
        )
        return ContainerExit(-1, lost=lost)
    if kind == "started" and task.state == "running":
        return snap.host(task.node_id)
    return None


class TaskWatcher:
    """Resolves ``until(service_id, kind)`` from shared listings; see the module docstring."""

    def __init__(self, api: Callable[[], docker.APIClient], calls: Executor, streams: Executor) -> None:
        self._api = api
        self._calls = calls
        self._streams = streams
        self._waiters: dict[str, list[tuple[str, asyncio.Future[Any]]]] = {}
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._events: Any = None
        self._following = False
        self._lock = threading.Lock()
        self._closed = False

    async def until(self, service_id: str, kind: str) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiters.setdefault(service_id, []).append((kind, future))
        self._ensure_running(loop)
        assert self._wake is not None
        self._wake.set()
        try:
            return await future
        finally:
            entries = self._waiters.get(service_id, [])
            with contextlib.suppress(ValueError):
                entries.remove((kind, future))
            if not entries:
                self._waiters.pop(service_id, None)

    def _ensure_running(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = loop.create_task(self._watch())
        if not self._following:
            self._following = True
            loop.run_in_executor(self._streams, self._follow_events, loop, self._wake)

    def _follow_events(self, loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
        """Any event of the manager may mean a task moved: wake the watcher (runs in a thread)."""
        try:
            with docker_errors("following the swarm manager's events"):
                stream = self._api().events(decode=True, filters={"type": ["service", "node", "container"]})
            with self._lock:
                if self._closed:
                    stream.close()
                    return
                self._events = stream
            for _event in stream:
                loop.call_soon_threadsafe(wake.set)
        except Exception as exc:  # noqa: BLE001 - the listing interval still finds every change
            log.debug("the manager's event stream ended: %s", exc)
        finally:
            with self._lock:
                self._events = None
                self._following = False

    async def _watch(self) -> None:
        assert self._wake is not None
        interval = FIRST_INTERVAL
        previous: Snapshot | None = None
        loop = asyncio.get_running_loop()
        while self._waiters:
            self._wake.clear()
            try:
                snap = await loop.run_in_executor(self._calls, self._snapshot, list(self._waiters))
            except NodeError as exc:
                self._fail_all(exc)
                return
            self._resolve(snap)
            interval = FIRST_INTERVAL if snap != previous else min(interval * 2, LONGEST_INTERVAL)
            previous = snap
            if not self._waiters:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    def _snapshot(self, service_ids: list[str]) -> Snapshot:
        api = self._api()
        with docker_errors("listing swarm jobs"):
            found = api.services(filters={"id": service_ids})
            services = {s["ID"] for s in found}
            killed = {s["ID"] for s in found if was_killed(s)}
            raw, gone = tasks_of(api, sorted(services))
            services -= gone
            nodes = {
                n["ID"]: (n.get("Description", {}).get("Hostname", n["ID"][:12]), n.get("Status", {}).get("State", ""))
                for n in api.nodes()
            }
        tasks: dict[str, list[TaskView]] = {}
        for item in raw:
            view = TaskView.of(item)
            tasks.setdefault(view.service_id, []).append(view)
        # Ids given by prefix or name resolve to full ids: map the waiters' keys onto them.
        by_key = {key: next((s for s in services if s.startswith(key)), key) for key in service_ids}
        return Snapshot(
            services={key for key, full in by_key.items() if full in services},
            killed={key for key, full in by_key.items() if full in killed},
            tasks={key: tasks.get(full, []) for key, full in by_key.items()},
            nodes=nodes,
        )

    def _resolve(self, snap: Snapshot) -> None:
        for service_id, entries in list(self._waiters.items()):
            if service_id not in snap.tasks:
                continue  # began waiting while this listing was under way: the next one tells
            for kind, future in list(entries):
                if future.done():
                    continue
                answer = _decide(kind, service_id, snap)
                if isinstance(answer, NodeError):
                    future.set_exception(answer)
                elif answer is not None:
                    future.set_result(answer)

    def _fail_all(self, exc: NodeError) -> None:
        for entries in self._waiters.values():
            for _kind, future in entries:
                if not future.done():
                    future.set_exception(exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            stream = self._events
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        if self._loop_task is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                self._loop_task.cancel()
