"""Per-run log files: the node's lines about a run and its output, in <log folder>/runs/<run id>.log."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from v6node.adapters.filesystem.run_log_files import OUTPUT_OF, RunLogFiles, prune, without_run_output
from v6node.app.report_result import RUN_OUTPUT_MARK


def test_lines_go_to_the_files_of_the_runs_they_name_and_output_only_there(tmp_path: Path, caplog) -> None:
    assert RUN_OUTPUT_MARK == OUTPUT_OF  # the mark the reporter sets is the one the handler reads
    handler = RunLogFiles(tmp_path / "runs")
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    console: list[str] = []
    other = logging.Handler()
    other.emit = lambda record: console.append(record.getMessage())  # type: ignore[method-assign]
    other.addFilter(without_run_output)
    logger = logging.getLogger("v6node.test-run-logs")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    logger.addHandler(other)
    try:
        logger.info("run 7 (task 70) started: algo:1 in container abc")
        logger.warning("run 7 and run 8 share a job")
        logger.info("line one\nline two", extra={OUTPUT_OF: 7})
        logger.info("nothing about a run")
    finally:
        logger.removeHandler(handler)
        logger.removeHandler(other)
    assert (tmp_path / "runs" / "7.log").read_text().splitlines() == [
        "INFO run 7 (task 70) started: algo:1 in container abc", "WARNING run 7 and run 8 share a job", "line one", "line two",
    ]
    assert (tmp_path / "runs" / "8.log").read_text() == "WARNING run 7 and run 8 share a job\n"
    assert console == ["run 7 (task 70) started: algo:1 in container abc", "run 7 and run 8 share a job", "nothing about a run"]
    assert (tmp_path / "runs" / "7.log").stat().st_mode & 0o777 == 0o600


def test_old_run_logs_are_pruned(tmp_path: Path) -> None:
    old, new = tmp_path / "1.log", tmp_path / "2.log"
    old.write_text("old")
    new.write_text("new")
    month_ago = time.time() - 31 * 86400
    os.utime(old, (month_ago, month_ago))
    assert prune(tmp_path, keep_days=30) == 1
    assert not old.exists() and new.exists()
