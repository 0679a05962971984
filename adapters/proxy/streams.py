"""Byte streams of the algorithm proxy: size caps, chunking, and blocking cryptor streams in a thread."""
from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from typing import Any


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


_END = object()
_STOP = object()


class _Stopped(Exception):
    """Ends a transform whose consumer went away."""


async def through_thread(
    transform: Callable[[Iterable[bytes]], Iterator[bytes]], source: AsyncIterator[bytes]
) -> AsyncGenerator[bytes, None]:
    """``transform`` (a blocking cryptor stream) over the async ``source``, run in a thread of its own.

    The thread asks the event loop for one input chunk at a time and hands each output
    chunk back before it asks again, so no more than a chunk is ever buffered. The thread
    starts on the first iteration and ends when this generator is closed. An error of
    ``source`` (``TooLarge``, a client gone) ends the thread and is raised here.
    """
    loop = asyncio.get_running_loop()
    inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
    outbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def post(kind: str, value: Any = None) -> None:
        try:
            loop.call_soon_threadsafe(outbox.put_nowait, (kind, value))
        except RuntimeError:
            pass  # the loop is closed: nobody waits for this any more

    def inputs() -> Iterator[bytes]:
        while True:
            post("need")
            item = inbox.get()
            if item is _END:
                return
            if item is _STOP:
                raise _Stopped
            yield item  # type: ignore[misc]

    def work() -> None:
        try:
            for piece in transform(inputs()):
                if piece:
                    post("data", bytes(piece))
        except _Stopped:
            return
        except BaseException as exc:
            post("error", exc)
            return
        post("end")

    threading.Thread(target=work, name="v6node-proxy-crypto", daemon=True).start()
    try:
        while True:
            kind, value = await outbox.get()
            if kind == "need":
                inbox.put(await anext(source, _END))
            elif kind == "data":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        inbox.put(_STOP)
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
