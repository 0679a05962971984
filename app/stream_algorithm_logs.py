"""Use case: send a running algorithm's output to the server as it is written (``algorithm_log``)."""
from __future__ import annotations

import asyncio
import contextlib
import logging

from v6node.app.emitter import Emitter
from v6node.app.session import NodeSession
from v6node.domain.config import NodeConfig
from v6node.domain.errors import NodeError
from v6node.domain.model import Run
from v6node.ports.clock import Clock
from v6node.ports.container_runtime import ContainerRuntime

log = logging.getLogger("v6node.run")

ACK_WAIT = 5.0  # seconds a batch waits for the server to have appended it


class StreamAlgorithmLogs:
    """Follow a container's output and send it in batches until the container stops.

    Business rules:
    - only when ``share_algorithm_logs`` is true;
    - at most one ``algorithm_log`` per ``interval`` seconds, of at most ``max_bytes`` of
      text: a chatty algorithm cannot flood the server; what does not fit is not streamed
      and the next batch says how much was left out (the whole log, up to
      ``max_log_size``, still comes with the result);
    - the server appends each batch to the run's log, and the final report replaces that
      log with the whole one, so no line ends up twice; streaming therefore starts only
      after the run was marked active (that PATCH empties the log) and must end before
      the report is sent: each batch waits (up to ``ACK_WAIT`` s) for the server's
      acknowledgement that it was appended (the server handles events concurrently, so
      this also keeps the batches in order);
    - following or sending failing never fails the run: the result still carries the log.
    """

    def __init__(
        self,
        config: NodeConfig,
        runtime: ContainerRuntime,
        emitter: Emitter,
        session: NodeSession,
        clock: Clock,
        interval: float = 1.0,
        max_bytes: int = 64 * 1024,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.emitter = emitter
        self.session = session
        self.clock = clock
        self.interval = interval
        self.max_bytes = max_bytes

    async def __call__(self, run: Run, container_id: str) -> None:
        if not self.config.share_algorithm_logs:
            return
        batch: list[str] = []
        size = left_out = 0
        ended = asyncio.Event()

        async def read() -> None:
            nonlocal size, left_out
            try:
                async for line in self.runtime.follow_logs(container_id):
                    if size + len(line) + 1 > self.max_bytes:
                        left_out += len(line.encode()) + 1
                    else:
                        batch.append(line)
                        size += len(line) + 1
            except NodeError as exc:
                log.info("run %s: its output is no longer streamed (%s); the result carries it", run.id, exc)
            finally:
                ended.set()

        reader = asyncio.create_task(read(), name=f"logs of run {run.id}")
        try:
            done = False
            while not done:
                pause = asyncio.ensure_future(self.clock.sleep(self.interval))
                stop = asyncio.ensure_future(ended.wait())
                await asyncio.wait({pause, stop}, return_when=asyncio.FIRST_COMPLETED)
                pause.cancel()
                stop.cancel()
                done = ended.is_set()  # no await until the batch is taken: nothing is missed
                lines, batch[:], size = list(batch), [], 0
                if left_out:
                    lines.append(f"[v6node] {left_out} bytes of output were not streamed (rate limit); the result carries them")
                    left_out = 0
                if lines:
                    await self._send(run, "\n".join(lines))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _send(self, run: Run, text: str) -> None:
        me = self.session.me()
        payload = {"collaboration_id": me.collaboration_id, "run_id": run.id, "task_id": run.task.id, "log": text}
        await self.emitter.emit("algorithm_log", payload, handled_within=ACK_WAIT)
