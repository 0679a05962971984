"""Byte streams of the algorithm proxy: size caps and chunking (cryptor streams run through ``v6node.app.streams``)."""
from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator


class TooLarge(Exception):
    """A body went over the number of bytes the proxy accepts for it."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} is larger than the {limit} bytes the proxy accepts")
        self.what = what
        self.limit = limit


async def capped(chunks: AsyncIterator[bytes], limit: int, what: str) -> AsyncGenerator[bytes, None]:
    """``chunks`` unchanged, raising ``TooLarge`` as soon as more than ``limit`` bytes came through."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > limit:
            raise TooLarge(what, limit)
        yield chunk


async def read_capped(chunks: AsyncIterator[bytes], limit: int, what: str) -> bytes:
    """All of ``chunks``, or ``TooLarge`` once they pass ``limit`` (never more than that is held)."""
    body = bytearray()
    async for chunk in capped(chunks, limit, what):
        body += chunk
    return bytes(body)


class OneShotBody:
    """A streamed request body that remembers whether sending it began (then it cannot be re-sent)."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self.started = False

    async def __aiter__(self) -> AsyncGenerator[bytes, None]:
        self.started = True
        async for chunk in self._chunks:
            yield chunk


async def bounded(chunks: AsyncIterator[bytes], size: int) -> AsyncGenerator[bytes, None]:
    """``chunks`` without empty pieces and cut to at most ``size`` bytes each."""
    async for chunk in chunks:
        for start in range(0, len(chunk), size):
            yield chunk[start:start + size]


async def prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk
