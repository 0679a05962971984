"""Read a node's run journal (``<data_dir>/journal.sqlite``) read-only, as a test's witness."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from attrs import frozen

JOURNAL_FILE = "journal.sqlite"


@frozen
class JournalRow:
    run_id: int
    task_id: int
    step: int  # 1 received, 2 started, 3 exited, 4 reported
    status: str | None
    container_starts: int


def journal_rows(data_dir: str | Path) -> dict[int, JournalRow]:
    """Every run the journal holds, by run id; an absent journal holds none."""
    path = Path(data_dir) / JOURNAL_FILE
    if not path.exists():
        return {}
    # mode=ro: the test never writes; the node may still have the file open (WAL mode).
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT run_id, task_id, step, status, container_starts FROM run ORDER BY run_id")
        return {row[0]: JournalRow(*row) for row in rows}
    finally:
        conn.close()


def container_starts(data_dir: str | Path) -> dict[int, int]:
    """How often the node started a container for each run it journaled."""
    return {run_id: row.container_starts for run_id, row in journal_rows(data_dir).items()}
