"""What a run costs in Docker alone, the floors under the side-by-side goals:
``python -m benchmarks.run_floors [--runs 15] [--burst 50]``.

- **isolation**: the same echo algorithm with the docker CLI, alternately as ``vs_reference``'s
  floor runs it (``docker run --rm`` on the default bridge, its folder mounted) and with what
  v6node gives every algorithm container (an internal network without traffic between
  containers, ``--cap-drop ALL``, ``no-new-privileges``, a pids limit, a temporary volume, the
  proxy's host name, a capped log): p50 of each and the difference, which is part of any
  node's per-run time that isolates algorithms as v6node does.
- **burst CPU**: ``--burst`` bare runs 8 at a time (``max_concurrent_runs``' default): wall time
  and the machine's CPU seconds (``/proc/stat``) they take; with the server's and the node's
  CPU per run (``vs_reference``'s burst phase) this is the CPU a burst needs on this machine.

Everything it makes carries ``v6node.bench=run-floors`` and is removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.rig.images import ensure_images
from tests.rig.paths import image

IMAGE = image("echo-algo")
LABEL = "v6node.bench=run-floors"
TARGET = "/mnt/data/task"


def machine_cpu_seconds() -> float:
    """user + nice + system + irq + softirq of all CPUs, in seconds."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def task_folder(work: Path, i: int) -> Path:
    folder = work / f"task-{i}"
    folder.mkdir()
    (folder / "input").write_text(json.dumps({"method": "echo", "kwargs": {"i": i}}))
    (folder / "output").write_text("")
    return folder


def docker_run(folder: Path, isolation: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["docker", "run", "--rm", "--label", LABEL, *isolation, "-v", f"{folder}:{TARGET}",
         "-e", f"INPUT_FILE={TARGET}/input", "-e", f"OUTPUT_FILE={TARGET}/output", IMAGE],
        check=True, capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_floors", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each kind for the isolation figure")
    parser.add_argument("--burst", type=int, default=50, help="bare runs 8 at a time for the CPU figure (0 skips)")
    args = parser.parse_args()
    ensure_images(["echo-algo"])
    network = f"v6node-run-floors-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["docker", "network", "create", "--internal", "--label", LABEL,
         "-o", "com.docker.network.bridge.enable_icc=false", network],
        check=True, capture_output=True,
    )
    volumes: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="v6node-run-floors-") as work:
            plain, isolated = [], []
            for i in range(args.runs):
                volume = f"{network}-tmp-{i}"
                volumes.append(volume)
                isolation = [
                    "--network", network, "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                    "--pids-limit", "1024", "--mount", f"type=volume,source={volume},target=/mnt/tmp",
                    "--add-host", "proxyserver:192.0.2.1", "--log-opt", "max-size=10m",
                ]
                plain.append(docker_run(task_folder(Path(work), 2 * i), []))
                isolated.append(docker_run(task_folder(Path(work), 2 * i + 1), isolation))
            p50_plain, p50_isolated = statistics.median(plain), statistics.median(isolated)
            print(f"docker run --rm, p50 of {args.runs}: plain {p50_plain:.3f} s, with v6node's isolation "
                  f"{p50_isolated:.3f} s, difference {p50_isolated - p50_plain:+.3f} s")
            if args.burst:
                folders = [task_folder(Path(work), 10_000 + i) for i in range(args.burst)]
                cpu_before, started = machine_cpu_seconds(), time.perf_counter()
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda folder: docker_run(folder, []), folders))
                wall, cpu = time.perf_counter() - started, machine_cpu_seconds() - cpu_before
                print(f"{args.burst} bare runs 8 at a time: {wall:.2f} s wall, {cpu:.2f} CPU-seconds of the machine "
                      f"({cpu / args.burst * 1000:.0f} ms per run; {os.cpu_count()} CPUs)")
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True)
        subprocess.run(["docker", "network", "rm", network], capture_output=True)


if __name__ == "__main__":
    main()
