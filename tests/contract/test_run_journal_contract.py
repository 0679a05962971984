"""One RunJournal contract, held by the in-memory twin and by the SQLite journal alike."""
from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from v6node.adapters.journal.sqlite_run_journal import SCHEMA_VERSION, SqliteRunJournal
from v6node.adapters.memory.journal import MemoryRunJournal
from v6node.domain.errors import JournalError
from v6node.domain.journal import JournalBinding, JournalEntry, JournalIdentity, RunStep, StepBackwards
from v6node.domain.status import RunStatus
from v6node.ports.run_journal import RunJournal

T0 = datetime(2026, 3, 1, 9, 30, 0, 250000, tzinfo=timezone.utc)


class StepClock:
    """Each reading is one second after the previous one."""

    def __init__(self) -> None:
        self.readings = 0

    def __call__(self) -> datetime:
        self.readings += 1
        return T0 + timedelta(seconds=self.readings - 1)


@pytest.fixture(params=["memory", "sqlite"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def journal(kind: str, tmp_path: Path, clock: StepClock) -> Iterator[RunJournal]:
    if kind == "memory":
        made: MemoryRunJournal | SqliteRunJournal = MemoryRunJournal(now=clock)
    else:
        made = SqliteRunJournal(str(tmp_path / "journal.sqlite"), now=clock)
    yield made
    made.close()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "journal.sqlite"


# --- the contract, both journals -------------------------------------------------------------------
def test_both_journals_are_run_journals(journal: RunJournal):
    assert isinstance(journal, RunJournal)


async def test_a_run_is_claimed_once(journal: RunJournal):
    assert await journal.claim(11, 5, job_id=3) is True
    assert await journal.claim(11, 5, job_id=3) is False
    assert await journal.claim(11, 99) is False  # a second claim changes nothing
    entry = await journal.get(11)
    assert entry == JournalEntry(run_id=11, task_id=5, job_id=3, received_at=T0, updated_at=T0)


async def test_steps_move_forward_and_keep_what_was_recorded(journal: RunJournal):
    await journal.claim(1, 7)
    started = await journal.advance(1, RunStep.STARTED, container_id="c" * 64, token="jwt-1")
    assert (started.step, started.container_id, started.token) == (RunStep.STARTED, "c" * 64, "jwt-1")
    exited = await journal.advance(1, RunStep.EXITED, exit_code=3)
    assert (exited.step, exited.exit_code, exited.container_id, exited.token) == (RunStep.EXITED, 3, "c" * 64, "jwt-1")
    reported = await journal.advance(1, RunStep.REPORTED, status=RunStatus.CRASHED)
    assert reported.status is RunStatus.CRASHED
    assert reported.received_at == T0 and reported.updated_at == T0 + timedelta(seconds=3)
    assert await journal.get(1) == reported


async def test_a_step_may_be_skipped_but_never_undone(journal: RunJournal):
    await journal.claim(2, 7)
    await journal.advance(2, RunStep.REPORTED, status=RunStatus.NOT_ALLOWED)
    for earlier in (RunStep.RECEIVED, RunStep.STARTED, RunStep.EXITED):
        with pytest.raises(StepBackwards, match="cannot go back from REPORTED"):
            await journal.advance(2, earlier)
    with pytest.raises(ValueError):  # StepBackwards is a ValueError too
        await journal.advance(2, RunStep.STARTED, container_id="x")
    entry = await journal.get(2)
    assert entry is not None
    assert (entry.step, entry.status, entry.container_id, entry.container_starts) == (
        RunStep.REPORTED, RunStatus.NOT_ALLOWED, None, 0
    )


async def test_every_recorded_start_is_counted(journal: RunJournal):
    await journal.claim(3, 7)
    assert (await journal.advance(3, RunStep.STARTED, container_id="a")).container_starts == 1
    second = await journal.advance(3, RunStep.STARTED, container_id="b")
    assert (second.container_starts, second.container_id) == (2, "b")
    assert (await journal.advance(3, RunStep.EXITED, exit_code=0)).container_starts == 2
    assert (await journal.get(3)).container_starts == 2  # type: ignore[union-attr]


async def test_the_same_step_again_keeps_fields_not_given(journal: RunJournal):
    await journal.claim(4, 7)
    await journal.advance(4, RunStep.EXITED, exit_code=0)
    again = await journal.advance(4, RunStep.EXITED)
    assert again.exit_code == 0


async def test_an_unclaimed_run_cannot_advance(journal: RunJournal):
    with pytest.raises(JournalError, match="run 404 was never claimed"):
        await journal.advance(404, RunStep.STARTED, container_id="x")
    assert await journal.get(404) is None


async def test_entries_lists_every_run_by_id(journal: RunJournal):
    for run_id in (30, 10, 20):
        await journal.claim(run_id, run_id + 1)
    await journal.advance(20, RunStep.STARTED, container_id="c20")
    entries = await journal.entries()
    assert [(e.run_id, e.task_id, e.step) for e in entries] == [
        (10, 11, RunStep.RECEIVED), (20, 21, RunStep.STARTED), (30, 31, RunStep.RECEIVED)
    ]


async def test_forget_drops_an_entry_and_is_idempotent(journal: RunJournal):
    await journal.claim(5, 7)
    await journal.claim(6, 7)
    await journal.forget(5)
    await journal.forget(5)
    await journal.forget(12345)
    assert await journal.get(5) is None
    assert [e.run_id for e in await journal.entries()] == [6]
    assert await journal.claim(5, 7) is True  # a forgotten run can be claimed again


async def test_concurrent_claims_of_one_run_admit_exactly_one(journal: RunJournal):
    results = await asyncio.gather(*(journal.claim(77, 1) for _ in range(50)))
    assert results.count(True) == 1
    assert len(await journal.entries()) == 1


async def test_concurrent_claims_and_advances_of_many_runs(journal: RunJournal):
    async def one(run_id: int) -> JournalEntry:
        assert await journal.claim(run_id, 1)
        await journal.advance(run_id, RunStep.STARTED, container_id=f"c{run_id}")
        return await journal.advance(run_id, RunStep.EXITED, exit_code=run_id % 3)

    done = await asyncio.gather(*(one(run_id) for run_id in range(1, 41)))
    assert [e.exit_code for e in done] == [run_id % 3 for run_id in range(1, 41)]
    entries = await journal.entries()
    assert [(e.run_id, e.step, e.container_starts) for e in entries] == [
        (run_id, RunStep.EXITED, 1) for run_id in range(1, 41)
    ]


SERVER_A = JournalIdentity.of("http://127.0.0.1:7601/api", 5, 2, 1)
SERVER_B = JournalIdentity.of("http://127.0.0.1:7602/api", 5, 2, 1)


async def test_the_first_start_and_every_start_as_the_same_node_keep_the_journal(journal: RunJournal):
    assert await journal.bind(SERVER_A) == JournalBinding()
    await journal.claim(1, 10, job_id=10, assigned_at=T0)
    assert await journal.bind(SERVER_A) == JournalBinding(previous=SERVER_A)
    assert [(e.run_id, e.assigned_at) for e in await journal.entries()] == [(1, T0)]


async def test_a_journal_of_another_server_is_set_aside_whole(journal: RunJournal):
    await journal.bind(SERVER_A)
    for run_id in (1, 2, 3):
        await journal.claim(run_id, run_id)
    binding = await journal.bind(SERVER_B)
    assert (binding.previous, binding.entries_set_aside) == (SERVER_A, 3)
    assert binding.set_aside
    assert await journal.entries() == []
    assert await journal.claim(1, 7) is True  # the other server's run 1 is new here
    assert await journal.bind(SERVER_B) == JournalBinding(previous=SERVER_B)


async def test_the_first_start_records_when_a_run_started(journal: RunJournal, clock: StepClock):
    await journal.claim(1, 10)
    first = await journal.advance(1, RunStep.STARTED, container_id="a")
    again = await journal.advance(1, RunStep.STARTED, container_id="b")
    assert first.started_at is not None and again.started_at == first.started_at
    assert again.container_starts == 2


# --- SQLite only ---------------------------------------------------------------------------------------
async def test_a_journal_set_aside_is_kept_next_to_the_new_one(sqlite_path: Path, clock: StepClock):
    journal = SqliteRunJournal(str(sqlite_path), now=clock)
    try:
        await journal.bind(SERVER_A)
        await journal.claim(1, 10)
        binding = await journal.bind(SERVER_B)
        assert binding.set_aside is not None
        kept = Path(binding.set_aside)
        assert kept.parent == sqlite_path.parent
        assert kept.name.startswith("journal.") and kept.name.endswith("Z.sqlite")
        old = SqliteRunJournal(str(kept))
        try:
            assert [e.run_id for e in await old.entries()] == [1]
            assert await old.bind(SERVER_A) == JournalBinding(previous=SERVER_A)
        finally:
            old.close()
    finally:
        journal.close()
    reopened = SqliteRunJournal(str(sqlite_path))
    try:
        assert await reopened.bind(SERVER_B) == JournalBinding(previous=SERVER_B)
        assert await reopened.entries() == []
    finally:
        reopened.close()


async def test_a_version_1_journal_is_upgraded_and_set_aside_when_it_holds_runs(sqlite_path: Path):
    sqlite_path.parent.mkdir(parents=True)
    with sqlite3.connect(sqlite_path) as raw:
        raw.execute(
            "CREATE TABLE run (run_id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL, job_id INTEGER, step INTEGER NOT NULL,"
            " container_id TEXT, exit_code INTEGER, status TEXT, container_starts INTEGER NOT NULL DEFAULT 0, token TEXT,"
            " received_at TEXT NOT NULL, updated_at TEXT NOT NULL)"
        )
        raw.execute("INSERT INTO run VALUES (1, 1, 1, 4, 'c', 0, 'completed', 1, 't', ?, ?)", (T0.isoformat(), T0.isoformat()))
        raw.execute("PRAGMA user_version = 1")
    journal = SqliteRunJournal(str(sqlite_path))
    try:
        assert [e.run_id for e in await journal.entries()] == [1]
        binding = await journal.bind(SERVER_A)
        assert (binding.previous, binding.entries_set_aside) == (None, 1)
        assert await journal.entries() == []
    finally:
        journal.close()
async def test_reopening_the_file_preserves_everything(sqlite_path: Path, clock: StepClock):
    first = SqliteRunJournal(str(sqlite_path), now=clock)
    await first.claim(1, 10, job_id=4)
    await first.advance(1, RunStep.STARTED, container_id="abc", token="tok")
    await first.advance(1, RunStep.EXITED, exit_code=0)
    await first.advance(1, RunStep.REPORTED, status=RunStatus.COMPLETED)
    await first.claim(2, 10)
    before = await first.entries()
    first.close()

    second = SqliteRunJournal(str(sqlite_path))
    try:
        assert await second.entries() == before
        assert before[0] == JournalEntry(
            run_id=1, task_id=10, job_id=4, step=RunStep.REPORTED, container_id="abc", exit_code=0,
            status=RunStatus.COMPLETED, container_starts=1, token="tok",
            received_at=T0, updated_at=T0 + timedelta(seconds=3), started_at=T0 + timedelta(seconds=1),
        )
        assert await second.claim(1, 10) is False
    finally:
        second.close()


async def test_the_file_is_created_on_first_use_in_wal_mode_with_a_schema_version(sqlite_path: Path):
    journal = SqliteRunJournal(str(sqlite_path))
    assert not sqlite_path.exists()  # the constructor only stores the path
    try:
        await journal.entries()
        assert sqlite_path.is_file()
        assert sqlite_path.stat().st_mode & 0o777 == 0o600  # it holds container tokens
        with sqlite3.connect(sqlite_path) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        journal.close()


async def test_a_step_recorded_before_sigkill_is_on_disk(sqlite_path: Path, tmp_path: Path):
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from v6node.adapters.journal.sqlite_run_journal import SqliteRunJournal
        from v6node.domain.journal import RunStep

        async def main():
            journal = SqliteRunJournal({str(sqlite_path)!r})
            await journal.claim(42, 7)
            await journal.advance(42, RunStep.STARTED, container_id="c42")
            await journal.advance(42, RunStep.EXITED, exit_code=5)
            print("done", flush=True)
            sys.stdin.read()  # blocks, journal open, until killed

        asyncio.run(main())
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
        assert line == "done\n", proc.stderr.read() if proc.poll() is not None else line  # type: ignore[union-attr]
        assert (sqlite_path.parent / (sqlite_path.name + "-wal")).exists()  # not yet checkpointed: WAL replay counts
    finally:
        proc.kill()  # SIGKILL: no close, no atexit, no checkpoint
        proc.wait()
        proc.stdin.close()  # type: ignore[union-attr]
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -9

    reopened = SqliteRunJournal(str(sqlite_path))
    try:
        entry = await reopened.get(42)
        assert entry is not None
        recorded = (entry.step, entry.container_id, entry.exit_code, entry.container_starts)
        assert recorded == (RunStep.EXITED, "c42", 5, 1)
        assert await reopened.claim(42, 7) is False
    finally:
        reopened.close()


async def test_two_journals_on_one_file_admit_exactly_one_claim(sqlite_path: Path):
    one, two = SqliteRunJournal(str(sqlite_path)), SqliteRunJournal(str(sqlite_path))
    try:
        results = await asyncio.gather(*(j.claim(9, 1) for _ in range(20) for j in (one, two)))
        assert results.count(True) == 1
        assert await one.get(9) == await two.get(9)
    finally:
        one.close()
        two.close()


async def test_a_file_that_is_not_a_database_is_named_in_the_error(sqlite_path: Path):
    sqlite_path.parent.mkdir(parents=True)
    sqlite_path.write_bytes(b"this is not a database, just some text that fills the header page" * 100)
    journal = SqliteRunJournal(str(sqlite_path))
    try:
        with pytest.raises(JournalError, match=f"cannot open the run journal {sqlite_path}: file is not a database"):
            await journal.entries()
    finally:
        journal.close()


async def test_a_folder_that_cannot_hold_the_file_is_named_in_the_error(tmp_path: Path):
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data folder should be")
    path = blocker / "journal.sqlite"
    journal = SqliteRunJournal(str(path))
    try:
        with pytest.raises(JournalError, match=f"cannot open the run journal {path}"):
            await journal.claim(1, 1)
    finally:
        journal.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
async def test_a_read_only_folder_is_named_in_the_error(tmp_path: Path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    journal = SqliteRunJournal(str(folder / "journal.sqlite"))
    try:
        with pytest.raises(JournalError, match=f"cannot open the run journal {folder / 'journal.sqlite'}"):
            await journal.claim(1, 1)
    finally:
        journal.close()
        folder.chmod(0o700)


async def test_a_newer_or_foreign_schema_is_refused(sqlite_path: Path):
    sqlite_path.parent.mkdir(parents=True)
    with sqlite3.connect(sqlite_path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    journal = SqliteRunJournal(str(sqlite_path))
    try:
        with pytest.raises(JournalError, match=f"{sqlite_path} has schema version {SCHEMA_VERSION + 1}"):
            await journal.entries()
    finally:
        journal.close()

    foreign = sqlite_path.with_name("other.sqlite")
    with sqlite3.connect(foreign) as raw:
        raw.execute("CREATE TABLE something (x)")
    journal = SqliteRunJournal(str(foreign))
    try:
        with pytest.raises(JournalError, match="has schema version 0"):
            await journal.entries()
    finally:
        journal.close()


async def test_close_is_idempotent_and_later_calls_fail_clearly(sqlite_path: Path):
    journal = SqliteRunJournal(str(sqlite_path))
    await journal.claim(1, 1)
    journal.close()
    journal.close()
    with pytest.raises(JournalError, match="is closed"):
        await journal.get(1)


async def test_a_call_cancelled_while_queued_still_lands(sqlite_path: Path):
    journal = SqliteRunJournal(str(sqlite_path))
    try:
        await journal.claim(1, 1)
        backlog = [asyncio.ensure_future(journal.claim(run_id, 1)) for run_id in range(2, 202)]
        pending = asyncio.ensure_future(journal.advance(1, RunStep.STARTED, container_id="c1"))
        await asyncio.sleep(0)  # one turn of the loop: every call is queued behind the backlog
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        assert all(await asyncio.gather(*backlog))
        entry = await journal.get(1)
        assert entry is not None and (entry.step, entry.container_id) == (RunStep.STARTED, "c1")
    finally:
        journal.close()
