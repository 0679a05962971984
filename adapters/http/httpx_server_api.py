"""The vantage6 4.x REST API over httpx.AsyncClient: login, token refresh, retries, paging."""
from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from types import TracebackType
from typing import Any

import httpx

from v6node.adapters.http.bodies import StreamedJsonBody, UploadBody
from v6node.adapters.http.tokens import NodeTokens
from v6node.adapters.http.transport import RetryingClient, describe
from v6node.adapters.http.payloads import (
    json_body,
    message,
    parse_organization,
    parse_run,
    parse_task,
    parsing,
    run_update_body,
)
from v6node.domain.backoff import Backoff
from v6node.domain.errors import (
    RunAlreadyFinished,
    ServerError,
    ServerRejected,
    ServerUnavailable,
)
from v6node.domain.model import (
    Collaboration,
    NodeIdentity,
    Organization,
    Run,
    RunUpdate,
    StreamedResult,
    TaskRef,
)
from v6node.ports.clock import Clock
from v6node.ports.server_api import ServerApi

log = logging.getLogger("v6node.http")

_ALREADY_FINISHED = "already finished"
# Blob downloads are handed on in pieces of this size (what the reference streams in).
BLOB_CHUNK_SIZE = 1024 * 1024
_OCTET_STREAM = {"Content-Type": "application/octet-stream"}


class HttpxServerApi(ServerApi):
    """``ServerApi`` against a real vantage6 4.x server.

    Choices beyond the port's contract:

    * Connection errors, timeouts and 5xx are retried here, ``max_attempts`` in all, with
      exponential backoff (``backoff_base * 2**n``, capped at ``backoff_max``) on the
      clock; then ``ServerUnavailable`` names the call and the last error.
    * 4xx and 501 (the server lacks the feature) are never retried; they raise
      ``ServerRejected``. The one exception is a 401 saying the token has expired: the
      tokens are renewed once and the request repeated once.
    * Renewing (before a request whose token expires within 60 s, or after that 401)
      uses the refresh token and, when the server refuses it, logs in again with the API
      key. Renewals are serialized; a request that waited for another's renewal uses the
      new token instead of renewing again.
    * The login gets ``login_timeout`` instead of ``timeout``: the server bcrypt-checks
      the key against every node it knows (~0.25 s each), so on a server with a few
      hundred nodes a correct login takes minutes, not seconds.
    * A 2xx body that is not JSON raises ``ServerUnavailable`` at once (no retry here):
      it is what a proxy or maintenance page in front of the server answers, and the
      caller's own backoff is the right place to wait for that to pass.
    * A JSON answer without the fields the node needs raises ``ServerError`` (not
      retryable): the server speaks a different API version.
    * ``list_open_runs`` follows ``links.next``; a run that shows up on two pages
      (new runs shift the pages while we read) is returned once. Past ``max_pages``
      pages a list raises ``ServerError``: a server that never stops announcing another
      page must not grow the node's memory without bound.
    * ``find_organizations`` keeps only exact (case-sensitive) name matches: the server
      filters with SQL ``LIKE``, which ignores case and treats ``_`` and ``%`` as
      wildcards. A node only sees the organizations of its own collaborations.
    * ``blob_store_enabled`` is False for any 4xx (a server older than 4.13 answers 404)
      and for 501; a 5xx or a connection error is ``ServerUnavailable`` like everywhere
      else, because guessing "disabled" would make the node store a result where
      nobody looks for it.
    * Blob calls get ``blob_timeout`` for reading (and, for uploads, writing) instead of
      ``timeout``. A download is retried like any call until its body starts; a break
      after that is ``ServerUnavailable`` (bytes were handed on already: download again).
      An upload can only be sent again while nothing of the body was taken from
      ``chunks``: a connection error before that is retried, anything after it
      (connection lost, 5xx, an expired token) is ``ServerUnavailable`` at once, after
      renewing the token when that was the reason.
    """

    def __init__(
        self,
        api_base: str,
        server_root: str,
        api_key: str,
        clock: Clock,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        login_timeout: float = 300.0,
        blob_timeout: float = 300.0,
        max_pages: int = 10_000,
        on_call: Callable[[float, bool], None] | None = None,
    ) -> None:
        self._api_base = api_base.rstrip("/")
        self._server_root = server_root.rstrip("/")
        self._clock = clock
        self._login_timeout = max(timeout, login_timeout)
        self._blob_timeout = httpx.Timeout(timeout, read=max(timeout, blob_timeout), write=max(timeout, blob_timeout))
        self._max_pages = max_pages
        self._sender = RetryingClient(
            self._server_root, clock, timeout=timeout, max_attempts=max_attempts,
            backoff=Backoff(first=backoff_base, maximum=backoff_max), transport=transport, on_call=on_call,
        )
        self._tokens = NodeTokens(self._sender, self._api_base, self._server_root, api_key, clock, self._login_timeout)

    # --- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> HttpxServerApi:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._sender.aclose()

    # --- tokens ------------------------------------------------------------------------------
    def access_token(self) -> str:
        return self._tokens.access

    def token_expires_at(self) -> float:
        return self._tokens.expires_at if self._tokens.access else 0.0

    async def authenticate(self) -> NodeIdentity:
        await self._tokens.log_in()
        node_id = self._tokens.node_id
        if node_id is None:
            raise ServerError("the login answer named no node")
        node = await self._request("GET", f"node/{node_id}")
        with parsing("GET", f"node/{node_id}"):
            node_name = str(node["name"])
            organization_id = int(node["organization"]["id"])
            collaboration_id = int(node["collaboration"]["id"])
        org = await self.get_organization(organization_id)
        identity = NodeIdentity(
            node_id=node_id,
            node_name=node_name,
            organization_id=organization_id,
            organization_name=org.name,
            collaboration_id=collaboration_id,
        )
        log.info(
            "authenticated as node %s (id=%s) of organization %s (id=%s), collaboration id=%s",
            identity.node_name,
            identity.node_id,
            identity.organization_name,
            identity.organization_id,
            identity.collaboration_id,
        )
        return identity

    async def renew_token(self) -> bool:
        return await self._tokens.renew(self._tokens.access)

    # --- the REST calls of spec §6 --------------------------------------------------------------
    async def get_collaboration(self, collaboration_id: int) -> Collaboration:
        path = f"collaboration/{collaboration_id}"
        body = await self._request("GET", path)
        with parsing("GET", path):
            return Collaboration(id=int(body["id"]), name=str(body["name"]), encrypted=bool(body["encrypted"]))

    async def get_organization(self, organization_id: int) -> Organization:
        path = f"organization/{organization_id}"
        body = await self._request("GET", path)
        with parsing("GET", path):
            return parse_organization(body)

    async def get_task(self, task_id: int) -> TaskRef:
        path = f"task/{task_id}"
        body = await self._request("GET", path)
        with parsing("GET", path):
            return parse_task(body)

    async def get_run(self, run_id: int) -> Run:
        path = f"run/{run_id}"
        body = await self._request("GET", path, params={"include": "task"})
        with parsing("GET", path):
            return parse_run(body)

    async def list_open_runs(self, task_id: int | None = None) -> list[Run]:
        params: dict[str, Any] = {"state": "open", "node_id": self._tokens.node_id, "include": "task"}
        if task_id is not None:
            params["task_id"] = task_id
        runs: dict[int, Run] = {}
        items = await self._all_pages("run", params)
        with parsing("GET", "run"):
            for item in items:
                run = parse_run(item)
                runs.setdefault(run.id, run)
        return list(runs.values())

    async def update_run(self, run_id: int, update: RunUpdate) -> None:
        path = f"run/{run_id}"
        try:
            if isinstance(update.result, StreamedResult):
                body = StreamedJsonBody(run_update_body(update), "result", update.result)
                headers = {"Content-Type": "application/json", "Content-Length": str(body.length)}
                response = await self._authorized("PATCH", path, content=body, headers=headers)
                json_body(response, "PATCH", path)
            else:
                await self._request("PATCH", path, json=run_update_body(update))
        except ServerRejected as exc:
            if exc.status == 400 and _ALREADY_FINISHED in exc.message:
                raise RunAlreadyFinished(exc.status, exc.message, exc.method, exc.path) from None
            raise

    async def request_container_token(self, task_id: int, image: str) -> str:
        path = "token/container"
        body = await self._request("POST", path, json={"task_id": task_id, "image": image})
        with parsing("POST", path):
            token = body["container_token"]
            if not isinstance(token, str) or not token:
                raise ValueError("container_token is empty")
            return token

    async def set_organization_public_key(self, organization_id: int, public_key: str) -> None:
        await self._request("PATCH", f"organization/{organization_id}", json={"public_key": public_key})

    async def find_organizations(self, name: str) -> list[Organization]:
        found: dict[int, Organization] = {}
        items = await self._all_pages("organization", {"name": name})
        with parsing("GET", "organization"):
            for item in items:
                organization = parse_organization(item)
                if organization.name == name:
                    found.setdefault(organization.id, organization)
        return list(found.values())

    async def get_algorithm_store_url(self, store_id: int) -> str:
        path = f"algorithmstore/{store_id}"
        body = await self._request("GET", path)
        with parsing("GET", path):
            url = body["url"]
            if not isinstance(url, str) or not url:
                raise ValueError("url is empty")
            return url

    async def blob_store_enabled(self) -> bool:
        path = "blobstream/status"
        self._require_login("GET", path)
        try:
            body = await self._request("GET", path, headers=_OCTET_STREAM)
        except ServerRejected as exc:
            log.info("GET %s -> HTTP %d (%s): taking the blob store as disabled", path, exc.status, exc.message)
            return False
        return isinstance(body, dict) and body.get("blob_store_enabled") is True

    async def download_blob(self, blob_id: str) -> AsyncIterator[bytes]:
        path = f"blobstream/{blob_id}"
        response = await self._authorized("GET", path, headers=_OCTET_STREAM, timeout=self._blob_timeout, stream=True)
        received = 0
        try:
            async for chunk in response.aiter_bytes(BLOB_CHUNK_SIZE):
                received += len(chunk)
                yield chunk
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"GET {path} broke off after {received} bytes: {describe(exc)}") from exc
        finally:
            await response.aclose()
        log.debug("downloaded blob %s (%d bytes)", blob_id, received)

    async def upload_blob(self, chunks: AsyncIterable[bytes]) -> str:
        path = "blobstream"
        body = UploadBody(chunks)
        response = await self._authorized(
            "POST", path, content=body, headers=_OCTET_STREAM, timeout=self._blob_timeout, replayable=body.replayable
        )
        answer = json_body(response, "POST", path)
        with parsing("POST", path):
            blob_id = answer["uuid"]
            uuid.UUID(blob_id)
        log.debug("uploaded blob %s (%d bytes in %d chunks)", blob_id, body.sent_bytes, body.sent_chunks)
        return blob_id

    async def call(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None) -> Any:
        """Any other authenticated call with a JSON answer, by the same rules (for the VPN endpoints)."""
        return await self._request(method, path, params=params, json=json)

    # --- transport ---------------------------------------------------------------------------------
    def _api_url(self, path: str) -> str:
        return f"{self._api_base}/{path.lstrip('/')}"

    async def _all_pages(self, path: str, params: dict[str, Any]) -> list[Any]:
        """The ``data`` of every page of a list endpoint, following ``links.next``."""
        items: list[Any] = []
        page = 1
        while True:
            body = await self._request("GET", path, params=params if page == 1 else {**params, "page": page})
            with parsing("GET", path):
                data = list(body["data"])
                has_next = bool((body.get("links") or {}).get("next"))
            items.extend(data)
            if not has_next or not data:
                break
            if page >= self._max_pages:
                raise ServerError(
                    f"GET {path}: the server announced more than {self._max_pages} pages; not reading further "
                    "(a misbehaving server, or far more open runs than a node can hold)"
                )
            page += 1
        log.debug("GET %s: %d item(s) on %d page(s)", path, len(items), page)
        return items

    def _require_login(self, method: str, path: str) -> None:
        if not self._tokens.access:
            raise ServerRejected(401, "not logged in: call authenticate() first", method, path)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """An authenticated call with a JSON answer."""
        response = await self._authorized(method, path, params=params, json=json, headers=headers)
        return json_body(response, method, path)

    async def _authorized(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: AsyncIterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        stream: bool = False,
        replayable: Callable[[], bool] = lambda: True,
    ) -> httpx.Response:
        """An authenticated call: fresh token first, one renewal on "token has expired", 4xx raised.

        A ``stream`` response comes back with its body unread; the caller closes it.
        """
        self._require_login(method, path)
        if self._tokens.expires_soon():
            await self._tokens.renew(self._tokens.access)

        async def send(token: str) -> httpx.Response:
            return await self._sender.send(
                method,
                self._api_url(path),
                path,
                params=params,
                json=json,
                content=content,
                headers={**(headers or {}), **_bearer(token)},
                timeout=timeout,
                stream=stream,
                replayable=replayable,
            )

        token = self._tokens.access
        response = await send(token)
        if response.status_code == 401 and "expired" in message(response).lower():
            await response.aclose()
            await self._tokens.renew(token)
            if not replayable():
                raise ServerUnavailable(
                    f"{method} {path}: the access token expired while the body was sent; renewed it, send again"
                )
            log.info("%s %s: access token expired on the server; renewed, repeating once", method, path)
            response = await send(self._tokens.access)
        if response.status_code >= 400:
            await response.aclose()
            raise ServerRejected(response.status_code, message(response), method, path)
        return response


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
