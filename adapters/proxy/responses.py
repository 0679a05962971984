"""What the algorithm proxy answers: its own messages and the server's answers, read within a cap or streamed."""
from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from attrs import frozen
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from v6node.adapters.proxy.streams import TooLarge, read_capped
from v6node.domain.errors import CryptoError

log = logging.getLogger("v6node.proxy")

# Never relayed in either direction (RFC 9110 §7.6.1), plus what httpx has already undone
# (it decodes Content-Encoding) or what no longer matches once the proxy re-encodes a body.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
    "proxy-authorization", "proxy-authenticate",
})
_RECOMPUTED = frozenset({"content-length", "content-encoding", "date"})


def msg(status: int, message: str) -> JSONResponse:
    """The proxy's own answer: ``{"msg": message}``."""
    return JSONResponse({"msg": message}, status_code=status)


def passable(headers: httpx.Headers) -> dict[str, str]:
    """The server's end-to-end headers, without those that describe its connection or encoding."""
    named_by_connection = {
        name.strip().lower() for value in headers.get_list("connection") for name in value.split(",")
    }
    dropped = _HOP_BY_HOP | _RECOMPUTED | named_by_connection
    return {name: value for name, value in headers.items() if name.lower() not in dropped}


class AnswerTooLarge(TooLarge):
    """A server answer went over the number of bytes the proxy reads into memory."""


@frozen
class Answer:
    """A server answer whose (decoded) body was read into memory."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.content)
        except (ValueError, UnicodeDecodeError):
            return None


async def read_answer(response: httpx.Response, limit: int, what: str) -> Answer:
    """``response`` read into memory and closed; ``TooLarge`` once its decoded body passes ``limit``.

    The decoded bytes are counted, so a compressed answer cannot unpack past the cap either.
    """
    try:
        content = await read_capped(response.aiter_bytes(), limit, what)
    except TooLarge as exc:
        raise AnswerTooLarge(what, limit) from exc
    finally:
        await response.aclose()
    return Answer(response.status_code, response.headers, content)


def relay(answer: Answer) -> Response:
    """A server answer that was read: same status, body and (end-to-end) headers."""
    return Response(answer.content, status_code=answer.status_code, headers=passable(answer.headers))


class StreamedUpstream(StreamingResponse):
    """Streams ``chunks`` back with the server's status and headers; always closes the server's response."""

    def __init__(self, chunks: AsyncIterator[bytes], upstream: httpx.Response, blob_id: str | None = None) -> None:
        super().__init__(chunks, status_code=upstream.status_code, headers=passable(upstream.headers))
        self._chunks = chunks
        self._upstream = upstream
        self._blob_id = blob_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except CryptoError as exc:
            # Headers are out; cutting the connection is the only honest signal left.
            log.warning("blob %s could not be decrypted after the first bytes: %s", self._blob_id, exc)
            raise
        finally:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()
            await self._upstream.aclose()
