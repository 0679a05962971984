"""A researcher using the real vantage6 UserClient, driven from the tests."""
from __future__ import annotations

import subprocess
from typing import Any

from tests.rig.json_lines import JsonLinesProcess
from tests.rig.paths import RIG_SRC
from tests.rig.server import RealServer, UserCredentials


class Researcher(JsonLinesProcess):
    """One long-lived UserClient process; each call is a JSON line there and back."""

    what = "the vantage6 client process"

    def __init__(self, server: RealServer, user: UserCredentials, private_key: str | None = None) -> None:
        args = [server.url, str(server.port), "/api", user.username, user.password]
        if private_key:
            args.append(private_key)
        super().__init__(str(RIG_SRC / "researcher_bridge.py"), *args, stderr=subprocess.DEVNULL)

    def create_task(self, collaboration: int, organizations: list[int], image: str, input: dict, **kw: Any) -> dict:
        return self.call("create_task", collaboration=collaboration, organizations=organizations, image=image, input=input, **kw)

    def wait_for_results(self, task_id: int, interval: float = 0.2) -> list[dict]:
        """The task's results once it has finished; each ``result`` is the decoded JSON text."""
        return self.call("wait_for_results", task_id=task_id, interval=interval)["data"]

    def runs(self, task_id: int) -> list[dict]:
        return self.call("runs", task_id=task_id)["data"]
