"""How the algorithm proxy reaches the server: httpx with the caller's token, retries, answers read within a cap."""
from __future__ import annotations

import logging
from typing import Any

import httpx

from v6node.adapters.proxy.responses import Answer, read_answer
from v6node.adapters.proxy.streams import OneShotBody
from v6node.domain.backoff import Backoff
from v6node.domain.errors import NodeError
from v6node.ports.clock import Clock

log = logging.getLogger("v6node.proxy")

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Server answers worth asking again; others (501 Not Implemented, ...) are final.
_TRANSIENT = frozenset({500, 502, 503, 504})
# The request certainly never reached the server: safe to repeat whatever the method.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class Unavailable(Exception):
    """The server could not be reached, or kept failing, within the attempts allowed."""


class ServerForwarder:
    """Sends calls on to ``api_base`` with one shared ``httpx.AsyncClient`` (between ``open`` and ``aclose``).

    Retry rules: see ``StarletteProxyServer``. Only ``Authorization`` (the caller's own
    token) and the body's ``Content-Type`` go to the server.
    """

    def __init__(
        self,
        api_base: str,
        *,
        timeout: float,
        max_attempts: int,
        backoff_base: float,
        backoff_max: float,
        clock: Clock,
        transport: httpx.AsyncBaseTransport | None,
        max_answer_size: int,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if max_answer_size < 1:
            raise ValueError(f"max_answer_size must be positive, got {max_answer_size}")
        self.api_base = api_base.rstrip("/")
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff = Backoff(first=backoff_base, maximum=backoff_max)
        self._clock = clock
        self._transport = transport
        self._max_answer_size = max_answer_size
        self._http: httpx.AsyncClient | None = None

    def open(self) -> None:
        self._http = httpx.AsyncClient(timeout=self._timeout, transport=self._transport)

    async def aclose(self) -> None:
        if self._http is not None:
            client, self._http = self._http, None
            await client.aclose()

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            raise NodeError("the algorithm proxy is not running")
        return self._http

    async def send(
        self,
        method: str,
        path: str,
        token: str,
        *,
        query: bytes = b"",
        content: bytes | OneShotBody | None = None,
        content_type: str | None = None,
    ) -> httpx.Response:
        """The server's response with its body unread (the caller closes it), after retries.

        Raises ``Unavailable`` when the attempts run out or retrying is not safe.
        """
        url = httpx.URL(f"{self.api_base}/{path}")
        if query:
            url = url.copy_with(query=query)
        headers = {"Authorization": f"Bearer {token}"}
        if content_type:
            headers["Content-Type"] = content_type
        idempotent = method in _IDEMPOTENT
        what = f"{method} {path}"
        for attempt in range(1, self._max_attempts + 1):
            request = self._client().build_request(method, url, headers=headers, content=content)
            try:
                response = await self._client().send(request, stream=True)
            except httpx.TransportError as exc:
                replayable = not (isinstance(content, OneShotBody) and content.started)
                if not (replayable and (idempotent or isinstance(exc, _NOT_SENT))):
                    raise Unavailable(f"{what} failed: {type(exc).__name__} ({exc})") from exc
                failure = f"{type(exc).__name__} ({exc})"
            else:
                if response.status_code not in _TRANSIENT or not idempotent:
                    return response
                await response.aclose()
                failure = f"HTTP {response.status_code}"
            if attempt == self._max_attempts:
                break
            delay = self._backoff.delay(attempt - 1)
            log.warning("%s: %s; attempt %d of %d in %.1f s", what, failure, attempt + 1, self._max_attempts, delay)
            await self._clock.sleep(delay)
        raise Unavailable(f"The server did not answer {what}: {failure} after {self._max_attempts} attempts")

    async def call(self, method: str, path: str, token: str, **kwargs: Any) -> Answer:
        """``send`` with the body read (``AnswerTooLarge`` past ``max_answer_size``) and the response closed."""
        response = await self.send(method, path, token, **kwargs)
        return await read_answer(response, self._max_answer_size, f"The server's answer to {method} {path}")
