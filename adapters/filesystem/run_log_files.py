"""One log file per run: ``<log folder>/runs/<run id>.log`` with the node's lines about the run and its output."""
from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

# The node's log lines name a run as "run <id>"; the output of an algorithm comes as a
# record carrying OUTPUT_OF (the run id), which the node's own log does not show.
OUTPUT_OF = "v6node_output_of_run"
_RUN = re.compile(r"\brun (\d+)\b")


class RunLogFiles(logging.Handler):
    """Appends each record that names runs to those runs' files (folder and files private).

    Writing never raises into the node: a file that cannot be written is skipped (logging's
    own ``handleError`` reports it on stderr).
    """

    def __init__(self, folder: str | os.PathLike[str], level: int = logging.INFO) -> None:
        super().__init__(level)
        self.folder = Path(folder)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            run_id = getattr(record, OUTPUT_OF, None)
            text = self.format(record) if run_id is None else record.getMessage()
            run_ids = {int(run_id)} if run_id is not None else {int(found) for found in _RUN.findall(record.getMessage())}
            for run in sorted(run_ids):
                self._append(run, text)
        except Exception:  # noqa: BLE001 - logging must not break the node
            self.handleError(record)

    def _append(self, run_id: int, text: str) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path(run_id), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, (text.rstrip("\n") + "\n").encode("utf-8", errors="replace"))
        finally:
            os.close(fd)

    def path(self, run_id: int) -> Path:
        return self.folder / f"{run_id}.log"


def without_run_output(record: logging.LogRecord) -> bool:
    """A filter for the node's other handlers: algorithm output goes to the run's file only."""
    return getattr(record, OUTPUT_OF, None) is None


def prune(folder: str | os.PathLike[str], keep_days: float) -> int:
    """Delete run log files older than ``keep_days``; returns how many."""
    cutoff = time.time() - keep_days * 86400
    removed = 0
    for path in Path(folder).glob("*.log"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed
