"""The node's tokens: log in with the API key, refresh, and renew with the key as the fallback."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from v6node.adapters.http.payloads import json_body, jwt_claims, message, parsing
from v6node.adapters.http.transport import RetryingClient
from v6node.domain.errors import AuthenticationFailed, ServerRejected
from v6node.ports.clock import Clock

log = logging.getLogger("v6node.http")

# Renew this long before the access token expires, so no request goes out with a
# token that dies in flight.
REFRESH_MARGIN_SECONDS = 60.0


class NodeTokens:
    """The access and refresh tokens of one node; renewals are serialized, and a caller that
    waited for another's renewal takes the new token instead of renewing again."""

    def __init__(
        self, sender: RetryingClient, api_base: str, server_root: str, api_key: str, clock: Clock, login_timeout: float
    ) -> None:
        self._sender = sender
        self._api_base = api_base
        self._server_root = server_root
        self._api_key = api_key
        self._clock = clock
        self._login_timeout = login_timeout
        self._lock = asyncio.Lock()
        self.access = ""
        self._refresh = ""
        self._refresh_url = ""
        self.expires_at = 0.0
        self.node_id: int | None = None

    def expires_soon(self) -> bool:
        return self.expires_at - self._clock.now().timestamp() < REFRESH_MARGIN_SECONDS

    async def log_in(self) -> None:
        async with self._lock:
            await self._login()

    async def refresh(self) -> None:
        """Exchange the refresh token only (``AuthenticationFailed`` when it is refused)."""
        async with self._lock:
            await self._refresh_tokens()

    async def _login(self) -> None:
        path = "token/node"
        response = await self._sender.send(
            "POST", f"{self._api_base}/{path}", path, json={"api_key": self._api_key}, timeout=self._login_timeout
        )
        if response.status_code == 401:
            raise AuthenticationFailed(
                f"the API key was not recognised by {self._server_root} ({message(response)})"
            )
        if response.status_code == 400:
            raise AuthenticationFailed(f"{self._server_root} refused the API key: {message(response)}")
        if response.status_code == 404:
            raise ServerRejected(
                404, f"no login endpoint at {self._api_base} (check the server URL, port and api_path)", "POST", path
            )
        body = json_body(response, "POST", path)
        self._store_tokens(body, "POST", path)
        log.info("logged in to %s", self._server_root)

    async def _refresh_tokens(self) -> None:
        if not self._refresh:
            raise AuthenticationFailed("no refresh token: authenticate first")
        path = self._refresh_url or "/api/token/refresh"
        url = self._server_root + "/" + path.lstrip("/")
        response = await self._sender.send(
            "POST", url, path, headers={"Authorization": f"Bearer {self._refresh}"}
        )
        # 401 when the refresh token expired, 422 when the server cannot verify it
        # (e.g. it restarted with another secret): either way only the API key helps.
        if 400 <= response.status_code < 500:
            raise AuthenticationFailed(
                f"{self._server_root} refused the refresh token: HTTP {response.status_code} {message(response)}"
            )
        self._store_tokens(json_body(response, "POST", path), "POST", path)
        log.info("refreshed the access token")

    def _store_tokens(self, body: Any, method: str, path: str) -> None:
        with parsing(method, path):
            access = str(body["access_token"])
            refresh = str(body["refresh_token"])
            claims = jwt_claims(access)
            node_id = int(claims["sub"])
            expires_at = float(claims["exp"])
        self.access, self._refresh, self.expires_at = access, refresh, expires_at
        self.node_id = node_id
        self._refresh_url = body.get("refresh_url") or self._refresh_url

    async def renew(self, stale: str) -> bool:
        """New tokens unless another request already replaced ``stale``; API key as the fallback.
        True when it logged in again."""
        async with self._lock:
            if self.access != stale:
                return False
            try:
                await self._refresh_tokens()
            except AuthenticationFailed as exc:
                log.warning("token refresh refused (%s); logging in again with the API key", exc)
                await self._login()
                return True
            return False
