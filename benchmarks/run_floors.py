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

The runs are ``vs_reference``'s bare runs (its labels, ``--rm``); the network and the
volumes it makes carry ``v6node.bench=run-floors`` and are removed at the end.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import uuid
from pathlib import Path

from benchmarks.vs_reference.phases import BARE_CONCURRENCY, bare_docker_run, bare_runs_at_once
from tests.rig.images import ensure_images

LABEL = "v6node.bench=run-floors"


def machine_cpu_seconds() -> float:
    """user + nice + system + irq + softirq of all CPUs, in seconds."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_floors", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each kind for the isolation figure")
    parser.add_argument("--burst", type=int, default=50, help=f"bare runs {BARE_CONCURRENCY} at a time for the CPU figure (0 skips)")
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
        with tempfile.TemporaryDirectory(prefix="v6node-run-floors-") as folder:
            work = Path(folder)
            plain, isolated = [], []
            for i in range(args.runs):
                volume = f"{network}-tmp-{i}"
                volumes.append(volume)
                isolation = [
                    "--network", network, "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                    "--pids-limit", "1024", "--mount", f"type=volume,source={volume},target=/mnt/tmp",
                    "--add-host", "proxyserver:192.0.2.1", "--log-opt", "max-size=10m",
                ]
                plain.append(bare_docker_run(work / "plain", i))
                isolated.append(bare_docker_run(work / "isolated", i, isolation))
            p50_plain, p50_isolated = statistics.median(plain), statistics.median(isolated)
            print(f"docker run --rm, p50 of {args.runs}: plain {p50_plain:.3f} s, with v6node's isolation "
                  f"{p50_isolated:.3f} s, difference {p50_isolated - p50_plain:+.3f} s")
            if args.burst:
                cpu_before = machine_cpu_seconds()
                wall = bare_runs_at_once(work / "burst", args.burst)
                cpu = machine_cpu_seconds() - cpu_before
                print(f"{args.burst} bare runs {BARE_CONCURRENCY} at a time: {wall:.2f} s wall, {cpu:.2f} CPU-seconds "
                      f"of the machine ({cpu / args.burst * 1000:.0f} ms per run; {os.cpu_count()} CPUs)")
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True)
        subprocess.run(["docker", "network", "rm", network], capture_output=True)


if __name__ == "__main__":
    main()
