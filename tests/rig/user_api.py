"""A user on the server's REST API directly: many tasks fast, and kills (the real client is slower)."""
from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from tests.rig.server import AdminApi, RealServer, UserCredentials


class UserApi(AdminApi):
    """Logged in as ``user``; the token lasts hours, longer than any test."""

    def __init__(self, server: RealServer, user: UserCredentials) -> None:
        super().__init__(server, user.username, user.password, timeout=60)

    def create_task(self, collaboration_id: int, organization_ids: list[int], image: str, task_input: dict, name: str = "task") -> dict:
        """As the vantage6 client does it in an unencrypted collaboration: input = base64(JSON)."""
        encoded = base64.b64encode(json.dumps(task_input).encode()).decode()
        body = {
            "name": name,
            "description": "",
            "image": image,
            "collaboration_id": collaboration_id,
            "organizations": [{"id": org, "input": encoded} for org in organization_ids],
            "databases": [],
        }
        return self._ok(self.http.post("/task", json=body))

    def create_tasks(self, n: int, collaboration_id: int, organization_ids: list[int], image: str, parallel: int = 4) -> list[dict]:
        """``n`` tasks, ``parallel`` requests at a time; the i-th task's input carries ``i``."""
        def one(i: int) -> dict:
            return self.create_task(collaboration_id, organization_ids, image, {"method": "echo", "kwargs": {"i": i}}, f"task-{i}")

        with ThreadPoolExecutor(parallel) as pool:
            return list(pool.map(one, range(n)))

    def kill_task(self, task_id: int) -> dict:
        return self._ok(self.http.post("/kill/task", json={"id": task_id}))
