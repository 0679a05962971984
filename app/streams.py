"""Blocking stream transforms (encryption, encoding) driven from the event loop with bounded memory."""
from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from typing import Any

_END = object()
_STOP = object()


class _Stopped(Exception):
    """Ends a transform whose consumer went away."""


async def through_thread(
    transform: Callable[[Iterable[bytes]], Iterator[bytes]], source: AsyncIterator[bytes]
) -> AsyncGenerator[bytes, None]:
    """``transform`` (a blocking iterator over chunks) applied to the async ``source`` in a thread of its own.

    The thread asks the event loop for one input chunk at a time and hands each output
    chunk back before it asks again, so no more than a chunk is ever buffered and the
    event loop never runs the transform. The thread starts on the first iteration and
    ends when this generator is closed; an error of ``source`` ends it too and is raised here.
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
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            post("error", exc)
            return
        post("end")

    threading.Thread(target=work, name="v6node-stream", daemon=True).start()
    try:
        while True:
            kind, value = await outbox.get()
            if kind == "need":
                try:
                    inbox.put(await anext(source, _END))
                except BaseException:
                    inbox.put(_STOP)
                    raise
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
