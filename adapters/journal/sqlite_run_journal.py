"""The run journal as a SQLite file in the node's data folder."""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import attrs

from v6node.domain.errors import JournalError
from v6node.domain.journal import JournalBinding, JournalEntry, JournalIdentity, RunStep
from v6node.domain.status import RunStatus
from v6node.ports.run_journal import RunJournal

T = TypeVar("T")

SCHEMA_VERSION = 2
_IDS_PER_QUERY = 500  # under SQLite's oldest limit of 999 parameters per statement
_COLUMNS = (
    "run_id, task_id, job_id, step, container_id, exit_code, status, container_starts, "
    "token, received_at, updated_at, assigned_at, started_at"
)
_CREATE_V1 = """
CREATE TABLE run (
    run_id           INTEGER PRIMARY KEY,
    task_id          INTEGER NOT NULL,
    job_id           INTEGER,
    step             INTEGER NOT NULL,
    container_id     TEXT,
    exit_code        INTEGER,
    status           TEXT,
    container_starts INTEGER NOT NULL DEFAULT 0,
    token            TEXT,
    received_at      TEXT NOT NULL,
    updated_at       TEXT NOT NULL
)
"""
# Version 2: whom the journal belongs to, the server's creation time of each run (tells
# it from another server's run with the same id) and when its container first started.
_UPGRADE_TO_V2 = (
    "ALTER TABLE run ADD COLUMN assigned_at TEXT",
    "ALTER TABLE run ADD COLUMN started_at TEXT",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(moment: datetime) -> str:
    """One text form for every time written, so that text order is time order (the index on updated_at)."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    run_id, task_id, job_id, step, container_id, exit_code, status, starts, token, received, updated, assigned, started = row
    return JournalEntry(
        run_id=run_id,
        task_id=task_id,
        job_id=job_id,
        step=RunStep(step),
        container_id=container_id,
        exit_code=exit_code,
        status=RunStatus(status) if status is not None else None,
        container_starts=starts,
        token=token,
        received_at=datetime.fromisoformat(received),
        updated_at=datetime.fromisoformat(updated),
        assigned_at=_datetime(assigned),
        started_at=_datetime(started),
    )


def _datetime(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class SqliteRunJournal(RunJournal):
    """``RunJournal`` on a stdlib ``sqlite3`` file; survives SIGKILL of the node.

    - Durability: WAL mode with ``synchronous=FULL``, autocommit; a call returns only after
      its transaction is committed and the WAL is synced to disk.
    - Threads: one dedicated worker thread owns the one connection (sqlite connections are
      thread-bound; the default ``check_same_thread`` stays on to catch mistakes). Every
      call is queued to that thread, so calls of one journal are serialized; the database's
      own locking (``busy_timeout``) covers another process on the same file.
    - The file (mode 0600: it holds container tokens) and its schema are created on first
      use; ``PRAGMA user_version`` is the schema version. A file that cannot be opened, is
      not a database or has a newer schema raises ``JournalError`` naming the file.
    - A call whose awaiting task is cancelled still completes on the worker thread.
    - ``close()`` waits for queued calls, closes the connection and stops the thread; it is
      idempotent, and any call after it raises ``JournalError``.
    """

    def __init__(
        self, path: str, *, now: Callable[[], datetime] = _utc_now, busy_timeout: float = 10.0
    ) -> None:
        self.path = path
        self._now = now
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # used on the worker thread only
        self._closed = False

    # --- RunJournal --------------------------------------------------------------------------
    async def bind(self, identity: JournalIdentity) -> JournalBinding:
        recorded, count = await self._call(self._identity_and_size)
        if recorded == identity:
            return JournalBinding(previous=identity)
        if recorded is None and count == 0:
            await self._call(lambda conn: self._record_identity(conn, identity))
            return JournalBinding()
        set_aside = await self._call(self._set_aside)
        await self._call(lambda conn: self._record_identity(conn, identity))
        return JournalBinding(previous=recorded, set_aside=set_aside, entries_set_aside=count)

    async def claim(
        self, run_id: int, task_id: int, *, job_id: int | None = None, assigned_at: datetime | None = None
    ) -> bool:
        at = _stamp(self._now())
        assigned = None if assigned_at is None else assigned_at.isoformat()

        def insert(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO run (run_id, task_id, job_id, step, container_starts, received_at, updated_at,"
                " assigned_at) VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
                (run_id, task_id, job_id, int(RunStep.RECEIVED), at, at, assigned),
            )
            return cursor.rowcount == 1

        return await self._call(insert)

    async def advance(
        self,
        run_id: int,
        step: RunStep,
        *,
        container_id: str | None = None,
        exit_code: int | None = None,
        status: RunStatus | None = None,
        token: str | None = None,
    ) -> JournalEntry:
        given = {"container_id": container_id, "exit_code": exit_code, "status": status, "token": token}
        changes = {key: value for key, value in given.items() if value is not None}
        at = self._now()

        def update(conn: sqlite3.Connection) -> JournalEntry:
            with _transaction(conn):
                row = conn.execute(f"SELECT {_COLUMNS} FROM run WHERE run_id = ?", (run_id,)).fetchone()
                if row is None:
                    raise JournalError(f"run journal {self.path}: run {run_id} was never claimed")
                entry = _entry(row).advance(step, updated_at=at, **changes)
                conn.execute(
                    "UPDATE run SET step = ?, container_id = ?, exit_code = ?, status = ?,"
                    " container_starts = ?, token = ?, updated_at = ?, started_at = ? WHERE run_id = ?",
                    (
                        int(entry.step),
                        entry.container_id,
                        entry.exit_code,
                        None if entry.status is None else str(entry.status),
                        entry.container_starts,
                        entry.token,
                        _stamp(at),
                        None if entry.started_at is None else entry.started_at.isoformat(),
                        run_id,
                    ),
                )
            return entry

        return await self._call(update)

    async def get(self, run_id: int) -> JournalEntry | None:
        def select(conn: sqlite3.Connection) -> JournalEntry | None:
            row = conn.execute(f"SELECT {_COLUMNS} FROM run WHERE run_id = ?", (run_id,)).fetchone()
            return None if row is None else _entry(row)

        return await self._call(select)

    async def entries(self) -> list[JournalEntry]:
        def select(conn: sqlite3.Connection) -> list[JournalEntry]:
            return [_entry(row) for row in conn.execute(f"SELECT {_COLUMNS} FROM run ORDER BY run_id")]

        return await self._call(select)

    async def entries_for_sync(self, run_ids: Iterable[int], updated_before: datetime | None) -> list[JournalEntry]:
        if updated_before is None:
            return await self.entries()
        ids = sorted(set(run_ids))
        cutoff = _stamp(updated_before)

        def select(conn: sqlite3.Connection) -> list[JournalEntry]:
            # The index on updated_at and the primary key keep this to the rows returned.
            rows = {row[0]: row for row in conn.execute(f"SELECT {_COLUMNS} FROM run WHERE updated_at < ?", (cutoff,))}
            for start in range(0, len(ids), _IDS_PER_QUERY):
                chunk = ids[start:start + _IDS_PER_QUERY]
                marks = ", ".join("?" * len(chunk))
                rows.update((row[0], row) for row in conn.execute(
                    f"SELECT {_COLUMNS} FROM run WHERE run_id IN ({marks})", chunk
                ))
            return [_entry(rows[run_id]) for run_id in sorted(rows)]

        return await self._call(select)

    async def count(self) -> int:
        return await self._call(lambda conn: int(conn.execute("SELECT count(*) FROM run").fetchone()[0]))

    async def forget(self, run_id: int) -> None:
        await self._call(lambda conn: conn.execute("DELETE FROM run WHERE run_id = ?", (run_id,)))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._executor is not None:
            self._executor.submit(self._close_connection).result()
            self._executor.shutdown(wait=True)

    # --- identity (worker thread) ------------------------------------------------------------
    @staticmethod
    def _identity_and_size(conn: sqlite3.Connection) -> tuple[JournalIdentity | None, int]:
        row = conn.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
        count = int(conn.execute("SELECT count(*) FROM run").fetchone()[0])
        if row is None:
            return None, count
        try:
            return JournalIdentity(**json.loads(row[0])), count
        except (ValueError, TypeError):
            return None, count  # unreadable: treated as a journal of someone else

    @staticmethod
    def _record_identity(conn: sqlite3.Connection, identity: JournalIdentity) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('identity', ?)",
            (json.dumps(attrs.asdict(identity), sort_keys=True),),
        )

    def _set_aside(self, _conn: sqlite3.Connection) -> str:
        """Close the file, rename it (with its WAL files) to ``journal.<UTC time>.sqlite``, start afresh."""
        self._close_connection()
        path = Path(self.path)
        stamp = self._now().astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        target = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
        try:
            for suffix in ("-wal", "-shm"):
                side = Path(f"{path}{suffix}")
                if side.exists():
                    os.replace(side, f"{target}{suffix}")
            os.replace(path, target)
        except OSError as exc:
            raise JournalError(f"cannot set the run journal {path} aside: {exc.strerror or exc}") from exc
        self._conn = self._open()
        return str(target)

    # --- the worker thread ----------------------------------------------------------------------
    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise JournalError(f"run journal {self.path} is closed")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="v6node-journal")
        # Shielded: once queued, a call completes even when its caller is cancelled, so a
        # step the node began to record is not dropped half-way through a shutdown.
        return await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._executor, self._run, work))

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._open()
        try:
            return work(self._conn)
        except sqlite3.Error as exc:
            raise JournalError(f"run journal {self.path}: {exc}") from exc

    def _open(self) -> sqlite3.Connection:
        path = Path(self.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise JournalError(f"cannot open the run journal {path}: {exc.strerror or exc}") from exc
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=self._busy_timeout)
            _use_wal(conn, self._busy_timeout)
            conn.execute("PRAGMA synchronous = FULL")
            self._migrate(conn)
            # Not part of the schema version: older versions read a journal with it unchanged.
            conn.execute("CREATE INDEX IF NOT EXISTS run_by_updated_at ON run (updated_at)")
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, sqlite3.Error):
                raise JournalError(f"cannot open the run journal {path}: {exc}") from exc
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if self._schema_version(conn) == SCHEMA_VERSION:
            return
        with _transaction(conn):
            # Checked again under the write lock: another process may have just created it.
            version = self._schema_version(conn)
            if version == SCHEMA_VERSION:
                return
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
            if version == 0 and not tables:
                conn.execute(_CREATE_V1)
            elif version != 1:
                raise JournalError(
                    f"the run journal {self.path} has schema version {version}, which this v6node "
                    f"(schema {SCHEMA_VERSION}) cannot read; was it written by another program or a newer v6node?"
                )
            for statement in _UPGRADE_TO_V2:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _schema_version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _use_wal(conn: sqlite3.Connection, patience: float) -> None:
    """Switch the file to WAL, waiting up to ``patience`` seconds for another opener.

    SQLite answers this pragma "database is locked" at once, without its busy handler, while
    another connection is switching the same new file (measured: 13 of 300 paired opens).
    """
    deadline = time.monotonic() + patience
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; rolled back when the block (or the commit) fails."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
