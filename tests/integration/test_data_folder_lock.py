"""One node per data folder: the lock is held by a live process only, SIGKILL included."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from v6node.adapters.system.data_folder_lock import DataFolderLock
from v6node.domain.errors import NodeAlreadyRunning

HOLDER = textwrap.dedent(
    """
    import sys
    from v6node.adapters.system.data_folder_lock import DataFolderLock
    DataFolderLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    sys.stdin.read()
    """
)


def hold(folder: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    return process


def test_a_second_node_on_the_folder_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = hold(tmp_path)
    try:
        with pytest.raises(NodeAlreadyRunning, match=f"a node \\(PID {first.pid}\\) is already running with the data folder {tmp_path}"):
            DataFolderLock(str(tmp_path)).acquire()
        assert DataFolderLock(str(tmp_path)).holder() == first.pid
    finally:
        first.kill()
        first.wait()


def test_the_lock_goes_with_a_sigkilled_process(tmp_path: Path) -> None:
    first = hold(tmp_path)
    first.send_signal(signal.SIGKILL)
    first.wait()

    with DataFolderLock(str(tmp_path)) as lock:
        assert lock.holder() is not None
    assert DataFolderLock(str(tmp_path)).holder() is None
