"""The vantage6 server's REST API as the node uses it."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from v6node.domain.model import Collaboration, NodeIdentity, Organization, Run, RunUpdate, TaskRef


@runtime_checkable
class ServerApi(Protocol):
    """REST calls of spec §6.

    Errors: ``ServerUnavailable`` (retryable: connection errors, timeouts, 5xx after the
    adapter's own retries), ``AuthenticationFailed`` (wrong API key: fatal),
    ``ServerRejected`` (other 4xx; ``RunAlreadyFinished`` for a PATCH of a finished run).
    Reads are idempotent; ``update_run`` is idempotent for the same body.
    Cancellation abandons the request in flight.
    """

    async def authenticate(self) -> NodeIdentity:
        """Log in with the API key and discover who we are (node, organization, collaboration)."""

    async def refresh_token(self) -> None:
        """Exchange the refresh token for new tokens; ``AuthenticationFailed`` when it is no longer valid."""

    def access_token(self) -> str:
        """The current access token ("" before ``authenticate``)."""

    def token_expires_at(self) -> float:
        """UNIX time at which the current access token expires (0 when unknown)."""

    async def get_collaboration(self, collaboration_id: int) -> Collaboration: ...

    async def get_organization(self, organization_id: int) -> Organization: ...

    async def get_task(self, task_id: int) -> TaskRef: ...

    async def get_run(self, run_id: int) -> Run: ...

    async def list_open_runs(self, task_id: int | None = None) -> list[Run]:
        """Every open (unfinished) run of this node, all pages; for one task when ``task_id`` is given."""

    async def update_run(self, run_id: int, update: RunUpdate) -> None:
        """PATCH the run with exactly the fields ``update`` carries."""

    async def request_container_token(self, task_id: int, image: str) -> str:
        """A container token for an algorithm of ``task_id``; ``image`` must equal the task's image."""
