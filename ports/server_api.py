"""The vantage6 server's REST API as the node uses it."""
from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
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

    async def renew_token(self) -> bool:
        """New tokens: the refresh token is exchanged, and when the server refuses it the node
        logs in again with its API key (``AuthenticationFailed`` only when that is refused
        too). True when it had to log in again. The adapter is the one owner of token
        renewal; it also renews on its own before a call when the token is about to expire."""

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

    async def set_organization_public_key(self, organization_id: int, public_key: str) -> None:
        """PATCH our organization's ``public_key`` (base64 of the PEM text)."""

    async def find_organizations(self, name: str) -> list[Organization]:
        """Organizations whose name is exactly ``name`` (all pages)."""

    async def get_algorithm_store_url(self, store_id: int) -> str:
        """The URL of an algorithm store registered on the server."""

    async def blob_store_enabled(self) -> bool:
        """Whether the server stores run data in its blob store; False when it cannot say."""

    def download_blob(self, blob_id: str) -> AsyncIterator[bytes]:
        """The raw bytes of a blob, streamed in chunks."""

    async def upload_blob(self, chunks: AsyncIterable[bytes]) -> str:
        """Stream bytes into the blob store; returns the blob's id (a UUID)."""
