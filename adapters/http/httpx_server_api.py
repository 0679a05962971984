"""The vantage6 4.x REST API over httpx.AsyncClient: login, token refresh, retries, paging."""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

import httpx

from v6node.domain.errors import (
    AuthenticationFailed,
    RunAlreadyFinished,
    ServerError,
    ServerRejected,
    ServerUnavailable,
)
from v6node.domain.model import (
    Collaboration,
    NodeIdentity,
    Organization,
    RequestedDatabase,
    Run,
    RunUpdate,
    StreamedResult,
    TaskRef,
)
from v6node.domain.status import RunStatus
from v6node.ports.clock import Clock

log = logging.getLogger("v6node.http")

# Refresh this long before the access token expires, so no request goes out with a
# token that dies in flight.
REFRESH_MARGIN_SECONDS = 60.0
_ALREADY_FINISHED = "already finished"
# Blob downloads are handed on in pieces of this size (what the reference streams in).
BLOB_CHUNK_SIZE = 1024 * 1024
_OCTET_STREAM = {"Content-Type": "application/octet-stream"}
# 501 means the server lacks the feature (a blob call without a blob store): asking
# again will not help, so it is refused like a 4xx instead of retried like other 5xx.
_NOT_IMPLEMENTED = 501


class HttpxServerApi:
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
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self._api_base = api_base.rstrip("/")
        self._server_root = server_root.rstrip("/")
        self._api_key = api_key
        self._clock = clock
        self._timeout = timeout
        self._login_timeout = max(timeout, login_timeout)
        self._blob_timeout = httpx.Timeout(timeout, read=max(timeout, blob_timeout), write=max(timeout, blob_timeout))
        self._max_attempts = max_attempts
        self._max_pages = max_pages
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._renew_lock = asyncio.Lock()
        self._access = ""
        self._refresh = ""
        self._refresh_url = ""
        self._expires_at = 0.0
        self._node_id: int | None = None

    # --- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> HttpxServerApi:
        self._http()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, transport=self._transport)
        return self._client

    # --- tokens ------------------------------------------------------------------------------
    def access_token(self) -> str:
        return self._access

    def token_expires_at(self) -> float:
        return self._expires_at if self._access else 0.0

    async def authenticate(self) -> NodeIdentity:
        async with self._renew_lock:
            await self._login()
        if self._node_id is None:
            raise ServerError("the login answer named no node")
        node = await self._request("GET", f"node/{self._node_id}")
        with _parsing("GET", f"node/{self._node_id}"):
            node_name = str(node["name"])
            organization_id = int(node["organization"]["id"])
            collaboration_id = int(node["collaboration"]["id"])
        org = await self.get_organization(organization_id)
        identity = NodeIdentity(
            node_id=self._node_id,
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

    async def refresh_token(self) -> None:
        """Exchange the refresh token only (``AuthenticationFailed`` when it is refused)."""
        async with self._renew_lock:
            await self._refresh_tokens()

    async def renew_token(self) -> bool:
        return await self._renew(self._access)

    async def _login(self) -> None:
        path = "token/node"
        response = await self._send(
            "POST", self._api_url(path), path, json={"api_key": self._api_key}, timeout=self._login_timeout
        )
        if response.status_code == 401:
            raise AuthenticationFailed(
                f"the API key was not recognised by {self._server_root} ({_message(response)})"
            )
        if response.status_code == 400:
            raise AuthenticationFailed(f"{self._server_root} refused the API key: {_message(response)}")
        if response.status_code == 404:
            raise ServerRejected(
                404, f"no login endpoint at {self._api_base} (check the server URL, port and api_path)", "POST", path
            )
        body = _json_body(response, "POST", path)
        self._store_tokens(body, "POST", path)
        log.info("logged in to %s", self._server_root)

    async def _refresh_tokens(self) -> None:
        if not self._refresh:
            raise AuthenticationFailed("no refresh token: authenticate first")
        path = self._refresh_url or "/api/token/refresh"
        url = self._server_root + "/" + path.lstrip("/")
        response = await self._send(
            "POST", url, path, headers={"Authorization": f"Bearer {self._refresh}"}
        )
        # 401 when the refresh token expired, 422 when the server cannot verify it
        # (e.g. it restarted with another secret): either way only the API key helps.
        if 400 <= response.status_code < 500:
            raise AuthenticationFailed(
                f"{self._server_root} refused the refresh token: HTTP {response.status_code} {_message(response)}"
            )
        self._store_tokens(_json_body(response, "POST", path), "POST", path)
        log.info("refreshed the access token")

    def _store_tokens(self, body: Any, method: str, path: str) -> None:
        with _parsing(method, path):
            access = str(body["access_token"])
            refresh = str(body["refresh_token"])
            claims = _jwt_claims(access)
            node_id = int(claims["sub"])
            expires_at = float(claims["exp"])
        self._access, self._refresh, self._expires_at = access, refresh, expires_at
        self._node_id = node_id
        self._refresh_url = body.get("refresh_url") or self._refresh_url

    async def _renew(self, stale: str) -> bool:
        """New tokens unless another request already replaced ``stale``; API key as the fallback.
        True when it logged in again."""
        async with self._renew_lock:
            if self._access != stale:
                return False
            try:
                await self._refresh_tokens()
            except AuthenticationFailed as exc:
                log.warning("token refresh refused (%s); logging in again with the API key", exc)
                await self._login()
                return True
            return False

    def _expires_soon(self) -> bool:
        return self._expires_at - self._clock.now().timestamp() < REFRESH_MARGIN_SECONDS

    # --- the REST calls of spec §6 --------------------------------------------------------------
    async def get_collaboration(self, collaboration_id: int) -> Collaboration:
        path = f"collaboration/{collaboration_id}"
        body = await self._request("GET", path)
        with _parsing("GET", path):
            return Collaboration(id=int(body["id"]), name=str(body["name"]), encrypted=bool(body["encrypted"]))

    async def get_organization(self, organization_id: int) -> Organization:
        path = f"organization/{organization_id}"
        body = await self._request("GET", path)
        with _parsing("GET", path):
            return parse_organization(body)

    async def get_task(self, task_id: int) -> TaskRef:
        path = f"task/{task_id}"
        body = await self._request("GET", path)
        with _parsing("GET", path):
            return parse_task(body)

    async def get_run(self, run_id: int) -> Run:
        path = f"run/{run_id}"
        body = await self._request("GET", path, params={"include": "task"})
        with _parsing("GET", path):
            return parse_run(body)

    async def list_open_runs(self, task_id: int | None = None) -> list[Run]:
        params: dict[str, Any] = {"state": "open", "node_id": self._node_id, "include": "task"}
        if task_id is not None:
            params["task_id"] = task_id
        runs: dict[int, Run] = {}
        items = await self._all_pages("run", params)
        with _parsing("GET", "run"):
            for item in items:
                run = parse_run(item)
                runs.setdefault(run.id, run)
        return list(runs.values())

    async def update_run(self, run_id: int, update: RunUpdate) -> None:
        path = f"run/{run_id}"
        try:
            if isinstance(update.result, StreamedResult):
                body = _StreamedJsonBody(run_update_body(update), "result", update.result)
                headers = {"Content-Type": "application/json", "Content-Length": str(body.length)}
                response = await self._authorized("PATCH", path, content=body, headers=headers)
                _json_body(response, "PATCH", path)
            else:
                await self._request("PATCH", path, json=run_update_body(update))
        except ServerRejected as exc:
            if exc.status == 400 and _ALREADY_FINISHED in exc.message:
                raise RunAlreadyFinished(exc.status, exc.message, exc.method, exc.path) from None
            raise

    async def request_container_token(self, task_id: int, image: str) -> str:
        path = "token/container"
        body = await self._request("POST", path, json={"task_id": task_id, "image": image})
        with _parsing("POST", path):
            token = body["container_token"]
            if not isinstance(token, str) or not token:
                raise ValueError("container_token is empty")
            return token

    async def set_organization_public_key(self, organization_id: int, public_key: str) -> None:
        await self._request("PATCH", f"organization/{organization_id}", json={"public_key": public_key})

    async def find_organizations(self, name: str) -> list[Organization]:
        found: dict[int, Organization] = {}
        items = await self._all_pages("organization", {"name": name})
        with _parsing("GET", "organization"):
            for item in items:
                organization = parse_organization(item)
                if organization.name == name:
                    found.setdefault(organization.id, organization)
        return list(found.values())

    async def get_algorithm_store_url(self, store_id: int) -> str:
        path = f"algorithmstore/{store_id}"
        body = await self._request("GET", path)
        with _parsing("GET", path):
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
            raise ServerUnavailable(f"GET {path} broke off after {received} bytes: {_describe(exc)}") from exc
        finally:
            await response.aclose()
        log.debug("downloaded blob %s (%d bytes)", blob_id, received)

    async def upload_blob(self, chunks: AsyncIterable[bytes]) -> str:
        path = "blobstream"
        body = _UploadBody(chunks)
        response = await self._authorized(
            "POST", path, content=body, headers=_OCTET_STREAM, timeout=self._blob_timeout, replayable=body.replayable
        )
        answer = _json_body(response, "POST", path)
        with _parsing("POST", path):
            blob_id = answer["uuid"]
            uuid.UUID(blob_id)
        log.debug("uploaded blob %s (%d bytes in %d chunks)", blob_id, body.sent_bytes, body.sent_chunks)
        return blob_id

    # --- transport ---------------------------------------------------------------------------------
    def _api_url(self, path: str) -> str:
        return f"{self._api_base}/{path.lstrip('/')}"

    async def _all_pages(self, path: str, params: dict[str, Any]) -> list[Any]:
        """The ``data`` of every page of a list endpoint, following ``links.next``."""
        items: list[Any] = []
        page = 1
        while True:
            body = await self._request("GET", path, params=params if page == 1 else {**params, "page": page})
            with _parsing("GET", path):
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
        if not self._access:
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
        return _json_body(response, method, path)

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
        if self._expires_soon():
            await self._renew(self._access)

        async def send(token: str) -> httpx.Response:
            return await self._send(
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

        token = self._access
        response = await send(token)
        if response.status_code == 401 and "expired" in _message(response).lower():
            await response.aclose()
            await self._renew(token)
            if not replayable():
                raise ServerUnavailable(
                    f"{method} {path}: the access token expired while the body was sent; renewed it, send again"
                )
            log.info("%s %s: access token expired on the server; renewed, repeating once", method, path)
            response = await send(self._access)
        if response.status_code >= 400:
            await response.aclose()
            raise ServerRejected(response.status_code, _message(response), method, path)
        return response

    async def _send(
        self,
        method: str,
        url: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: AsyncIterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | httpx.Timeout | None = None,
        stream: bool = False,
        replayable: Callable[[], bool] = lambda: True,
    ) -> httpx.Response:
        """One request with retries on connection errors, timeouts and 5xx; any other answer back.

        Error answers come back read, also with ``stream``, so their message is at hand.
        Nothing is retried once ``replayable()`` says the request body cannot be sent again.
        """
        client = self._http()
        last_error = ""
        for attempt in range(1, self._max_attempts + 1):
            response: httpx.Response | None = None
            try:
                request = client.build_request(
                    method,
                    url,
                    params=params,
                    json=json,
                    content=content,
                    headers=headers,
                    timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
                )
                response = await client.send(request, stream=stream)
                if response.status_code >= 400:
                    await response.aread()
            except httpx.TransportError as exc:
                if response is not None:
                    await response.aclose()
                last_error = _describe(exc)
            else:
                log.debug("%s %s -> HTTP %d", method, path, response.status_code)
                if response.status_code < 500 or response.status_code == _NOT_IMPLEMENTED:
                    return response
                last_error = f"HTTP {response.status_code}: {_message(response)}"
            if not replayable():
                raise ServerUnavailable(
                    f"{method} {path} failed after the request body was sent, which cannot be sent again: {last_error}"
                )
            if attempt < self._max_attempts:
                delay = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
                # DEBUG: the caller's own retry loop is the one that tells the operator what it waits for.
                log.debug(
                    "%s %s failed (%s), attempt %d/%d; retrying in %.1f s",
                    method, path, last_error, attempt, self._max_attempts, delay,
                )
                await self._clock.sleep(delay)
        raise ServerUnavailable(
            f"{method} {path} failed after {self._max_attempts} attempt(s) against {self._server_root}: {last_error}"
        )


class _StreamedJsonBody:
    """A JSON object whose one string field is streamed: the rest of ``fields``, then
    ``name`` with the text of ``value``, with an exact length known in advance (no chunked
    encoding, which not every server in front of vantage6 takes). Every iteration starts
    over, so the request can be sent again."""

    # The string form of results: base64 and the '$' separators, nothing JSON must escape.
    _TEXT = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=$"

    def __init__(self, fields: dict[str, str], name: str, value: StreamedResult) -> None:
        head = json.dumps({**fields, name: ""})
        self._prefix = head[: -len('""}')].encode("utf-8") + b'"'
        self._suffix = b'"}'
        self._value = value
        self.length = len(self._prefix) + value.length + len(self._suffix)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        yield self._prefix
        sent = 0
        async for chunk in self._value.chunks():
            if chunk.translate(None, self._TEXT):
                raise ValueError("a streamed result holds characters outside base64 and '$'")
            sent += len(chunk)
            if sent > self._value.length:
                raise ValueError(f"a streamed result is longer than the {self._value.length} bytes announced")
            yield chunk
        if sent != self._value.length:
            raise ValueError(f"a streamed result ended after {sent} of the {self._value.length} bytes announced")
        yield self._suffix


class _UploadBody:
    """A streamed request body that may be sent again until its first chunk was taken.

    httpx iterates it once per attempt; every attempt continues the one iterator of
    ``chunks``, so nothing is held in memory and nothing is read twice.
    """

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._chunks = aiter(chunks)
        self._started = False
        self.sent_bytes = 0
        self.sent_chunks = 0

    def replayable(self) -> bool:
        return not self._started

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        while True:
            self._started = True
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                return
            # An empty chunk would end a chunked body early.
            if chunk:
                self.sent_bytes += len(chunk)
                self.sent_chunks += 1
                yield chunk


# --- parsing (pure; exposed for tests) ----------------------------------------------------------------
def parse_organization(body: dict[str, Any]) -> Organization:
    return Organization(id=int(body["id"]), name=str(body["name"]), public_key=body.get("public_key") or "")


def parse_run(body: dict[str, Any]) -> Run:
    """A run as listed by ``GET run?include=task`` (spec §6.3)."""
    return Run(
        id=int(body["id"]),
        task=parse_task(body["task"]),
        input=body.get("input") or "",
        status=RunStatus(body.get("status") or RunStatus.PENDING),
        organization_id=_ref_id(body.get("organization")),
        blob_storage_used=bool(body.get("blob_storage_used") or False),
        started_at=parse_datetime(body.get("started_at")),
        finished_at=parse_datetime(body.get("finished_at")),
        assigned_at=parse_datetime(body.get("assigned_at")),
    )


def parse_task(body: dict[str, Any]) -> TaskRef:
    return TaskRef(
        id=int(body["id"]),
        image=str(body["image"]),
        collaboration_id=int(_ref_id(body["collaboration"])),  # type: ignore[arg-type]
        name=body.get("name") or "",
        job_id=body.get("job_id"),
        parent_id=_ref_id(body.get("parent")),
        init_org_id=_ref_id(body.get("init_org")),
        init_user_id=_ref_id(body.get("init_user")),
        store_id=_ref_id(body.get("algorithm_store")),
        databases=tuple(_parse_database(db) for db in body.get("databases") or ()),
        status=body.get("status"),
    )


def _parse_database(body: dict[str, Any]) -> RequestedDatabase:
    raw = body.get("parameters")
    parameters: Any = raw
    if isinstance(raw, str):
        try:
            parameters = json.loads(raw)
        except ValueError:
            log.warning("database %r: parameters are not JSON; using none", body.get("label"))
            parameters = {}
    if not isinstance(parameters, dict):
        parameters = {}
    return RequestedDatabase(label=str(body.get("label") or ""), parameters=parameters)


def _ref_id(ref: Any) -> int | None:
    """The id of a HATEOAS reference ``{"id", "link", "methods"}`` (or of a bare id)."""
    if ref is None:
        return None
    if isinstance(ref, dict):
        ref = ref.get("id")
    return None if ref is None else int(ref)


def parse_datetime(value: str | None) -> datetime | None:
    """The server sends naive ISO datetimes in UTC."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def format_datetime(value: datetime) -> str:
    """The one format the server parses: microseconds always, ``+00:00`` (anything else is HTTP 500)."""
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def run_update_body(update: RunUpdate) -> dict[str, str]:
    """Exactly the fields the update carries (the server treats absent ones per spec §6.4)."""
    body: dict[str, str] = {}
    if update.status is not None:
        body["status"] = update.status.value
    if update.started_at is not None:
        body["started_at"] = format_datetime(update.started_at)
    if update.finished_at is not None:
        body["finished_at"] = format_datetime(update.finished_at)
    if isinstance(update.result, str):
        body["result"] = update.result
    if update.log is not None:
        body["log"] = update.log
    return body


# --- helpers -------------------------------------------------------------------------------------------
def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, not verified: the node only reads its own id and the expiry."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error) as exc:
        raise ValueError("the access token is not a JWT") from exc
    if not isinstance(claims, dict):
        raise ValueError("the access token's payload is not a JSON object")
    return claims


def _message(response: httpx.Response) -> str:
    """The server's ``msg`` (plus its validation ``errors``), or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    if not isinstance(body, dict):
        return str(body)[:200]
    message = str(body.get("msg") or response.reason_phrase)
    if body.get("errors"):
        message = f"{message}: {json.dumps(body['errors'])}"
    return message


def _json_body(response: httpx.Response, method: str, path: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ServerUnavailable(
            f"{method} {path} -> HTTP {response.status_code} with a body that is not JSON: {response.text[:100]!r}"
        ) from None


@contextmanager
def _parsing(method: str, path: str) -> Iterator[None]:
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ServerError(f"{method} {path}: unexpected answer from the server ({exc!r})") from exc


__all__ = [
    "BLOB_CHUNK_SIZE",
    "HttpxServerApi",
    "format_datetime",
    "parse_datetime",
    "parse_organization",
    "parse_run",
    "parse_task",
    "run_update_body",
]
