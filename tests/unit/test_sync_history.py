"""A sync and the journal's history: finished runs are forgotten after a week, and a sync reads
only the entries it may act on (issue 15: a sync costs O(open runs), not O(history))."""
from __future__ import annotations

from v6node.adapters.memory.harness import MemoryNodeHarness
from v6node.domain.events import NewTask
from v6node.domain.journal import JournalEntry
from v6node.domain.status import RunStatus

IMAGE = "127.0.0.1:5999/echo-algo:1"
DAY = 24 * 3600.0


async def _complete(h: MemoryNodeHarness) -> int:
    task = h.server.create_task(IMAGE, {"method": "echo"})
    h.events.push(NewTask(task.id))
    assert await h.until_run_finished(task.id) == RunStatus.COMPLETED
    return h.server.our_run(task.id).id


async def test_a_sync_forgets_week_old_entries_and_reads_no_recent_finished_run():
    h = MemoryNodeHarness()
    h.runtime.add_image(IMAGE)
    async with h:
        reads: list[list[JournalEntry]] = []
        journal = h.journal
        real = journal.entries_for_sync

        async def spy(run_ids, updated_before):  # type: ignore[no-untyped-def]
            reads.append(read := await real(run_ids, updated_before))
            return read

        journal.entries_for_sync = spy  # type: ignore[method-assign]
        old = [await _complete(h), await _complete(h)]
        await h.clock.advance(3 * DAY)
        recent = await _complete(h)
        await h.clock.advance(4 * DAY + 60)  # the first two are now more than 7 days old
        waiting = h.server.create_task(IMAGE, {"method": "echo"})  # open, not announced: a sync finds it
        await h.node.sync_task_queue_with_server()
        assert await h.until_run_finished(waiting.id) == RunStatus.COMPLETED
        read = {entry.run_id for entries in reads for entry in entries}
        assert reads and read == set(old)  # never the recent finished run: it is not due yet
        assert [entry.run_id for entry in await journal.entries()] == [recent, h.server.our_run(waiting.id).id]
