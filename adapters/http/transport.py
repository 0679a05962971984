"""One httpx client with the node's retry rules for the server's REST API."""
from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, Callable
from typing import Any

import httpx

from v6node.adapters.http.payloads import message
from v6node.domain.backoff import Backoff
from v6node.domain.errors import ServerUnavailable
from v6node.ports.clock import Clock

log = logging.getLogger("v6node.http")

# 501 means the server lacks the feature (a blob call without a blob store): asking
# again will not help, so it is refused like a 4xx instead of retried like other 5xx.
_NOT_IMPLEMENTED = 501


def describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class RetryingClient:
    """Sends requests with retries: connection errors, timeouts and 5xx (not 501) are tried
    ``max_attempts`` times in all, waiting ``backoff`` on the clock between them, then
    ``ServerUnavailable`` names the call and the last error. Its retries log at DEBUG only:
    the caller's own retry loop tells the operator what the node waits for."""

    def __init__(
        self,
        server_root: str,
        clock: Clock,
        *,
        timeout: float,
        max_attempts: int,
        backoff: Backoff,
        transport: httpx.AsyncBaseTransport | None = None,
        on_call: Callable[[float, bool], None] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self._server_root = server_root
        self._clock = clock
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._transport = transport
        self._on_call = on_call  # (seconds, failed) of each call, retries included: metrics
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, transport=self._transport)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def send(self, method: str, url: str, path: str, **kwargs: Any) -> httpx.Response:
        """``attempts``, timed for ``on_call``: how long a call took, and whether it got no answer."""
        started = time.monotonic()
        failed = True
        try:
            response = await self.attempts(method, url, path, **kwargs)
            failed = False
            return response
        finally:
            if self._on_call is not None:
                self._on_call(time.monotonic() - started, failed)

    async def attempts(
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
                last_error = describe(exc)
            else:
                log.debug("%s %s -> HTTP %d", method, path, response.status_code)
                if response.status_code < 500 or response.status_code == _NOT_IMPLEMENTED:
                    return response
                last_error = f"HTTP {response.status_code}: {message(response)}"
            if not replayable():
                raise ServerUnavailable(
                    f"{method} {path} failed after the request body was sent, which cannot be sent again: {last_error}"
                )
            if attempt < self._max_attempts:
                delay = self._backoff.delay(attempt - 1)
                # DEBUG: the caller's own retry loop is the one that tells the operator what it waits for.
                log.debug(
                    "%s %s failed (%s), attempt %d/%d; retrying in %.1f s",
                    method, path, last_error, attempt, self._max_attempts, delay,
                )
                await self._clock.sleep(delay)
        raise ServerUnavailable(
            f"{method} {path} failed after {self._max_attempts} attempt(s) against {self._server_root}: {last_error}"
        )
