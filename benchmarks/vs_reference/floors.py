"""Floors under the start-up and memory rows: what loading a node's code costs before it does anything.

For each node, ``repeats`` fresh processes do nothing but import the modules its start
command imports and print their resident memory:

- v6node: ``python -c "import v6node.app.cli, v6node.app.cli.run"`` with the interpreter of
  the venv it runs from (what ``v6node start`` loads before it reads its config: the CLI
  loads a command's module when it runs, and ``start``'s imports the container, so every
  adapter a node on one engine uses is in).
- reference: ``docker run --rm`` of its image with ``python3 -c "import vantage6.node,
  vantage6.node.cli.node"``, so the container's own start is in the figure too, as it is
  in the reference's start-up.

The medians say how far below these the start-up and idle-memory rows cannot go without
loading less code (or, for the reference, without a container).
"""
from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.vs_reference.nodes import BENCH_LABELS
from benchmarks.vs_reference.reference_image import REFERENCE_IMAGE

_PRINT_RSS = (
    "import sys\n"
    "rss = next(l for l in open('/proc/self/status') if l.startswith('VmRSS:')).split()[1]\n"
    "sys.stdout.write(rss)\n"
)
V6NODE_IMPORT = "import v6node.app.cli, v6node.app.cli.run\n" + _PRINT_RSS
REFERENCE_IMPORT = "import vantage6.node, vantage6.node.cli.node\n" + _PRINT_RSS
BARE_PYTHON = _PRINT_RSS


def _timed(command: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, int(done.stdout.strip().splitlines()[-1])


def _median_of(command: list[str], repeats: int) -> dict[str, float]:
    _timed(command)  # warm the page cache
    samples = [_timed(command) for _ in range(repeats)]
    return {
        "wall_s": statistics.median(s for s, _ in samples),
        "rss_mib": statistics.median(kib for _, kib in samples) / 1024,
    }


def v6node_floor(python: Path, repeats: int = 5) -> dict[str, Any]:
    """``python``: the interpreter of the venv the benchmarked v6node runs from."""
    return {
        "interpreter": _median_of([str(python), "-c", BARE_PYTHON], repeats),
        "imports": _median_of([str(python), "-c", V6NODE_IMPORT], repeats),
    }


def reference_floor(repeats: int = 5) -> dict[str, Any]:
    def docker(code: str) -> list[str]:
        labels = [arg for key, value in BENCH_LABELS.items() for arg in ("--label", f"{key}={value}")]
        return ["docker", "run", "--rm", *labels, "--entrypoint", "python3", REFERENCE_IMAGE, "-c", code]

    return {
        "interpreter": _median_of(docker(BARE_PYTHON), repeats),
        "imports": _median_of(docker(REFERENCE_IMPORT), repeats),
    }
