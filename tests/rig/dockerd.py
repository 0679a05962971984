"""Restart the rig's Docker engine the way ``scripts/setup-rig`` starts it."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import docker

from tests.rig.paths import RIG_DIR

PID_FILE = Path("/var/run/docker.pid")


def engine_pid() -> int:
    return int(PID_FILE.read_text().strip())


def _answers() -> bool:
    try:
        client = docker.from_env(timeout=5)
        try:
            client.ping()
            return True
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - anything short of an answer means "not yet"
        return False


def _as_root(command: list[str]) -> None:
    """Like setup-rig's ``as_root``: directly as root, else through sudo."""
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run([*prefix, *command], stdin=subprocess.DEVNULL, check=True, start_new_session=True)


def _alive(pid: int) -> bool:
    """Still running: not gone, and not a zombie its parent has yet to reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_dockerd(timeout: float = 60.0) -> None:
    """SIGTERM to the engine (by its pid file), then wait until the process is gone.

    The engine stops the containers it runs first (SIGTERM, SIGKILL after their stop timeout).
    """
    pid = engine_pid()
    _as_root(["kill", "-TERM", str(pid)])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    raise RuntimeError(f"dockerd (pid {pid}) did not stop within {timeout} s")


def start_dockerd(timeout: float = 60.0) -> None:
    """``nohup dockerd`` in the background, in a session of its own, so it outlives the test run."""
    RIG_DIR.mkdir(parents=True, exist_ok=True)
    log = RIG_DIR / "dockerd.log"
    # As setup-rig does it: the shell backgrounds dockerd and exits, so nothing here owns it.
    _as_root(["sh", "-c", f"nohup dockerd >>'{log}' 2>&1 &"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers():
            return
        time.sleep(0.2)
    raise RuntimeError(f"dockerd did not answer within {timeout} s; see {RIG_DIR / 'dockerd.log'}")


def restart_dockerd() -> None:
    stop_dockerd()
    start_dockerd()
