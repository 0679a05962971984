"""Task-created -> result-visible latency of v6node, beside a bare `docker run --rm`.

Run with:  .venv/bin/python -m benchmarks.dispatch_latency [--sequential 20] [--parallel 50]

Everything is measured in one run on this machine: the real vantage6 4.15.2 server, a
`v6node start` process, and the same echo-algo image started with the docker CLI.

Latency runs from the answer to `POST /api/task` (as a user) until the user's own
websocket receives the run's final `algorithm_status_change`, which the node sends only
after the server has stored the result (checked with a GET). No polling: a poll loop
would load the same 2 cores and the server that the node is being timed on.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from v6node.adapters.socketio import codec

from tests.rig.images import ensure_images
from tests.rig.node_process import NodeProcess, node_config
from tests.rig.paths import image
from tests.rig.server import AdminApi, RealServer, create_federation

IMAGE = image("echo-algo")
FINAL = {"completed", "crashed", "failed", "start failed", "non-existing Docker image", "not allowed",
         "killed by user", "unknown error"}


class StatusWatcher:
    """The user's socket on /tasks; records when each run's final status is announced."""

    def __init__(self, server: RealServer, token: str) -> None:
        self.url = codec.handshake_url(server.root)
        self.token = token
        self.finished: dict[int, tuple[float, str]] = {}
        self._changed = threading.Condition()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("user websocket did not connect")

    def _listen(self) -> None:
        # The server going away at the end of the benchmark ends this thread.
        with contextlib.suppress(ConnectionClosed, OSError):
            self._serve()

    def _serve(self) -> None:
        with ws_connect(self.url, additional_headers={"Authorization": f"Bearer {self.token}"}) as ws:
            ws.recv()  # Engine.IO open
            ws.send(codec.connect_frame("/tasks"))
            for frame in ws:
                packet = codec.decode_eio(frame)
                if packet.type is codec.EioType.PING:
                    ws.send(codec.encode_eio(codec.EioPacket(codec.EioType.PONG)))
                    continue
                if packet.type is not codec.EioType.MESSAGE:
                    continue
                sio = codec.decode_sio(packet.data)
                if sio.type is codec.SioType.CONNECT:
                    self._ready.set()
                elif sio.type is codec.SioType.EVENT:
                    name, args = sio.event
                    if name == "algorithm_status_change" and args and args[0].get("status") in FINAL:
                        with self._changed:
                            self.finished[args[0]["run_id"]] = (time.perf_counter(), args[0]["status"])
                            self._changed.notify_all()

    def wait(self, run_id: int, timeout: float = 120) -> tuple[float, str]:
        with self._changed:
            if not self._changed.wait_for(lambda: run_id in self.finished, timeout):
                raise TimeoutError(f"run {run_id} did not finish within {timeout} s")
            return self.finished[run_id]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bare_docker_run(workdir: Path, i: int) -> float:
    """The same algorithm with the docker CLI: its input and output in a mounted folder."""
    folder = workdir / f"task-{i:09d}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "input").write_text(json.dumps({"method": "echo", "kwargs": {"i": i}}))
    (folder / "output").write_text("")
    target = f"/mnt/data/{folder.name}"
    started = time.perf_counter()
    subprocess.run(
        ["docker", "run", "--rm", "-v", f"{folder}:{target}",
         "-e", f"INPUT_FILE={target}/input", "-e", f"OUTPUT_FILE={target}/output", IMAGE],
        check=True, capture_output=True,
    )
    return time.perf_counter() - started


class User:
    def __init__(self, server: RealServer, username: str, password: str) -> None:
        self.http = httpx.Client(base_url=server.api, timeout=30)
        token = self.http.post("/token/user", json={"username": username, "password": password}).json()
        self.http.headers["Authorization"] = f"Bearer {token['access_token']}"
        self.watcher = StatusWatcher(server, token["access_token"])

    def create_task(self, collaboration: int, organization: int, i: int) -> tuple[int, float]:
        """Returns the run id (one organization, one run) and when the task was created."""
        task_input = base64.b64encode(json.dumps({"method": "echo", "kwargs": {"i": i}}).encode()).decode()
        body = {
            "name": f"bench-{i}", "image": IMAGE, "collaboration_id": collaboration, "description": "",
            "organizations": [{"id": organization, "input": task_input}], "databases": [],
        }
        response = self.http.post("/task", json=body)
        created = time.perf_counter()
        response.raise_for_status()
        (run,) = self.http.get("/run", params={"task_id": response.json()["id"]}).json()["data"]
        return run["id"], created

    def wait_finished(self, run_id: int) -> tuple[float, str]:
        finished, status = self.watcher.wait(run_id)
        stored = self.http.get(f"/run/{run_id}").json()
        assert stored["finished_at"] and stored["status"] == status, stored
        return finished, status


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=50)
    args = parser.parse_args()
    ensure_images(["echo-algo"])
    with tempfile.TemporaryDirectory(prefix="v6node-bench-") as tmp:
        work = Path(tmp)
        server = RealServer(work / "server")
        server.start()
        node = None
        try:
            federation = create_federation(AdminApi(server), "bench", n_orgs=1)
            credentials = federation.nodes[0]
            config = node_config(server, credentials, work / "node")
            config["logging"]["level"] = "INFO"
            node = NodeProcess.write_config(work / "node" / "bench-node.yaml", config)
            node.start()
            user = User(server, federation.user.username, federation.user.password)
            org, collab = credentials.organization_id, federation.collaboration_id

            # Warm-up: first container start, first token, first pull attempt.
            run_id, _ = user.create_task(collab, org, -1)
            user.wait_finished(run_id)
            bare_docker_run(work / "bare", 0)

            latencies, bare = [], []
            for i in range(args.sequential):
                run_id, created = user.create_task(collab, org, i)
                finished, status = user.wait_finished(run_id)
                assert status == "completed", status
                latencies.append(finished - created)
                bare.append(bare_docker_run(work / "bare", i))

            started = time.perf_counter()
            runs = [user.create_task(collab, org, 1000 + i)[0] for i in range(args.parallel)]
            creating = time.perf_counter() - started
            statuses = [user.wait_finished(run_id)[1] for run_id in runs]
            parallel_wall = time.perf_counter() - started
            assert set(statuses) == {"completed"}, statuses

            concurrency = 8  # the node's default max_concurrent_runs
            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(lambda i: bare_docker_run(work / "bare-par", i), range(args.parallel)))
            bare_wall = time.perf_counter() - started
        finally:
            if node is not None:
                node.stop()
            server.stop()

    p50, bare50 = statistics.median(latencies), statistics.median(bare)
    print(f"{args.sequential} sequential tasks (task created -> result visible):")
    print(f"  v6node        p50 {p50 * 1000:7.1f} ms   p90 {percentile(latencies, 0.9) * 1000:7.1f} ms   max {max(latencies) * 1000:7.1f} ms")
    print(f"  docker run    p50 {bare50 * 1000:7.1f} ms   p90 {percentile(bare, 0.9) * 1000:7.1f} ms   max {max(bare) * 1000:7.1f} ms")
    print(f"  overhead over bare docker run, p50: {(p50 - bare50) * 1000:.1f} ms (target <= 150 ms)")
    print(f"{args.parallel} tasks at once:")
    print(f"  v6node wall time              {parallel_wall:6.2f} s   (of which creating the tasks {creating:.2f} s)")
    print(f"  docker run --rm, {concurrency} at a time  {bare_wall:6.2f} s   (ratio {parallel_wall / bare_wall:.2f})")


if __name__ == "__main__":
    main()
