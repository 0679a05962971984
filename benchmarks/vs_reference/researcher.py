"""The researcher of the benchmark: tasks created over REST, progress heard on the user's websocket.

Both nodes are timed by the same rule. A run's result is *visible* when a ``GET
/run/<id>`` answers with its ``finished_at`` set: after the run's final
``algorithm_status_change`` arrives on the user's socket the researcher asks, and asks
again every 20 ms until it is so (the reference node announces the final status before it
PATCHes the result; v6node after). Nothing is polled before that event, so the harness
does not load the server while a node works. Every REST call the researcher makes is
counted, so that the server's access log can be split into the node's calls and ours.
"""
from __future__ import annotations

import base64
import contextlib
import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from attrs import frozen
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from v6node.adapters.socketio import codec

from tests.rig.server import RealServer, UserCredentials

FINAL = {"completed", "crashed", "failed", "start failed", "non-existing Docker image", "not allowed",
         "killed by user", "unknown error"}
POLL = 0.02


@frozen
class Finished:
    task_id: int
    run_id: int
    status: str
    heard: float  # perf_counter when the final status reached the user's socket


class Researcher:
    """One user: a REST client (calls counted) and a websocket listener on ``/tasks``."""

    def __init__(self, server: RealServer, user: UserCredentials) -> None:
        self._calls = itertools.count()
        self.calls_made = 0
        self.http = httpx.Client(base_url=server.api, timeout=60, event_hooks={"request": [self._count]})
        token = self.http.post("/token/user", json={"username": user.username, "password": user.password})
        token.raise_for_status()
        self.token = token.json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        self._url = codec.handshake_url(server.root)
        self._changed = threading.Condition()
        self.finished: dict[int, Finished] = {}  # by task id (one organization: one run per task)
        self.online: dict[int, list[float]] = {}  # node id -> when the server announced it online
        self._ready = threading.Event()
        self._closing = False
        self._ws = None
        self._thread = threading.Thread(target=self._listen, daemon=True, name="researcher-ws")
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the researcher's websocket did not connect")

    def _count(self, request: httpx.Request) -> None:
        self.calls_made = next(self._calls) + 1

    # --- websocket ----------------------------------------------------------------------------
    def _listen(self) -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            with ws_connect(self._url, additional_headers={"Authorization": f"Bearer {self.token}"},
                            max_size=None) as ws:
                self._ws = ws
                ws.recv()  # Engine.IO open
                ws.send(codec.connect_frame("/tasks"))
                for frame in ws:
                    self._on_frame(ws, frame)

    def _on_frame(self, ws, frame: str | bytes) -> None:
        packet = codec.decode_eio(frame)
        if packet.type is codec.EioType.PING:
            ws.send(codec.encode_eio(codec.EioPacket(codec.EioType.PONG)))
            return
        if packet.type is not codec.EioType.MESSAGE:
            return
        sio = codec.decode_sio(packet.data)
        if sio.type is codec.SioType.CONNECT:
            self._ready.set()
            return
        if sio.type is not codec.SioType.EVENT:
            return
        name, args = sio.event
        now = time.perf_counter()
        data = args[0] if args and isinstance(args[0], dict) else {}
        with self._changed:
            if name == "algorithm_status_change" and data.get("status") in FINAL:
                task_id = data["task_id"]
                self.finished.setdefault(task_id, Finished(task_id, data["run_id"], data["status"], now))
            elif name == "node-online":
                self.online.setdefault(data["id"], []).append(now)
            else:
                return
            self._changed.notify_all()

    def wait_online(self, node_id: int, after: float, timeout: float = 180) -> float:
        """When the server announced ``node_id`` online, the first time after ``after``."""
        def seen() -> float | None:
            return next((t for t in self.online.get(node_id, []) if t >= after), None)

        with self._changed:
            if not self._changed.wait_for(lambda: seen() is not None, timeout):
                raise TimeoutError(f"node {node_id} did not come online within {timeout} s")
            return seen()  # type: ignore[return-value]

    def wait_finished(self, task_ids: list[int], timeout: float) -> list[Finished]:
        with self._changed:
            if not self._changed.wait_for(lambda: all(t in self.finished for t in task_ids), timeout):
                missing = [t for t in task_ids if t not in self.finished]
                raise TimeoutError(f"{len(missing)} of {len(task_ids)} tasks not finished within {timeout} s "
                                   f"(first: {missing[:5]})")
            return [self.finished[t] for t in task_ids]

    # --- REST ------------------------------------------------------------------------------------
    def create_task(self, collaboration_id: int, organization_id: int, image: str, i: int) -> tuple[int, float]:
        """One task for one organization; returns its id and when the server answered."""
        task_input = base64.b64encode(json.dumps({"method": "echo", "kwargs": {"i": i}}).encode()).decode()
        body = {
            "name": f"bench-{i}", "image": image, "collaboration_id": collaboration_id, "description": "",
            "organizations": [{"id": organization_id, "input": task_input}], "databases": [],
        }
        response = self.http.post("/task", json=body)
        created = time.perf_counter()
        if response.status_code != 201:
            raise RuntimeError(f"POST /task -> {response.status_code}: {response.text[:300]}")
        return response.json()["id"], created

    def create_tasks(self, n: int, collaboration_id: int, organization_id: int, image: str,
                     parallel: int = 4, first: int = 0) -> list[tuple[int, float]]:
        with ThreadPoolExecutor(parallel) as pool:
            return list(pool.map(lambda i: self.create_task(collaboration_id, organization_id, image, first + i),
                                 range(n)))

    def visible(self, finished: Finished, timeout: float = 60) -> tuple[float, dict]:
        """When ``GET /run/<id>`` first answers with the result stored, and that run."""
        deadline = time.perf_counter() + timeout
        while True:
            run = self.http.get(f"/run/{finished.run_id}").json()
            answered = time.perf_counter()
            if run.get("finished_at"):
                return answered, run
            if answered > deadline:
                raise TimeoutError(f"run {finished.run_id}: final status heard, result not stored after {timeout} s")
            time.sleep(POLL)

    def open_runs(self, collaboration_id: int) -> int:
        """How many runs of the collaboration are not finished (one small page)."""
        body = self.http.get("/run", params={"collaboration_id": collaboration_id, "state": "open", "per_page": 1}).json()
        if not body["data"]:
            return 0
        last = body["links"]["last"]
        return int(last.rsplit("page=", 1)[1].split("&", 1)[0])

    def delete_node(self, node_id: int) -> None:
        self.http.delete(f"/node/{node_id}")

    def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                self._ws.close()
        self.http.close()
