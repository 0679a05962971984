"""What one sync costs as the run journal grows: ``python -m benchmarks.journal_history [--runs 0 1000 10000]``.

A sync reads the journal and reconciles it with the server's open runs (``SyncRuns``).
Here the journal (the real SQLite adapter, in a temporary folder) holds N runs that were
reported and finished within the retention window (7 days), the server lists none open
and no container runs: the figure is the journal's part of a sync, ``entries_for_sync``
plus ``reconcile``, median of 5 (``--whole`` times ``entries()`` in its place, the read
before 2026-12-06, for comparison). A sync that costs O(open runs) stays flat as N grows; one
that reads the whole history grows with it. Filling the journal goes through the
adapter's own ``claim`` and ``advance`` (two durable writes per run), which is also timed.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

from v6node.adapters.journal.sqlite_run_journal import SqliteRunJournal
from v6node.domain.journal import RunStep
from v6node.domain.reconcile import reconcile
from v6node.domain.status import RunStatus


async def measure(n: int, whole: bool = False) -> tuple[float, float]:
    """(seconds per sync's journal part, seconds to write the history)."""
    with tempfile.TemporaryDirectory(prefix="v6node-journal-") as folder:
        journal = SqliteRunJournal(f"{folder}/journal.sqlite")
        try:
            started = time.perf_counter()
            for run_id in range(1, n + 1):
                await journal.claim(run_id, run_id, job_id=run_id)
                await journal.advance(run_id, RunStep.REPORTED, status=RunStatus.COMPLETED)
            fill = time.perf_counter() - started
            await journal.count()  # the worker thread and connection exist before the clock runs
            times = []
            for _ in range(5):
                started = time.perf_counter()
                keep_since = datetime.now(UTC) - timedelta(days=7)
                entries = await (journal.entries() if whole else journal.entries_for_sync([], keep_since))
                reconcile([], entries, [], keep_entries_since=keep_since)
                times.append(time.perf_counter() - started)
            return statistics.median(times), fill
        finally:
            journal.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.journal_history", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[0, 1000, 10000])
    parser.add_argument("--whole", action="store_true", help="read every entry, as syncs did before 2026-12-06")
    args = parser.parse_args(argv)
    for n in args.runs:
        sync, fill = asyncio.run(measure(n, args.whole))
        print(f"{n:6d} finished runs in the journal: a sync's journal part {sync * 1000:8.1f} ms "
              f"(writing them: {fill:.1f} s, {fill / n * 1000 if n else 0:.1f} ms per run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
