"""A node stopped just after the server stored a run's end does not report that run again."""
from __future__ import annotations

import asyncio

from dependency_injector import providers

from v6node.adapters.memory.harness import MemoryNodeHarness, default_config
from v6node.adapters.memory.journal import MemoryRunJournal
from v6node.adapters.memory.server_api import MemoryServerApi
from v6node.app.container_memory import MemoryAdapters
from v6node.domain.events import NewTask
from v6node.domain.journal import RunStep
from v6node.domain.model import RunUpdate
from v6node.domain.run_events import Stage
from v6node.domain.status import RunStatus


class SlowJournal(MemoryRunJournal):
    """The first REPORTED write is still going on when the node is stopped (it never ends of itself)."""

    interrupted = False

    async def advance(self, run_id, step, **kwargs):  # type: ignore[no-untyped-def]
        if step is RunStep.REPORTED and not self.interrupted:
            self.interrupted = True
            await asyncio.Event().wait()
        return await super().advance(run_id, step, **kwargs)


class StopOnReport(MemoryServerApi):
    """Asks the node to stop the moment a run's end is stored (as an embedding app might)."""

    stop: object = None
    updates: list[RunUpdate]

    async def update_run(self, run_id: int, update: RunUpdate) -> None:
        self.updates.append(update)
        await super().update_run(run_id, update)
        if update.finished_at is not None and self.stop is None:
            self.stop = asyncio.create_task(self.harness.stop())


async def test_a_stop_right_after_the_final_patch_does_not_report_the_run_again() -> None:
    config = default_config()
    adapters = MemoryAdapters(config=config)
    server = StopOnReport(api_key=config.api_key)
    server.updates = []
    adapters.server.override(providers.Object(server))
    adapters.journal.override(providers.Object(SlowJournal()))
    harness = MemoryNodeHarness(config, adapters=adapters)
    server.harness = harness
    stream = harness.container.run_events().subscribe()
    harness.runtime.add_image("algo:1")
    await harness.start()
    task = server.create_task("algo:1", {"method": "echo"})
    harness.events.push(NewTask(task.id))
    async with asyncio.timeout(10):
        events = [event async for event in stream]  # ends when the node has stopped
        await server.stop

    assert server.our_run(task.id).status is RunStatus.COMPLETED
    finals = [update.status for update in server.updates if update.finished_at is not None]
    assert finals == [RunStatus.COMPLETED]  # no second, "failed" report of the stop
    assert all(event.status in (None, RunStatus.COMPLETED) for event in events)
    assert not [e for e in events if e.stage is Stage.FINISHED and e.status is not RunStatus.COMPLETED]
