"""A helper process in the rig's server venv that answers JSON requests line by line."""
from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.rig.paths import SERVER_PYTHON


class BridgeError(RuntimeError):
    """The helper raised; the text starts with its exception type."""


class JsonLinesProcess:
    """Runs ``script`` with the server venv's Python; each ``call`` is one line there and back.

    The script answers ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ...}``, and
    first a ``"ready"`` result once it is set up.
    """

    what = "the helper process"

    def __init__(self, script: str, *args: str, stderr: int | None = None) -> None:
        if not SERVER_PYTHON.exists():
            raise RuntimeError(f"no server venv at {SERVER_PYTHON}: run scripts/setup-rig first")
        self._process = subprocess.Popen(  # noqa: S603 - our own scripts
            [str(SERVER_PYTHON), script, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1,
        )
        ready = self._answer()
        if ready != "ready":
            raise RuntimeError(f"{self.what} did not start: {ready!r}")

    def call(self, op: str, **args: Any) -> Any:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        self._process.stdin.flush()
        return self._answer()

    def _answer(self) -> Any:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise BridgeError(f"{self.what} ended (exit code {self._process.wait()})")
        answer = json.loads(line)
        if not answer["ok"]:
            raise BridgeError(answer["error"])
        return answer["result"]

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self):  # noqa: ANN204 - returns the subclass
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
