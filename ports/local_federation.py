"""A vantage6 server stand-in for local runs: one collaboration, its organizations, a node for each."""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from v6node.domain.local_run import TaskReport
from v6node.domain.model import RequestedDatabase, TaskRef


@runtime_checkable
class LocalFederation(Protocol):
    """A server in memory that several nodes of the same process share, one per organization.

    Each node is given the server as its ``ServerApi``, its websocket as its ``EventStream``
    and, for its algorithm proxy, a transport that serves the REST endpoints algorithms
    call (organizations, tasks and sub-tasks, runs, results) from the same state. The
    server is the one party played here: the nodes run their own code, and this side
    enforces what the real server enforces (container tokens, who may see and create what,
    PATCH and fail-fast semantics). Tasks are created as a researcher of the first
    organization would create them with the vantage6 client.
    """

    organization_ids: tuple[int, ...]
    encrypted: bool

    def node_settings(self, organization_id: int) -> dict[str, Any]:
        """The node config keys that point a node at this server as that organization
        (``api_key``, ``server_url``, and in an encrypted collaboration ``encryption``)."""

    def node_adapters(self, organization_id: int) -> dict[str, object]:
        """The adapters that replace a node's own, by the names of the container's providers."""

    async def create_task(
        self, image: str, input: bytes, organization_ids: tuple[int, ...], databases: tuple[RequestedDatabase, ...]
    ) -> TaskRef:
        """Create a task with ``input`` (JSON text) for each organization, encrypted for each
        when the collaboration is, and tell every node about it."""

    async def until_job_finished(self, task_id: int) -> None:
        """Return once every run of the task and of all its sub-tasks has finished (no polling)."""

    def report(self, task_id: int) -> TaskReport:
        """The task and its runs as the server holds them, results read as its initiator reads them."""

    def subtasks(self, task_id: int) -> tuple[TaskRef, ...]:
        """Every task created under ``task_id`` (children, theirs, ...), by id."""
