"""The phases, run the same way against one node: start-up, idle, sequential, burst, scale.

Each phase returns plain numbers (a dict that goes into the JSON as it is). The floor of
each latency and throughput phase, a bare ``docker run --rm`` of the same image, is
measured beside it (interleaved with the sequential tasks, right after the burst).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from attrs import define

from benchmarks.vs_reference.measure import AccessLog, Sampler, cpu, cpu_seconds, memory
from benchmarks.vs_reference.nodes import BENCH_LABELS, NodeUnderTest
from benchmarks.vs_reference.researcher import Researcher
from tests.rig.paths import image
from tests.rig.server import RealServer

IMAGE = image("echo-algo")
BARE_CONCURRENCY = 8  # v6node's default max_concurrent_runs; the reference has no limit


@define
class Bench:
    """What every phase needs: the server, the node, the researcher of its collaboration."""

    server: RealServer
    access_log: AccessLog
    node: NodeUnderTest
    researcher: Researcher
    collaboration_id: int
    organization_id: int
    work: Path
    counter: int = 0

    def task_index(self) -> int:
        self.counter += 1
        return self.counter

    def create_task(self) -> tuple[int, float]:
        return self.researcher.create_task(self.collaboration_id, self.organization_id, IMAGE, self.task_index())

    def create_tasks(self, n: int) -> list[tuple[int, float]]:
        first = self.counter + 1
        self.counter += n
        return self.researcher.create_tasks(n, self.collaboration_id, self.organization_id, IMAGE, first=first)

    def all_visible(self, timeout: float = 120) -> float:
        """When the server first lists none of the collaboration's runs as open."""
        deadline = time.perf_counter() + timeout
        while True:
            if self.researcher.open_runs(self.collaboration_id) == 0:
                return time.perf_counter()
            if time.perf_counter() > deadline:
                raise TimeoutError(f"runs still open after {timeout} s")
            time.sleep(0.02)


@define
class Window:
    """Server requests, server CPU and node CPU between ``open`` and ``close``."""

    bench: Bench
    log_mark: int = 0
    calls_by_us: int = 0
    server_cpu: float = 0.0
    node_cpu_ns: int = 0

    def open(self) -> Window:
        self.log_mark = self.bench.access_log.mark()
        self.calls_by_us = self.bench.researcher.calls_made
        self.server_cpu = cpu_seconds(self.bench.server.pid)
        self.node_cpu_ns = cpu(self.bench.node.pids()).cpu_ns
        return self

    def close(self, runs: int, node_cpu_from_start: bool = False) -> dict[str, Any]:
        time.sleep(0.3)  # the server writes a request's log line just after answering it
        requests = self.bench.access_log.between(self.log_mark)
        ours = self.bench.researcher.calls_made - self.calls_by_us
        node_calls = requests.total - ours
        node_cpu = cpu(self.bench.node.pids()).cpu_ns - (0 if node_cpu_from_start else self.node_cpu_ns)
        server_cpu = cpu_seconds(self.bench.server.pid) - self.server_cpu
        return {
            "runs": runs,
            "rest_calls_node": node_calls,
            "rest_calls_researcher": ours,
            "rest_calls_per_run": node_calls / runs if runs else None,
            "rest_calls_by_endpoint": requests.by_endpoint,
            "server_request_s": requests.server_seconds,  # the server's own time for every request
            "server_request_s_by_endpoint": requests.seconds_by_endpoint,
            "server_cpu_s": server_cpu,
            "server_cpu_per_run_ms": server_cpu / runs * 1000 if runs else None,
            "node_cpu_s": node_cpu / 1e9,
            "node_cpu_per_run_ms": node_cpu / 1e6 / runs if runs else None,
        }


def bare_docker_run(work: Path, i: int, options: Sequence[str] = ()) -> float:
    """The same algorithm with the docker CLI: its input and output in a mounted folder
    (``options``: more ``docker run`` options)."""
    folder = work / f"task-{i:09d}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "input").write_text(json.dumps({"method": "echo", "kwargs": {"i": i}}))
    (folder / "output").write_text("")
    target = f"/mnt/data/{folder.name}"
    labels = [arg for key, value in BENCH_LABELS.items() for arg in ("--label", f"{key}={value}")]
    started = time.perf_counter()
    subprocess.run(
        ["docker", "run", "--rm", *labels, *options, "-v", f"{folder}:{target}",
         "-e", f"INPUT_FILE={target}/input", "-e", f"OUTPUT_FILE={target}/output", IMAGE],
        check=True, capture_output=True,
    )
    return time.perf_counter() - started


def bare_runs_at_once(work: Path, n: int) -> float:
    """``n`` bare runs, ``BARE_CONCURRENCY`` at a time: their wall time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(BARE_CONCURRENCY) as pool:
        list(pool.map(lambda i: bare_docker_run(work, i), range(n)))
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- phases -------------------------------------------------------------------------------------
def start_up(bench: Bench, timeout: float) -> dict[str, Any]:
    """A task waits while the node is down; start -> online at the server -> that task's result visible."""
    task_id, _ = bench.create_task()
    window = Window(bench).open()
    started = bench.node.start()
    online = bench.researcher.wait_online(bench.node.credentials.node_id, started, timeout)
    (finished,) = bench.researcher.wait_finished([task_id], timeout)
    visible, run = bench.researcher.visible(finished)
    if run["status"] != "completed":
        raise RuntimeError(f"the pre-queued run ended '{run['status']}': {run.get('log')}")
    return {
        "online_s": online - started,
        "first_task_done_s": visible - started,
        **window.close(runs=1, node_cpu_from_start=True),
        "log": bench.node.start_log(),
    }


def idle(bench: Bench, seconds: float, settle: float) -> dict[str, Any]:
    """CPU and wake-ups of a node with nothing to do, then its memory."""
    time.sleep(settle)  # the start-up's last requests and log lines
    pids = bench.node.pids()
    window = Window(bench).open()
    before = cpu(pids)
    time.sleep(seconds)
    after = cpu(pids)
    mem = memory(bench.node.pids())
    return {
        "seconds": seconds,
        "cpu_percent": (after.cpu_ns - before.cpu_ns) / (seconds * 1e9) * 100,
        "wakeups_per_s": (after.switches - before.switches) / seconds,
        "rss_mib": mem.rss_kib / 1024,
        "pss_mib": mem.pss_kib / 1024,
        "processes": len(pids),
        "rest_calls": window.close(runs=0)["rest_calls_node"],
    }


def sequential(bench: Bench, n: int, timeout: float) -> dict[str, Any]:
    """``n`` tasks one after the other, each followed by a bare docker run of the same image."""
    bare_docker_run(bench.work / "bare", 0)  # warm-up
    latencies, bare = [], []
    window = Window(bench).open()
    for i in range(n):
        task_id, created = bench.create_task()
        (finished,) = bench.researcher.wait_finished([task_id], timeout)
        visible, run = bench.researcher.visible(finished)
        if run["status"] != "completed":
            raise RuntimeError(f"run {finished.run_id} ended '{run['status']}': {run.get('log')}")
        latencies.append(visible - created)
        bare.append(bare_docker_run(bench.work / "bare", i + 1))
    costs = window.close(runs=n)
    p50, bare50 = statistics.median(latencies), statistics.median(bare)
    return {
        "n": n, "p50_s": p50, "p90_s": percentile(latencies, 0.9), "max_s": max(latencies),
        "bare_p50_s": bare50, "bare_p90_s": percentile(bare, 0.9),
        "overhead_p50_s": p50 - bare50,
        "latencies_s": latencies, "bare_s": bare, **costs,
    }


def burst(bench: Bench, n: int, timeout: float) -> dict[str, Any]:
    """``n`` tasks posted at once (4 requests at a time) -> all results visible; then the bare floor."""
    window = Window(bench).open()
    started = time.perf_counter()
    tasks = bench.create_tasks(n)
    created = time.perf_counter()
    bench.researcher.wait_finished([task_id for task_id, _ in tasks], timeout)
    done = bench.all_visible()
    costs = window.close(runs=n)
    statuses = {bench.researcher.finished[task_id].status for task_id, _ in tasks}
    if statuses != {"completed"}:
        raise RuntimeError(f"burst runs ended {statuses}")
    bare_wall = bare_runs_at_once(bench.work / "bare-burst", n)
    wall = done - started
    return {
        "n": n, "wall_s": wall, "tasks_per_s": n / wall, "creating_s": created - started,
        "after_last_created_s": done - created,
        "bare_wall_s": bare_wall, "bare_tasks_per_s": n / bare_wall, "wall_over_bare": wall / bare_wall,
        **costs,
    }


def scale(bench: Bench, n: int, timeout: float) -> dict[str, Any]:
    """The node stops; ``n`` tasks are created; it starts again and drains them."""
    bench.node.stop()
    creating = time.perf_counter()
    tasks = bench.create_tasks(n)
    creating = time.perf_counter() - creating
    task_ids = [task_id for task_id, _ in tasks]
    window = Window(bench).open()
    researcher = bench.researcher
    started = bench.node.start()

    def probe() -> tuple[float, int, int] | None:
        """(seconds since the start, runs finished, the node's RSS in KiB)."""
        pids = bench.node.pids()
        if not pids:
            return None
        finished = sum(1 for t in task_ids if t in researcher.finished)
        return time.perf_counter() - started, finished, memory(pids).rss_kib

    with Sampler(probe) as sampler:
        researcher.wait_finished(task_ids, timeout)
        done = bench.all_visible(timeout=300)
        last = probe()  # the sampler may not have looked since the last run finished
        peak = memory(bench.node.pids()).peak_rss_kib
    if last is not None:
        sampler.samples.append(last)
    samples = sampler.samples
    costs = window.close(runs=n, node_cpu_from_start=True)
    statuses = {researcher.finished[t].status for t in task_ids}
    drain = done - started
    return {
        "n": n, "creating_s": creating, "drain_s": drain, "tasks_per_s": n / drain,
        "peak_rss_mib": peak / 1024,
        "rss_mib_at": _rss_profile(samples, n),
        "statuses": sorted(statuses),
        **costs,
    }


def _rss_profile(samples: list[tuple[float, int, int]], n: int) -> dict[str, float]:
    """RSS (MiB) when 10 %, 50 % and all of the runs had finished: flat or growing."""
    profile = {}
    for share in (0.1, 0.5, 1.0):
        reached = [rss for _, done, rss in samples if done >= share * n]
        if reached:
            profile[f"{int(share * 100)}%"] = reached[0] / 1024
    if samples:
        profile["max"] = max(rss for _, _, rss in samples) / 1024
    return profile
