"""Signal another process and wait for it to end (the node runs in a process of its own)."""
from __future__ import annotations

import os
import select
import signal
import time
from datetime import datetime, timezone

from v6node.domain.errors import NodeError


class ProcessGone(NodeError):
    """The process ended before it could be signalled."""


def send_signal(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to ``pid``; ``ProcessGone`` when it has ended, ``NodeError`` when not permitted."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise ProcessGone(f"process {pid} has already ended") from None
    except PermissionError:
        raise NodeError(
            f"not permitted to signal process {pid} (it runs as another user): run this command as that user or root"
        ) from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has ended, at most ``timeout`` seconds; True when it has.

    Uses a pidfd (Linux 5.3+), which becomes readable when the process ends, so no polling;
    on older kernels the process is checked every 0.1 s. A process that is not our child
    disappears as soon as its parent reaps it (or at once, for a detached node).
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        return _poll_for_exit(pid, timeout)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(timeout, 0.0) * 1000))
    finally:
        os.close(pidfd)


def _poll_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def started_at(pid: int) -> datetime | None:
    """When the process started (from /proc), None when it cannot be told."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/stat", encoding="ascii") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
    except (OSError, IndexError, StopIteration, ValueError):
        return None
    ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
    return datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), tz=timezone.utc)
