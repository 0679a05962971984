"""Use case: run an algorithm image the way nodes run it, against a server in memory (``v6node run-local``)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from v6node.app.container_memory import local_federation
from v6node.app.embedded import EmbeddedNode, config_from_dict
from v6node.app.run_events import RunEventStream
from v6node.domain.errors import NodeError
from v6node.domain.local_run import LocalRunReport
from v6node.domain.model import RequestedDatabase
from v6node.domain.run_events import RunEvent, Stage
from v6node.ports.local_federation import LocalFederation


# One organization's databases: label -> a file or folder, or -> a node-config entry (uri, type, ...).
Databases = Mapping[str, str | os.PathLike[str] | Mapping[str, Any]]
EventCallback = Callable[[int, RunEvent], None]

_TYPES_BY_SUFFIX = {".csv": "csv", ".parquet": "parquet", ".xlsx": "excel", ".xls": "excel"}


def database_entries(databases: Databases) -> list[dict[str, Any]]:
    """Node-config ``databases`` entries; a path's type comes from its suffix (a folder is
    ``folder``; otherwise the node's default, ``csv``), and relative paths from the working folder."""
    entries = []
    for label, value in databases.items():
        if isinstance(value, Mapping):
            entry = {**value, "label": label}
        else:
            path = os.path.abspath(os.fspath(value))
            entry = {"label": label, "uri": path}
            kind = "folder" if os.path.isdir(path) else _TYPES_BY_SUFFIX.get(Path(path).suffix.lower())
            if kind is not None:
                entry["type"] = kind
        entries.append(entry)
    return entries


def organizations_of(databases: Sequence[Databases], organizations: int | None) -> int:
    """How many organizations: as asked, else one per set of databases (at least one)."""
    count = organizations if organizations is not None else max(len(databases), 1)
    if count < 1:
        raise ValueError(f"run-local needs at least one organization, got {count}")
    if len(databases) not in (0, 1, count):
        raise ValueError(
            f"{len(databases)} sets of databases for {count} organizations: give one set for all of them, "
            "or one per organization"
        )
    return count


class RunLocal:
    """Run one task of an algorithm image on simulated organizations, each with a real node, and
    report the task and its sub-tasks as the server holds them.

    Business rules:
    - each organization's node is a real node built by the container, as ``v6node start``
      builds it (``EmbeddedNode``): Docker runtime, task folders, journal, environment
      variables, database mounts, policies, limits and the algorithm proxy are the
      node's own; only the server is simulated (``LocalFederation``), so statuses, logs
      and results are the ones a node reports to a real server;
    - ``databases[i]`` are organization i+1's; a single set is used by every organization;
    - the task goes to the first organization (``everywhere``: to each one) and asks for
      every database label of the first organization's set, as a researcher of the first
      organization would create it; sub-tasks its algorithm creates run on the
      organizations it names, on their own nodes and databases;
    - ``require_algorithm_pull`` is off unless ``settings`` say otherwise (an image just
      built is local); ``settings`` are node config keys for every node (``policies``,
      ``algorithm_env``, limits, ...);
    - it waits until the task and every sub-task have finished; a node that stops
      meanwhile ends the wait with its error;
    - the nodes stop and remove what they made; the work folder (task folders, journals,
      keys) is removed unless ``keep``.
    """

    def __init__(
        self,
        federation_factory: Callable[[int, bool, str], LocalFederation] = local_federation,
        node_factory: Callable[..., EmbeddedNode] = EmbeddedNode,
    ) -> None:
        self.federation_factory = federation_factory
        self.node_factory = node_factory

    async def __call__(
        self,
        image: str,
        input: Any,
        *,
        databases: Sequence[Databases] = (),
        organizations: int | None = None,
        encrypt: bool = False,
        everywhere: bool = False,
        settings: Mapping[str, Any] | None = None,
        work_dir: str | None = None,
        keep: bool = False,
        on_event: EventCallback | None = None,
    ) -> LocalRunReport:
        count = organizations_of(databases, organizations)
        payload = json.dumps(input).encode()
        folder = Path(tempfile.mkdtemp(prefix="v6node-run-local-", dir=work_dir))
        try:
            federation = self.federation_factory(count, encrypt, str(folder / "keys"))
            report = await self._run(
                federation, image, payload, databases, dict(settings or {}), folder, everywhere, on_event
            )
        finally:
            if not keep:
                shutil.rmtree(folder, ignore_errors=True)
        return attrs.evolve(report, work_folder=str(folder)) if keep else report

    async def _run(
        self,
        federation: LocalFederation,
        image: str,
        payload: bytes,
        databases: Sequence[Databases],
        settings: dict[str, Any],
        folder: Path,
        everywhere: bool,
        on_event: EventCallback | None,
    ) -> LocalRunReport:
        tag = secrets.token_hex(3)
        nodes: list[EmbeddedNode] = []
        reported = _Reported(on_event)
        follows: list[asyncio.Task[None]] = []
        try:
            async with contextlib.AsyncExitStack() as stack:
                for index, org in enumerate(federation.organization_ids):
                    data_dir = folder / f"org-{org}"
                    data_dir.mkdir(mode=0o700)
                    own = databases[index] if len(databases) > 1 else (databases[0] if databases else {})
                    node_keys = {
                        **settings, **federation.node_settings(org), "databases": database_entries(own),
                        "policies": {"require_algorithm_pull": False, **(settings.get("policies") or {})},
                    }
                    config = config_from_dict(node_keys, name=f"run-local-{tag}-org{org}", data_dir=data_dir)
                    node = self.node_factory(config, **federation.node_adapters(org))
                    follows.append(asyncio.create_task(reported.follow(org, node.events())))
                    await stack.enter_async_context(node)
                    nodes.append(node)
                first = databases[0] if databases else {}
                requested = tuple(RequestedDatabase(label) for label in first)
                targets = federation.organization_ids if everywhere else federation.organization_ids[:1]
                task = await federation.create_task(image, payload, targets, requested)
                report = await _first_of(_until_done(federation, task.id, reported), nodes, federation)
                report = attrs.evolve(report, nodes=tuple(node.config.name for node in nodes))
            await asyncio.gather(*follows)  # the streams ended with the nodes
        finally:
            for follow in follows:
                follow.cancel()
        return report


class _Reported:
    """The runs the nodes have reported, from their run events (passed on to ``on_event``)."""

    def __init__(self, on_event: EventCallback | None) -> None:
        self.on_event = on_event
        self.runs: set[int] = set()
        self.changed = asyncio.Condition()

    async def follow(self, org: int, stream: RunEventStream) -> None:
        async for event in stream:
            if self.on_event is not None:
                self.on_event(org, event)
            if event.stage is Stage.FINISHED:
                async with self.changed:
                    self.runs.add(event.run_id)
                    self.changed.notify_all()

    async def until(self, run_ids: set[int]) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: run_ids <= self.runs)


async def _until_done(federation: LocalFederation, task_id: int, reported: _Reported) -> LocalRunReport:
    """The task and its sub-tasks finished on the server, and each node done with the runs it
    started (its FINISHED event comes once its report and journal are through)."""
    await federation.until_job_finished(task_id)
    report = LocalRunReport(
        federation.report(task_id), tuple(federation.report(t.id) for t in federation.subtasks(task_id))
    )
    started = {run.run_id for task in (report.task, *report.subtasks) for run in task.runs if run.started_at}
    await reported.until(started)
    return report


async def _first_of(
    done: Coroutine[Any, Any, LocalRunReport], nodes: list[EmbeddedNode], federation: LocalFederation
) -> LocalRunReport:
    """``done``'s report, unless a node stops first (then its error)."""
    finished = asyncio.create_task(done)
    stopped = [asyncio.create_task(node.wait()) for node in nodes]
    try:
        await asyncio.wait({finished, *stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in stopped:
            waiting.cancel()
    if finished.done():
        return finished.result()
    finished.cancel()
    index, waiting = next((i, w) for i, w in enumerate(stopped) if w.done() and not w.cancelled())
    error = waiting.exception()
    raise NodeError(
        f"the node of organization {federation.organization_ids[index]} stopped before the task finished: "
        f"{error or 'no error'}"
    ) from error


async def run_locally(
    image: str,
    input: Any,
    *,
    databases: Sequence[Databases] = (),
    organizations: int | None = None,
    encrypt: bool = False,
    everywhere: bool = False,
    settings: Mapping[str, Any] | None = None,
    work_dir: str | None = None,
    keep: bool = False,
    on_event: EventCallback | None = None,
) -> LocalRunReport:
    """Run ``image`` with the task ``input`` (JSON: ``{"method", "args", "kwargs"}``) on simulated
    organizations, each with a real node, and return how the task and its sub-tasks ended.

    ``databases``: one mapping of label to file (or folder, or node-config entry) per
    organization, or one for all; ``organizations``: how many (default: one per mapping);
    ``encrypt``: an encrypted collaboration; ``everywhere``: the task goes to every
    organization, not only the first; ``settings``: more node config keys for every node;
    ``work_dir``: where the temporary work folder goes; ``keep``: keep it; ``on_event``:
    called with (organization, ``RunEvent``) as the nodes run. The rules are ``RunLocal``'s.
    """
    return await RunLocal()(
        image, input, databases=databases, organizations=organizations, encrypt=encrypt, everywhere=everywhere,
        settings=settings, work_dir=work_dir, keep=keep, on_event=on_event,
    )
