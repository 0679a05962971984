"""A researcher using the real vantage6 UserClient, driven from the tests."""
from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.rig.paths import RIG_SRC, SERVER_PYTHON
from tests.rig.server import RealServer, UserCredentials


class ResearcherError(RuntimeError):
    pass


class Researcher:
    """One long-lived UserClient process; each call is a JSON line there and back."""

    def __init__(self, server: RealServer, user: UserCredentials, private_key: str | None = None) -> None:
        args = [
            str(SERVER_PYTHON), str(RIG_SRC / "researcher_bridge.py"),
            server.url, str(server.port), "/api", user.username, user.password,
        ]
        if private_key:
            args.append(private_key)
        self._process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
        )
        self._read()  # "ready" once logged in

    def _read(self) -> Any:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise ResearcherError(f"the client process ended (exit code {self._process.poll()})")
        answer = json.loads(line)
        if not answer["ok"]:
            raise ResearcherError(answer["error"])
        return answer["result"]

    def call(self, op: str, **args: Any) -> Any:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        self._process.stdin.flush()
        return self._read()

    def create_task(self, collaboration: int, organizations: list[int], image: str, input: dict, **kw: Any) -> dict:
        return self.call("create_task", collaboration=collaboration, organizations=organizations, image=image, input=input, **kw)

    def wait_for_results(self, task_id: int, interval: float = 0.2) -> list[dict]:
        """The task's results once it has finished; each ``result`` is the decoded JSON text."""
        return self.call("wait_for_results", task_id=task_id, interval=interval)["data"]

    def runs(self, task_id: int) -> list[dict]:
        return self.call("runs", task_id=task_id)["data"]

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> Researcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
