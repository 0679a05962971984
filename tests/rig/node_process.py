"""Run ``v6node start`` as its own process, the way an operator would."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.rig.paths import image
from tests.rig.server import NodeCredentials, RealServer

READY_MARK = "ready; algorithm proxy at "


def node_config(server: RealServer, node: NodeCredentials, data_dir: Path, **extra: Any) -> dict[str, Any]:
    """A vantage6 4.x node config, as `v6 node new` would write it, for the rig's server."""
    config: dict[str, Any] = {
        "api_key": node.api_key,
        "server_url": server.url,
        "port": server.port,
        "api_path": "/api",
        "task_dir": str(data_dir / "tasks"),
        "databases": [],
        "encryption": {"enabled": False, "private_key": ""},
        "logging": {
            "level": "DEBUG",
            "use_console": True,
            "backup_count": 2,
            "max_size": 1024,
            "format": "%(asctime)s %(name)s %(levelname)s %(message)s",
            "datefmt": "%H:%M:%S",
            "loggers": [{"name": "websockets", "level": "INFO"}],
        },
        "policies": {"require_algorithm_pull": False},
        # Any local busybox image can check that algorithms reach the proxy (no pulls in tests).
        "proxy_check_image": image("echo-algo"),
        "directories": {"data": str(data_dir / "data"), "log": str(data_dir / "log")},
    }
    config.update(extra)
    return config


class NodeProcess:
    """``v6node start -c <file>`` in a subprocess; its console output is kept in ``lines``.

    ``env`` is added to the test's own environment (e.g. ``DOCKER_HOST`` for another engine).
    """

    def __init__(self, config_file: Path, env: dict[str, str] | None = None, executable: Path | None = None) -> None:
        self.config_file = Path(config_file)
        # The project venv's ``v6node`` unless another install's is given (benchmarks).
        self.executable = executable or Path(sys.executable).with_name("v6node")
        self.env = dict(env or {})
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @classmethod
    def write_config(cls, path: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> NodeProcess:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        return cls(path, env)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def start(self, wait: bool = True, timeout: float = 90.0) -> None:
        self._process = subprocess.Popen(
            [str(self.executable), "start", "-c", str(self.config_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait:
            self.wait_ready(timeout)

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def mark(self) -> int:
        """A position in the output, for ``wait_for(..., since=mark)``."""
        with self._changed:
            return len(self.lines)

    def output_since(self, mark: int) -> str:
        with self._changed:
            return "".join(self.lines[mark:])

    def wait_for(self, text: str, timeout: float = 60.0, since: int = 0) -> None:
        """Until the node prints ``text`` (after line ``since``); fails early when the process ends first."""
        self.wait_until(lambda output: text in output, f"print {text!r}", timeout, since)

    def wait_until(self, condition: Callable[[str], bool], what: str, timeout: float = 60.0, since: int = 0) -> None:
        """Until ``condition(output after line since)`` holds; fails early when the process ends first."""
        with self._changed:
            found = self._changed.wait_for(lambda: condition(self.output_since(since)) or self._ended, timeout)
            holds = condition(self.output_since(since))
        if not found or not holds:
            raise RuntimeError(f"v6node did not {what} within {timeout:g} s:\n{self.output[-4000:]}")

    def wait_ready(self, timeout: float = 90.0) -> None:
        self.wait_for(READY_MARK, timeout)

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self._process is not None
        code = self._process.wait(timeout)
        if self._reader is not None:
            self._reader.join(5)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` and wait; returns the exit code."""
        if self._process is None:
            return 0
        if self._process.poll() is None:
            self._process.send_signal(sig)
        try:
            return self.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            return self.wait_exit(timeout)

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def memory_kib(self) -> dict[str, int]:
        """``VmRSS`` (now) and ``VmHWM`` (peak resident set) of the node process, in KiB."""
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
        return fields

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> NodeProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
