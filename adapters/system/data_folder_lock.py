"""One node per data folder: an exclusive lock that the kernel releases when the process dies."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from v6node.domain.errors import NodeAlreadyRunning

LOCK_FILE = "node.lock"


class DataFolderLock:
    """``flock`` on ``<data folder>/node.lock``, which holds the owner's PID.

    Two nodes on one data folder would share one journal, one set of task folders and
    one set of container labels; the second one is refused at once. The kernel drops
    the lock with the process, SIGKILL included, so no stale lock is ever left behind.
    """

    def __init__(self, folder: str) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``NodeAlreadyRunning`` naming the PID that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.holder()
            who = f"PID {holder}" if holder is not None else "another process"
            raise NodeAlreadyRunning(
                f"a node ({who}) is already running with the data folder {self.path.parent}; two nodes must not "
                "share one journal and one set of containers: stop it first, or give this node its own data folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor drops the lock

    def holder(self) -> int | None:
        """The PID of the process that holds the lock, None when nobody does."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.read(fd, 32).decode("ascii", "replace").strip()
                return int(text) if text.isdigit() else None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def __enter__(self) -> DataFolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
