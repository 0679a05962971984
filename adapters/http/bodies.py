"""Request bodies the adapter streams: a JSON object with one streamed field, and a blob upload."""
from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator

from v6node.domain.model import StreamedResult


class StreamedJsonBody:
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


class UploadBody:
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
