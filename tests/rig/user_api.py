"""A user on the server's REST API directly: many tasks fast, and kills (the real client is slower)."""
from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.rig.server import RealServer, UserCredentials


class UserApi:
    """Logged in as ``user``; the token lasts hours, longer than any test."""

    def __init__(self, server: RealServer, user: UserCredentials) -> None:
        self.http = httpx.Client(base_url=server.api, timeout=60)
        body = {"username": user.username, "password": user.password}
        token = self._ok(self.http.post("/token/user", json=body))["access_token"]
        self.http.headers["Authorization"] = f"Bearer {token}"

    @staticmethod
    def _ok(response: httpx.Response) -> Any:
        if response.status_code >= 300:
            raise RuntimeError(f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text}")
        return response.json()

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

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> UserApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
