"""Which swarm rig owns which address block: one folder per block, claimed atomically, held by a lock.

A rig claims block ``<n>`` (10.<n>.0.0/24 and every name ``v6sw<n>*``) by renaming a
folder that already holds its ``lock`` (``flock``-ed by the test process) and ``owner`` to
``/tmp/v6sw<n>``: the rename fails when that folder exists (it is never empty), so two rigs
never get one block, and nobody sees the folder without its lock. The kernel drops the lock
when the test process ends, however it ends (the daemons, in sessions of their own, do not
inherit it), so a folder whose lock can be taken belongs to a rig whose test process
died, and whoever takes the lock, one process whatever else runs, removes what that rig
left. The folder is released last: renamed out of the way (which frees the block at
once, in one step), then deleted. Names of a block that has no folder (a rig that died
part-way through its removal) are removed by whoever claims that block for the purpose.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from attrs import define

from tests.rig.dockerd import _as_root

PREFIX = "v6sw"
TMP = Path("/tmp")


def root_of(block: int) -> Path:
    return TMP / f"{PREFIX}{block}"


@define
class Claim:
    """Block ``block`` is this process's while ``fd`` (the lock) is open."""

    block: int
    root: Path
    fd: int | None

    def release(self) -> None:
        """Free the block (one rename), then delete its folder and drop the lock."""
        if self.root.exists():
            gone = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-gone-", dir=TMP))
            os.rename(self.root, gone / "rig")
            _delete(gone)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _delete(folder: Path) -> None:
    with contextlib.suppress(OSError):  # no sudo at all
        _as_root(["rm", "-rf", "--one-file-system", str(folder)], check=False)  # the daemons' files are root's
    shutil.rmtree(folder, ignore_errors=True)  # without root: the test's own files


def _locked(path: Path, wait: bool) -> int | None:
    """An open, flock-ed descriptor of ``path``; None when another process holds the lock."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def try_claim(block: int) -> Claim | None:
    """Block ``block`` for this process, or None when a folder (a rig, live or dead) has it."""
    staging = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-claim-", dir=TMP))
    fd = os.open(staging / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # waits only if a clean-up took it meanwhile (then the rename fails)
    (staging / "owner").write_text(f"{os.getpid()}\n")
    try:
        os.rename(staging, root_of(block))
    except OSError:  # ENOTEMPTY / EEXIST: the block's folder is there
        os.close(fd)
        shutil.rmtree(staging, ignore_errors=True)
        return None
    return Claim(block, root_of(block), fd)


def blocks_in_use(namespaces: list[str]) -> set[int]:
    """Blocks with a folder, a network namespace or a host link of their own."""
    found = {int(m.group(1)) for path in TMP.glob(f"{PREFIX}*") if (m := re.fullmatch(rf"{PREFIX}(\d+)", path.name))}
    found |= {int(m.group(1)) for ns in namespaces if (m := re.match(rf"^{PREFIX}(\d+)-", ns))}
    return found


def take_over_stale(block: int, has_processes: Callable[[], bool]) -> Claim | None:
    """The claim of a dead rig's block, for its removal; None when a live rig holds it, or
    when a folderless block's namespaces run processes (nothing says whose: not ours to end)."""
    root = root_of(block)
    if root.is_dir():
        fd = _locked(root / "lock", wait=False)
        return None if fd is None else Claim(block, root, fd)
    if has_processes():
        return None
    return try_claim(block)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def remove_stale_staging() -> None:
    """Folders of claims that never completed, and of releases cut short (their process died)."""
    for path in TMP.glob(f"{PREFIX}-claim-*"):
        if (path / "lock").exists():
            fd = _locked(path / "lock", wait=False)
            if fd is None:
                continue  # its process is claiming a block now
            os.close(fd)
        elif time.time() - _mtime(path) < 60:
            continue  # made a moment ago, its lock next
        shutil.rmtree(path, ignore_errors=True)
    for path in TMP.glob(f"{PREFIX}-gone-*"):  # nothing in it is anyone's: deleting it twice is harmless
        _delete(path)
