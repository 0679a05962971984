"""Use case: while the node runs, start again every sidecar that stops."""
from __future__ import annotations

import asyncio
import logging

from v6node.app.sidecars import RunningSidecars, SupervisedSidecar
from v6node.domain.backoff import Backoff
from v6node.domain.errors import NodeError
from v6node.ports.clock import Clock

log = logging.getLogger("v6node.node")

# A sidecar that ran this long before it stopped is started again at once.
STABLE_SECONDS = 60.0


class SuperviseSidecars:
    """Watch every sidecar the start made; runs until cancelled (the node's stop).

    Business rules:
    - each stop is a WARNING with the exit code and the sidecar's last output; the sidecar
      is started again at once, or after a growing pause (``backoff``) when it stopped
      soon after its last start or cannot be started; each restart is logged;
    - the node's stop cancels the supervision before its clean-up removes the sidecars,
      so they are not started again then.
    """

    def __init__(self, sidecars: RunningSidecars, clock: Clock, backoff: Backoff = Backoff(first=1.0, maximum=60.0)) -> None:
        self.sidecars = sidecars
        self.clock = clock
        self.backoff = backoff

    async def __call__(self) -> None:
        async with asyncio.TaskGroup() as group:
            for item in self.sidecars.items():
                group.create_task(self._watch(item), name=f"supervising {item.what}")

    async def _watch(self, item: SupervisedSidecar) -> None:
        quick = 0
        while True:
            started = self.clock.monotonic()
            ended = await item.wait(item.sidecar)
            quick = quick + 1 if self.clock.monotonic() - started < STABLE_SECONDS else 0
            log.warning(
                "%s stopped (exit code %d: %s); starting it again", item.what, ended.exit_code, ended.reason
            )
            await self._restart(item, quick)

    async def _restart(self, item: SupervisedSidecar, failures: int) -> None:
        while True:
            if failures:
                delay = self.backoff.delay(failures - 1)
                log.info("%s: next start in %.0f s", item.what, delay)
                await self.clock.sleep(delay)
            try:
                item.sidecar = await item.restart()
            except NodeError as exc:
                log.error("%s could not be started again: %s", item.what, exc)
                failures += 1
                continue
            log.info("%s is ready again (%s:%d)", item.what, item.sidecar.alias, item.sidecar.port)
            return
