"""What a sync reads from the journal (``entries_for_sync``, ``count``): the same on both journals,
and on SQLite a read that does not grow with the history of finished runs."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from v6node.adapters.journal.sqlite_run_journal import SqliteRunJournal
from v6node.adapters.memory.journal import MemoryRunJournal
from v6node.domain.journal import RunStep
from v6node.domain.status import RunStatus
from v6node.ports.run_journal import RunJournal

T0 = datetime(2026, 3, 1, 9, 30, 0, 250000, tzinfo=timezone.utc)
# A station whose clock is not UTC: the journal must still order times as times.
AMSTERDAM = timezone(timedelta(hours=1))


class SettableClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock()


@pytest.fixture(params=["memory", "sqlite"])
def journal(request: pytest.FixtureRequest, tmp_path: Path, clock: SettableClock) -> Iterator[RunJournal]:
    if request.param == "memory":
        made: MemoryRunJournal | SqliteRunJournal = MemoryRunJournal(now=clock)
    else:
        made = SqliteRunJournal(str(tmp_path / "journal.sqlite"), now=clock)
    yield made
    made.close()


async def _claim_at(journal: RunJournal, clock: SettableClock, run_id: int, at: datetime) -> None:
    clock.now = at
    await journal.claim(run_id, run_id)


async def test_a_sync_reads_the_open_runs_and_those_due_to_be_forgotten(journal: RunJournal, clock: SettableClock):
    await _claim_at(journal, clock, 1, T0)                       # old, not open: due to be forgotten
    await _claim_at(journal, clock, 2, T0 + timedelta(days=1))   # old, open
    await _claim_at(journal, clock, 3, T0 + timedelta(days=9))   # recent, not open: not read
    await _claim_at(journal, clock, 4, T0 + timedelta(days=9))   # recent, open
    clock.now = T0 + timedelta(days=10)
    await journal.advance(4, RunStep.STARTED, container_id="c4")
    cutoff = T0 + timedelta(days=3)
    read = await journal.entries_for_sync([4, 2, 99], cutoff)
    assert [(e.run_id, e.step) for e in read] == [(1, RunStep.RECEIVED), (2, RunStep.RECEIVED), (4, RunStep.STARTED)]
    assert [e.run_id for e in await journal.entries_for_sync([], None)] == [1, 2, 3, 4]
    assert await journal.count() == 4
    await journal.forget(1)
    assert await journal.count() == 3


async def test_the_cutoff_compares_times_not_their_text(journal: RunJournal, clock: SettableClock):
    # 10:00+01:00 is 09:00 UTC: before a cutoff of 09:30 UTC, though "10:00" sorts after "09:30".
    await _claim_at(journal, clock, 1, datetime(2026, 3, 1, 10, 0, tzinfo=AMSTERDAM))
    await _claim_at(journal, clock, 2, datetime(2026, 3, 1, 9, 45, tzinfo=timezone.utc))
    read = await journal.entries_for_sync([], datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc))
    assert [e.run_id for e in read] == [1]
    read = await journal.entries_for_sync([], datetime(2026, 3, 1, 10, 40, tzinfo=AMSTERDAM))  # 09:40 UTC
    assert [e.run_id for e in read] == [1]


async def test_more_open_runs_than_one_statement_takes(journal: RunJournal, clock: SettableClock):
    for run_id in (3, 700, 1100, 2500):
        await _claim_at(journal, clock, run_id, T0)
    read = await journal.entries_for_sync(range(1, 2001), T0 - timedelta(days=1))
    assert [e.run_id for e in read] == [3, 700, 1100]


async def test_the_sqlite_journal_finds_old_entries_through_an_index(tmp_path: Path, clock: SettableClock):
    path = tmp_path / "journal.sqlite"
    journal = SqliteRunJournal(str(path), now=clock)
    try:
        await journal.claim(1, 1)
        await journal.advance(1, RunStep.REPORTED, status=RunStatus.COMPLETED)
    finally:
        journal.close()
    with sqlite3.connect(path) as raw:
        plan = " ".join(
            str(row[-1]) for row in raw.execute("EXPLAIN QUERY PLAN SELECT run_id FROM run WHERE updated_at < ?", ("x",))
        )
    assert "USING INDEX run_by_updated_at" in plan or "USING COVERING INDEX run_by_updated_at" in plan, plan
