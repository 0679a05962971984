"""Subtask creation through the algorithm proxy vs directly, and the two-node central/partial task.

Run with:  .venv/bin/python -m benchmarks.proxy_overhead [--requests 50] [--federated-runs 5]

Everything in one run on this machine, against the real vantage6 4.15.2 server (rig).

Part 1, proxy overhead. For an unencrypted and an encrypted collaboration of two
organizations: a user creates a parent task (no node is online, so it stays pending); a
node logs in with its API key and gets a container token for it, exactly as the node does
for an algorithm container. Then ``POST /task`` with that container token and the body
the vantage6 algorithm client sends (``AlgorithmClient.task.create``: name, image,
collaboration, description, base64 input per organization, databases) goes, interleaved
(alternating which goes first), once through our ``StarletteProxyServer`` (running
in-process on 127.0.0.1, in an event loop of its own thread, with the token authorized)
and once directly to the server. Each request opens a new connection, as the algorithm
client (``requests.post`` without a session) does; the proxy keeps its pooled connection
to the server. In the encrypted collaboration the algorithm sends base64 of the
plaintext, which the server refuses, so the direct request carries inputs encrypted once
beforehand for each organization's key (what the proxy forwards); through the proxy the
inputs are encrypted per request: ``GET blobstream/status``, ``GET organization/<id>``
for every organization's public key, then RSA-4096 + AES per organization.

Part 2, the two-node central/partial task: two ``v6node start`` nodes (two organizations,
a CSV database each); a user creates ``central_mean`` (the ``v6-algo`` image) for the
first organization; the central container creates a ``partial_mean`` subtask for both
organizations through its node's proxy, waits for their results and combines them.
Wall time is from the answer to the user's ``POST /api/task`` until the user's own
websocket announces the central run's final status (no polling). The breakdown comes from
the nodes' own log lines (milliseconds).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from v6node.adapters.crypto.base64_cryptor import Base64Cryptor
from v6node.adapters.crypto.rsa_cryptor import RsaCryptor, create_private_key_pem
from v6node.adapters.proxy.starlette_proxy_server import StarletteProxyServer
from v6node.ports.cryptor import Cryptor

from benchmarks.dispatch_latency import User, percentile
from tests.rig.images import ensure_images
from tests.rig.node_process import NodeProcess, node_config
from tests.rig.paths import image
from tests.rig.server import AdminApi, Federation, NodeCredentials, RealServer, create_federation

IMAGE = image("v6-algo")
SUBTASK_INPUT = {"method": "partial_mean", "kwargs": {"column": "age"}}
AGES = ([30, 40, 50], [20, 60, 35, 45])
T = TypeVar("T")


# --- part 1: proxy vs direct ----------------------------------------------------------------------------
class LoopThread:
    """An event loop in a thread of its own, as the node's loop is to the algorithm's process."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bench-proxy-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def as_node(server: RealServer, api_key: str) -> httpx.Client:
    """A client logged in with the node's API key, as the node is."""
    http = httpx.Client(base_url=server.api, timeout=30)
    login = http.post("/token/node", json={"api_key": api_key})
    login.raise_for_status()
    http.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
    return http


def upload_public_key(server: RealServer, node: NodeCredentials, public_key: str) -> None:
    """What a node of an encrypted collaboration does at start (only members may set the key)."""
    http = as_node(server, node.api_key)
    try:
        http.patch(f"/organization/{node.organization_id}", json={"public_key": public_key}).raise_for_status()
    finally:
        http.close()


def container_token(server: RealServer, api_key: str, task_id: int, task_image: str) -> str:
    """What the node does for an algorithm container: log in as the node, ask for the task's token."""
    http = as_node(server, api_key)
    try:
        answer = http.post("/token/container", json={"task_id": task_id, "image": task_image})
        answer.raise_for_status()
        return answer.json()["container_token"]
    finally:
        http.close()


def subtask_body(federation: Federation, inputs: list[str]) -> dict[str, Any]:
    """The body ``AlgorithmClient.task.create`` sends (no study, no store)."""
    return {
        "name": "partial_mean",
        "image": IMAGE,
        "collaboration_id": federation.collaboration_id,
        "description": "partial mean of age",
        "organizations": [{"id": org, "input": text} for org, text in zip(federation.organization_ids, inputs, strict=True)],
        "databases": [{"label": "default"}],
    }


class Side:
    """One way of sending the subtask: a URL, a body, and a client that opens a connection per request."""

    def __init__(self, name: str, url: str, body: dict[str, Any], token: str) -> None:
        self.name = name
        self.url = url
        self.content = json.dumps(body).encode()
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.http = httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))
        self.times: list[float] = []

    def send(self, record: bool = True) -> int:
        started = time.perf_counter()
        response = self.http.post(self.url, content=self.content, headers=self.headers)
        elapsed = time.perf_counter() - started
        if response.status_code != 201:
            raise RuntimeError(f"{self.name}: POST /task -> {response.status_code}: {response.text[:300]}")
        if record:
            self.times.append(elapsed)
        return response.json()["id"]

    def close(self) -> None:
        self.http.close()


def proxy_vs_direct(
    server: RealServer, admin: AdminApi, loop: LoopThread, label: str, encrypted: bool, n: int, warmup: int
) -> dict[str, Any]:
    federation = create_federation(admin, f"px-{label}", n_orgs=2, encrypted=encrypted)
    plaintext = json.dumps(SUBTASK_INPUT).encode()
    plain_inputs = [base64.b64encode(plaintext).decode()] * 2
    cryptor: Cryptor
    cryptors: list[RsaCryptor] = []
    if encrypted:
        cryptors = [RsaCryptor(create_private_key_pem()) for _ in federation.organization_ids]
        for node, own in zip(federation.nodes, cryptors, strict=True):
            upload_public_key(server, node, own.own_public_key())
        cryptor = cryptors[0]
        sent_directly = [cryptor.encrypt_to_str(plaintext, own.own_public_key()) for own in cryptors]
    else:
        cryptor = Base64Cryptor()
        sent_directly = plain_inputs

    user = User(server, federation.user.username, federation.user.password)
    parent_input = json.dumps({"method": "central_mean", "kwargs": {"column": "age"}}).encode()
    parent_input_text = (
        cryptor.encrypt_to_str(parent_input, cryptor.own_public_key()) if encrypted else base64.b64encode(parent_input).decode()
    )
    parent = user.http.post("/task", json={
        "name": "parent", "image": IMAGE, "collaboration_id": federation.collaboration_id, "description": "",
        "organizations": [{"id": federation.organization_ids[0], "input": parent_input_text}],
        "databases": [{"label": "default"}],
    })
    parent.raise_for_status()
    token = container_token(server, federation.nodes[0].api_key, parent.json()["id"], IMAGE)

    proxy = StarletteProxyServer(server.api)
    port = loop.run(proxy.start("127.0.0.1", cryptor))
    proxy.authorize(token)
    sides = [
        Side("proxy", f"http://127.0.0.1:{port}/task", subtask_body(federation, plain_inputs), token),
        Side("direct", f"{server.api}/task", subtask_body(federation, sent_directly), token),
    ]
    try:
        for _ in range(warmup):
            for side in sides:
                side.send(record=False)
        for i in range(n):
            for side in sides if i % 2 == 0 else reversed(sides):
                side.send()
        # A subtask through the proxy is stored as the algorithm meant it.
        by_org = {run["organization"]["id"]: run["input"] for run in admin.runs_of_task(sides[0].send(record=False))}
        assert sorted(by_org) == sorted(federation.organization_ids), by_org
        for i, org in enumerate(federation.organization_ids):
            stored = cryptors[i].decrypt_str(by_org[org]) if encrypted else base64.b64decode(by_org[org])
            assert stored == plaintext, f"organization {org} would get {stored!r}"
    finally:
        for side in sides:
            side.close()
        loop.run(proxy.stop())
        user.http.close()
    proxy_times, direct_times = sides[0].times, sides[1].times
    return {
        "label": label,
        "proxy": proxy_times,
        "direct": direct_times,
        "ratio": statistics.median(proxy_times) / statistics.median(direct_times),
        # Paired: the two requests of one round ran back to back.
        "paired_extra": statistics.median(p - d for p, d in zip(proxy_times, direct_times, strict=True)),
    }


def report_overhead(result: dict[str, Any]) -> None:
    print(f"{result['label']} collaboration, POST /task with a container token, {len(result['proxy'])} each, interleaved:")
    for who in ("proxy", "direct"):
        times = result[who]
        print(f"  {who:7} p50 {statistics.median(times) * 1000:6.1f} ms   p90 {percentile(times, 0.9) * 1000:6.1f} ms"
              f"   min {min(times) * 1000:6.1f} ms")
    print(f"  proxy / direct (p50): {result['ratio']:.2f}x (target <= 1.2); "
          f"paired median extra {result['paired_extra'] * 1000:.1f} ms")


# --- part 2: the two-node central/partial task ------------------------------------------------------------
LINE_TIME = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) ")


class NodeLog:
    """A node's console lines as (epoch seconds, text); the log format has milliseconds."""

    def __init__(self, node: NodeProcess) -> None:
        today = datetime.now().strftime("%Y-%m-%d")
        self.lines: list[tuple[float, str]] = []
        for line in node.output.splitlines():
            stamp = LINE_TIME.match(line)
            if stamp:
                when = datetime.strptime(f"{today} {stamp.group(1)}", "%Y-%m-%d %H:%M:%S.%f").timestamp()
                self.lines.append((when, line))

    def times(self, pattern: str, since: float) -> list[float]:
        found = [when for when, line in self.lines if when >= since and re.search(pattern, line)]
        if not found:
            raise RuntimeError(f"no log line {pattern!r} after {since}")
        return found

    def first(self, pattern: str, since: float) -> re.Match[str]:
        for when, line in self.lines:
            if when >= since and (match := re.search(pattern, line)):
                return match
        raise RuntimeError(f"no log line {pattern!r} after {since}")


def federated_mean(
    server: RealServer, admin: AdminApi, work: Path, runs: int, encrypted: bool, keep_logs: Path | None
) -> list[dict[str, float]]:
    label = "fme" if encrypted else "fm"
    federation = create_federation(admin, label, n_orgs=2, encrypted=encrypted)
    nodes: list[NodeProcess] = []
    keys: list[RsaCryptor] = []
    try:
        for i, credentials in enumerate(federation.nodes):
            home = work / f"{label}-node{i}"
            home.mkdir(parents=True)
            csv = home / "patients.csv"
            csv.write_text("age,name\n" + "".join(f"{age},p{j}\n" for j, age in enumerate(AGES[i])))
            extra: dict[str, Any] = {"databases": [{"label": "default", "uri": str(csv), "type": "csv"}]}
            if encrypted:
                pem = create_private_key_pem()
                (home / "private.pem").write_bytes(pem)
                keys.append(RsaCryptor(pem))
                extra["encryption"] = {"enabled": True, "private_key": str(home / "private.pem")}
            config = node_config(server, credentials, home, **extra)
            config["logging"].update(level="INFO", format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s")
            node = NodeProcess.write_config(home / f"{label}-node{i}.yaml", config)
            nodes.append(node)
            node.start()  # an encrypted node uploads its public key before it is ready
        user = User(server, federation.user.username, federation.user.password)
        central_org = federation.organization_ids[0]
        body = json.dumps({"method": "central_mean", "kwargs": {"column": "age"}}).encode()
        task_input = keys[0].encrypt_to_str(body, keys[0].own_public_key()) if encrypted else base64.b64encode(body).decode()
        expected = sum(sum(ages) for ages in AGES) / sum(len(ages) for ages in AGES)
        timings = []
        for attempt in range(runs + 1):  # the first is a warm-up (first container start, first token)
            response = user.http.post("/task", json={
                "name": f"central-{attempt}", "image": IMAGE, "collaboration_id": federation.collaboration_id,
                "description": "", "databases": [{"label": "default"}],
                "organizations": [{"id": central_org, "input": task_input}],
            })
            created, created_epoch = time.perf_counter(), time.time()
            response.raise_for_status()
            task_id = response.json()["id"]
            (run,) = user.http.get("/run", params={"task_id": task_id}).json()["data"]
            finished, status = user.wait_finished(run["id"])
            assert status == "completed", status
            wall = finished - created
            (stored,) = user.http.get("/result", params={"task_id": task_id}).json()["data"]
            plain = keys[0].decrypt_str(stored["result"]) if encrypted else base64.b64decode(stored["result"])
            result = json.loads(plain)
            assert abs(result["mean"] - expected) < 1e-9 and result["organizations"] == 2, result
            (child,) = admin.get("/task", parent_id=task_id)["data"]
            if attempt:
                time.sleep(0.2)  # the nodes' last lines of this run reach their console
                timings.append(breakdown(nodes, run["id"], task_id, child["id"], created_epoch - 0.001, wall))
        user.http.close()
        return timings
    finally:
        for i, node in enumerate(nodes):
            node.stop()
            if keep_logs is not None:
                keep_logs.mkdir(parents=True, exist_ok=True)
                (keep_logs / f"{label}-node{i}.log").write_text(node.output)


def breakdown(
    nodes: list[NodeProcess], central_run: int, task_id: int, child_task: int, since: float, wall: float
) -> dict[str, float]:
    """Phases of one central_mean run from the nodes' log lines (the first node runs the central part)."""
    central, *_ = logs = [NodeLog(node) for node in nodes]
    created = since + 0.001
    started = central.times(rf"run {central_run} \(task {task_id}\) started", since)[0]
    first_request = central.times(r"v6node\.proxy INFO (GET|POST) /", started)[0]
    subtask_sent = central.times(r"POST /task -> 201", started)[0]
    partials_started = max(log.times(rf"\(task {child_task}\) started", since)[0] for log in logs)
    partials_reported = max(log.times(r"reported: completed", partials_started)[0] for log in logs)
    seen_done = central.times(rf"GET /task/{child_task}/status -> 200", partials_reported)[0]
    exited = central.times(rf"run {central_run} exited", since)[0]
    return {
        "wall": wall,
        "task created -> central container started": started - created,
        "central started -> its first proxy request": first_request - started,
        "first proxy request -> subtask created": subtask_sent - first_request,
        "  of which POST /task in the proxy": float(central.first(r"POST /task -> 201 \((\d+) ms\)", started)[1]) / 1000,
        "subtask created -> both partials started": partials_started - subtask_sent,
        "partials started -> both reported": partials_reported - partials_started,
        "partials reported -> central sees them done": seen_done - partials_reported,
        "central sees them done -> central exited": exited - seen_done,
        "central exited -> result visible to the user": created + wall - exited,
    }


def report_federated(label: str, timings: list[dict[str, float]]) -> None:
    print(f"two-node central_mean ({label}), task created -> result visible, {len(timings)} runs:")
    walls = [t["wall"] for t in timings]
    print(f"  wall time median {statistics.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f}); "
          f"each: {', '.join(f'{w:.2f}' for w in walls)}")
    print("  breakdown (median of each phase, from the nodes' log lines):")
    for key in timings[0]:
        if key != "wall":
            print(f"    {key:48} {statistics.median(t[key] for t in timings) * 1000:6.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50, help="subtask creations per side and collaboration")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--federated-runs", type=int, default=5)
    parser.add_argument("--skip-federated", action="store_true")
    parser.add_argument("--keep-logs", type=Path, help="write the two nodes' console output into this folder")
    args = parser.parse_args()
    ensure_images(["v6-algo"])
    with tempfile.TemporaryDirectory(prefix="v6node-bench-") as tmp:
        work = Path(tmp)
        server = RealServer(work / "server")
        server.start()
        loop = LoopThread()
        try:
            admin = AdminApi(server)
            results = [
                proxy_vs_direct(server, admin, loop, label, encrypted, args.requests, args.warmup)
                for label, encrypted in (("unencrypted", False), ("encrypted", True))
            ]
            for result in results:
                report_overhead(result)
            if not args.skip_federated:
                for label, encrypted in (("unencrypted", False), ("encrypted", True)):
                    timings = federated_mean(server, admin, work, args.federated_runs, encrypted, args.keep_logs)
                    report_federated(label, timings)
        finally:
            loop.close()
            server.stop()


if __name__ == "__main__":
    main()
