"""One table with both nodes, the ratio v6node / reference, and the issue's goal for each row."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen

Results = dict[str, Any]  # one node's phases, as the JSON has them


def _get(results: Results, path: str) -> float | None:
    value: Any = results
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, int | float) else None


@frozen
class Row:
    label: str
    path: str  # where the number is in a node's results ("phase.key")
    unit: str
    goal: str = ""
    scale: float = 1.0

    def value(self, results: Results) -> float | None:
        value = _get(results, self.path)
        return None if value is None else value * self.scale


ROWS = (
    Row("task created -> result visible, p50", "sequential.p50_s", "s"),
    Row("bare `docker run --rm`, p50 (floor)", "sequential.bare_p50_s", "s"),
    Row("sequential p50 minus bare p50", "sequential.overhead_p50_s", "s", "<= 0.05x"),
    Row("burst: tasks posted at once -> all visible", "burst.tasks_per_s", "tasks/s", ">= 6x"),
    Row("burst: wall time", "burst.wall_s", "s"),
    Row("burst: of which creating the tasks", "burst.creating_s", "s"),
    Row("burst: bare runs 8 at a time (floor)", "burst.bare_wall_s", "s"),
    Row("burst: wall / bare floor", "burst.wall_over_bare", "x", "<= 1.5 (v6node)"),
    Row("idle RSS after start", "idle.rss_mib", "MiB", "<= 0.4x"),
    Row("idle PSS after start", "idle.pss_mib", "MiB"),
    Row("floor: RSS of a process that only loads the node's code", "floors.imports.rss_mib", "MiB"),
    Row("start -> online at the server", "start_up.online_s", "s", "<= 0.3x"),
    Row("start -> first pre-queued task visible", "start_up.first_task_done_s", "s", "<= 0.2x"),
    Row("floor: start a process, load the node's code, exit", "floors.imports.wall_s", "s"),
    Row("floor: start a bare interpreter, exit", "floors.interpreter.wall_s", "s"),
    Row("idle CPU over 30 s", "idle.cpu_percent", "%", "<= 1x"),
    Row("idle wake-ups (context switches)", "idle.wakeups_per_s", "/s"),
    Row("idle REST calls in 30 s", "idle.rest_calls", ""),
    Row("REST calls per run, sequential", "sequential.rest_calls_per_run", ""),
    Row("REST calls per run, burst", "burst.rest_calls_per_run", ""),
    Row("server CPU per run, burst (harness incl.)", "burst.server_cpu_per_run_ms", "ms", "minimal"),
    Row("node CPU per run, burst", "burst.node_cpu_per_run_ms", "ms"),
    Row("scale: drain after start", "scale.drain_s", "s"),
    Row("scale: throughput", "scale.tasks_per_s", "tasks/s"),
    Row("scale: peak RSS (VmHWM)", "scale.peak_rss_mib", "MiB"),
    Row("scale: RSS at 10 % drained", "scale.rss_mib_at.10%", "MiB"),
    Row("scale: RSS at 100 % drained", "scale.rss_mib_at.100%", "MiB", "flat (v6node)"),
    Row("scale: REST calls per run", "scale.rest_calls_per_run", ""),
    Row("scale: server CPU per run", "scale.server_cpu_per_run_ms", "ms"),
    Row("scale: node CPU per run", "scale.node_cpu_per_run_ms", "ms"),
)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ratio(reference: float | None, ours: float | None) -> float | None:
    if reference is None or ours is None or reference == 0:
        return None
    return ours / reference


def table(nodes: dict[str, Results], markdown: bool = False) -> str:
    """Rows of both nodes (a node that did not run shows '-') with v6node / reference."""
    reference, ours = nodes.get("reference", {}), nodes.get("v6node", {})
    header = ("metric", "unit", "reference 4.15.2", "v6node", "v6node / reference", "goal")
    lines: list[tuple[str, ...]] = []
    for row in ROWS:
        ref_value, our_value = row.value(reference), row.value(ours)
        if ref_value is None and our_value is None:
            continue
        r = ratio(ref_value, our_value)
        lines.append((row.label, row.unit, _fmt(ref_value), _fmt(our_value), "-" if r is None else f"{r:.2f}x", row.goal))
    counts = _counts_line(nodes)
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out) + counts
    widths = [max(len(str(line[i])) for line in (header, *lines)) for i in range(len(header))]
    render: Callable[[tuple[str, ...]], str] = lambda line: "  ".join(  # noqa: E731
        cell.ljust(widths[i]) if i in (0, 1, 5) else cell.rjust(widths[i]) for i, cell in enumerate(line)
    )
    return "\n".join([render(header), render(tuple("-" * w for w in widths)), *map(render, lines)]) + counts


def _counts_line(nodes: dict[str, Results]) -> str:
    parts = []
    for kind, results in nodes.items():
        n = {phase: results.get(phase, {}).get("n") for phase in ("sequential", "burst", "scale")}
        parts.append(f"{kind}: " + ", ".join(f"{phase} {count}" for phase, count in n.items() if count))
    return "\n\ntasks: " + "; ".join(parts) if parts else ""


def endpoints(nodes: dict[str, Results], phase: str) -> str:
    """The node's REST calls per run in ``phase``, by endpoint, both nodes side by side."""
    per_node = {kind: (r.get(phase) or {}) for kind, r in nodes.items()}
    names = sorted({name for r in per_node.values() for name in r.get("rest_calls_by_endpoint", {})})
    lines = [f"REST calls per run by endpoint ({phase}; the researcher's own calls included in the counts):"]
    for name in names:
        cells = []
        for kind, r in per_node.items():
            count = r.get("rest_calls_by_endpoint", {}).get(name)
            runs = r.get("runs") or 1
            cells.append(f"{kind} {count / runs:6.2f}" if count else f"{kind} {'-':>6}")
        lines.append(f"  {name:40} " + "   ".join(cells))
    return "\n".join(lines)
