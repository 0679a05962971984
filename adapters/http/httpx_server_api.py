"""The vantage6 4.x REST API over httpx.AsyncClient: login, token refresh, retries, paging."""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Iterator
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
    TaskRef,
)
from v6node.domain.status import RunStatus
from v6node.ports.clock import Clock

log = logging.getLogger("v6node.http")

# Refresh this long before the access token expires, so no request goes out with a
# token that dies in flight.
REFRESH_MARGIN_SECONDS = 60.0
_ALREADY_FINISHED = "already finished"


class HttpxServerApi:
    """``ServerApi`` against a real vantage6 4.x server.

    Choices beyond the port's contract:

    * Connection errors, timeouts and 5xx are retried here, ``max_attempts`` in all, with
      exponential backoff (``backoff_base * 2**n``, capped at ``backoff_max``) on the
      clock; then ``ServerUnavailable`` names the call and the last error.
    * 4xx are never retried. The one exception is a 401 saying the token has expired:
      the tokens are renewed once and the request repeated once.
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
      (new runs shift the pages while we read) is returned once.
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
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self._api_base = api_base.rstrip("/")
        self._server_root = server_root.rstrip("/")
        self._api_key = api_key
        self._clock = clock
        self._timeout = timeout
        self._login_timeout = max(timeout, login_timeout)
        self._max_attempts = max_attempts
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
        async with self._renew_lock:
            await self._refresh_tokens()

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

    async def _renew(self, stale: str) -> None:
        """New tokens unless another request already replaced ``stale``; API key as the fallback."""
        async with self._renew_lock:
            if self._access != stale:
                return
            try:
                await self._refresh_tokens()
            except AuthenticationFailed as exc:
                log.warning("token refresh refused (%s); logging in again with the API key", exc)
                await self._login()

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
            return Organization(id=int(body["id"]), name=str(body["name"]), public_key=body.get("public_key") or "")

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
        page = 1
        while True:
            body = await self._request("GET", "run", params=params if page == 1 else {**params, "page": page})
            with _parsing("GET", "run"):
                data = body["data"]
                for item in data:
                    run = parse_run(item)
                    runs.setdefault(run.id, run)
                has_next = bool((body.get("links") or {}).get("next"))
            if not has_next or not data:
                break
            page += 1
        log.debug("%d open runs on %d page(s)", len(runs), page)
        return list(runs.values())

    async def update_run(self, run_id: int, update: RunUpdate) -> None:
        path = f"run/{run_id}"
        try:
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

    # --- transport ---------------------------------------------------------------------------------
    def _api_url(self, path: str) -> str:
        return f"{self._api_base}/{path.lstrip('/')}"

    async def _request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None
    ) -> Any:
        """An authenticated call: fresh token first, one renewal on "token has expired", JSON back."""
        if not self._access:
            raise ServerRejected(401, "not logged in: call authenticate() first", method, path)
        if self._expires_soon():
            await self._renew(self._access)
        token = self._access
        response = await self._send(
            method, self._api_url(path), path, params=params, json=json, headers=_bearer(token)
        )
        if response.status_code == 401 and "expired" in _message(response).lower():
            log.info("%s %s: access token expired on the server; renewing and repeating once", method, path)
            await self._renew(token)
            response = await self._send(
                method, self._api_url(path), path, params=params, json=json, headers=_bearer(self._access)
            )
        if response.status_code >= 400:
            raise ServerRejected(response.status_code, _message(response), method, path)
        return _json_body(response, method, path)

    async def _send(
        self,
        method: str,
        url: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One request with retries on connection errors, timeouts and 5xx; any answer below 500 back."""
        last_error = ""
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = await self._http().request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=headers,
                    timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
                )
            except httpx.TransportError as exc:
                last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                log.debug("%s %s -> HTTP %d", method, path, response.status_code)
                if response.status_code < 500:
                    return response
                last_error = f"HTTP {response.status_code}: {_message(response)}"
            if attempt < self._max_attempts:
                delay = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
                log.warning(
                    "%s %s failed (%s), attempt %d/%d; retrying in %.1f s",
                    method, path, last_error, attempt, self._max_attempts, delay,
                )
                await self._clock.sleep(delay)
        raise ServerUnavailable(
            f"{method} {path} failed after {self._max_attempts} attempt(s) against {self._server_root}: {last_error}"
        )


# --- parsing (pure; exposed for tests) ----------------------------------------------------------------
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
    if update.result is not None:
        body["result"] = update.result
    if update.log is not None:
        body["log"] = update.log
    return body


# --- helpers -------------------------------------------------------------------------------------------
def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


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


__all__ = ["HttpxServerApi", "format_datetime", "parse_datetime", "parse_run", "parse_task", "run_update_body"]
