"""Container output: the engine's cap on what it keeps, the tail read back, and following it live."""
from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from contextlib import suppress
from typing import Any

import docker
from docker.types import LogConfig

from v6node.adapters.docker.errors import docker_errors
from v6node.domain.containers import log_tail
from v6node.ports.container_runtime import FOLLOW_LINE_LIMIT


def log_config(size: int | None) -> LogConfig | None:
    """Two json-files of half ``size`` each: the engine keeps between half of ``size`` and
    ``size`` of the newest output (one file would keep next to nothing right after it rotates)."""
    if size is None:
        return None
    return LogConfig(type=LogConfig.types.JSON, config={"max-size": str(max(size // 2, 1024)), "max-file": "2"})



def read_tail(api: docker.APIClient, container_id: str, limit: int) -> str:
    """The last ``limit`` bytes of the container's output (``log_tail``), read as a stream."""
    with docker_errors(f"logs of container {container_id[:12]}"):
        stream = api.logs(container_id, stdout=True, stderr=True, stream=True, follow=False)
        try:
            return log_tail(stream, limit)
        finally:
            _close(stream)


async def follow(pool: Executor, api: Callable[[], docker.APIClient], container_id: str) -> AsyncIterator[str]:
    """Lines of output as they come, until the container stops; each blocking read runs in ``pool``."""
    what = f"following the logs of container {container_id[:12]}"
    loop = asyncio.get_running_loop()

    def open_stream() -> Any:
        with docker_errors(what):
            return api().logs(container_id, stdout=True, stderr=True, stream=True, follow=True)

    def next_chunk(stream: Any) -> bytes | None:
        with docker_errors(what):
            return next(stream, None)

    stream = await loop.run_in_executor(pool, open_stream)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    try:
        while (chunk := await loop.run_in_executor(pool, next_chunk, stream)) is not None:
            pending += decoder.decode(chunk)
            *lines, pending = pending.split("\n")
            for line in lines:
                for start in range(0, max(len(line), 1), FOLLOW_LINE_LIMIT):
                    yield line[start : start + FOLLOW_LINE_LIMIT]
            while len(pending) > FOLLOW_LINE_LIMIT:
                yield pending[:FOLLOW_LINE_LIMIT]
                pending = pending[FOLLOW_LINE_LIMIT:]
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending
    finally:
        _close(stream)  # also ends a read in progress


def _close(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        with suppress(Exception):
            close()
