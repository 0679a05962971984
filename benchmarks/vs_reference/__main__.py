"""v6node beside the reference vantage6 4.15.2 node, on one real server, part by part.

Run with:  scripts/bench-vs-reference [--sequential 20] [--burst 50] [--scale 1000]   # sets up the rig first
           .venv/bin/python -m benchmarks.vs_reference [...]      # the same on a prepared rig
           .venv/bin/python -m benchmarks.vs_reference --show F   # the tables of an earlier run's JSON
           .venv/bin/python -m benchmarks.vs_reference --clean    # remove the reference image and leftovers

See benchmarks/README.md ("v6node vs the reference node") for what each phase measures.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import traceback
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.errors

from benchmarks.vs_reference import floors, phases
from benchmarks.vs_reference.measure import AccessLog
from benchmarks.vs_reference.nodes import (
    BENCH_LABELS,
    NodeUnderTest,
    ReferenceNode,
    V6Node,
    operator_install,
    remove_run_leftovers,
)
from benchmarks.vs_reference.reference_image import (
    BENCH_LABEL,
    REFERENCE_IMAGE,
    ensure_reference_image,
    reference_image_present,
)
from benchmarks.vs_reference.report import endpoints, table
from benchmarks.vs_reference.researcher import Researcher
from tests.rig.images import ensure_images
from tests.rig.paths import REPO, RIG_DIR
from tests.rig.server import AdminApi, RealServer, create_federation

KINDS = ("reference", "v6node")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vs_reference", description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=20, help="tasks one after the other (0 skips)")
    parser.add_argument("--burst", type=int, default=50, help="tasks posted at once (0 skips)")
    parser.add_argument("--scale", type=int, default=1000, help="tasks created while the node is down (0 skips)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measurement")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after start-up before the idle window")
    parser.add_argument("--floors", type=int, default=5, help="processes per floor measurement (0 skips)")
    parser.add_argument("--only", choices=KINDS, help="one node only")
    parser.add_argument(
        "--order", default="reference,v6node", help="which node runs first: reference,v6node or v6node,reference"
    )
    parser.add_argument("--json", type=Path, help="where the results go (default .rig/bench/vs_reference-<UTC>.json)")
    parser.add_argument("--clean", action="store_true", help="remove the reference image and anything left labelled")
    parser.add_argument("--show", type=Path, metavar="JSON", help="print the tables of an earlier run (markdown)")
    args = parser.parse_args(argv)
    if sorted(k.strip() for k in args.order.split(",")) != sorted(KINDS):
        # One name alone would quietly leave the other node out: that is what --only is for.
        parser.error(f"--order {args.order}: name both nodes, e.g. {','.join(reversed(KINDS))} (one node alone: --only)")
    return args


def machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "?")
    client = docker.from_env()
    try:
        engine = client.version()["Version"]
    finally:
        client.close()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(), "cpu_model": cpu_model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(), "python": platform.python_version(), "docker_engine": engine,
        "commit": commit.stdout.strip(), "load_average_at_start": os.getloadavg(),
    }


@contextlib.contextmanager
def bench_network(client: docker.DockerClient):
    """A bridge network of our own: the server listens on its gateway address, which the
    reference node's container (on the default bridge, as the CLI starts it) and v6node on
    the host both reach. Nothing else is attached to it."""
    network = client.networks.create(f"v6bench-{uuid.uuid4().hex[:8]}", driver="bridge", labels=BENCH_LABELS)
    try:
        network.reload()
        yield network.attrs["IPAM"]["Config"][0]["Gateway"]
    finally:
        network.remove()


def section(kind: str, part: str, server: RealServer, admin: AdminApi, work: Path, args: argparse.Namespace,
            client: docker.DockerClient, executable: Path | None) -> dict[str, Any]:
    """One part of the phases against one node, on a collaboration (and node registration)
    of its own: "main" (floors, start-up, idle, sequential, burst) or "scale" (the node is
    started, then stopped, and drains what was created meanwhile)."""
    federation = create_federation(admin, f"{kind}-{part}-{uuid.uuid4().hex[:6]}", n_orgs=1)
    credentials = federation.nodes[0]
    researcher = Researcher(server, federation.user)
    home = work / f"{kind}-{part}"
    node: NodeUnderTest = (
        ReferenceNode(server, credentials, home, client) if kind == "reference"
        else V6Node(server, credentials, home, executable or Path(sys.executable).with_name("v6node"))
    )
    bench = phases.Bench(server, AccessLog(server.log_file), node, researcher, federation.collaboration_id,
                         credentials.organization_id, home)
    results: dict[str, Any] = {f"node_name_{part}": node.name, f"load_{part}": {"start": os.getloadavg()}}
    say = lambda text: print(f"[{kind}] {text}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        if part == "main":
            _main_phases(bench, node, args, results, say)
        else:
            say("started for the scale phase")
            bench.researcher.wait_online(credentials.node_id, node.start(), timeout=300)
            say(f"{args.scale} tasks created while the node is down, then drained")
            results["scale"] = phases.scale(bench, args.scale, timeout=args.scale * 5 + 600)
    except BaseException:
        say("failed:\n" + traceback.format_exc())
        if isinstance(node, ReferenceNode):
            say("reference node log (tail):\n" + node.logs()[-4000:])
        elif node.process is not None:
            say("v6node output (tail):\n" + node.process.output[-4000:])
        raise
    finally:
        node.stop()
        results[f"leftovers_removed_{part}"] = node.remove_leftovers()
        researcher.close()
        # The server checks an API key against every node's hash in turn (bcrypt): each node
        # logs in on a server where it is the only one registered.
        admin.http.delete(f"/node/{credentials.node_id}")
        results[f"load_{part}"]["end"] = os.getloadavg()
    return results


def _main_phases(bench: phases.Bench, node: NodeUnderTest, args: argparse.Namespace, results: dict[str, Any],
                 say: Any) -> None:
    if args.floors:
        say(f"floors ({args.floors} processes each)")
        results["floors"] = (floors.v6node_floor(node.executable.with_name("python"), args.floors)
                             if isinstance(node, V6Node) else floors.reference_floor(args.floors))
    say("start-up")
    results["start_up"] = phases.start_up(bench, timeout=300)
    say(f"idle ({args.idle:g} s)")
    results["idle"] = phases.idle(bench, args.idle, args.settle)
    if args.sequential:
        say(f"{args.sequential} sequential tasks")
        results["sequential"] = phases.sequential(bench, args.sequential, timeout=120)
    if args.burst:
        say(f"{args.burst} tasks at once")
        results["burst"] = phases.burst(bench, args.burst, timeout=args.burst * 10 + 120)


def clean(client: docker.DockerClient) -> None:
    """Everything any run left (labelled, or named after one of its nodes), and the reference image."""
    def ours(name: str, labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        return (BENCH_LABEL in labels or name.lstrip("/").startswith(NAME_PREFIXES)
                or labels.get("v6node.node", "").startswith("bench-v6n-"))

    for container in client.containers.list(all=True):
        if ours(container.name, container.labels):
            container.remove(force=True)
            print(f"removed container {container.name}")
    for network in client.networks.list():
        if ours(network.name, network.attrs.get("Labels")):
            network.remove()
            print(f"removed network {network.name}")
    for volume in client.volumes.list():
        if ours(volume.name, volume.attrs.get("Labels")):
            volume.remove(force=True)
            print(f"removed volume {volume.name}")
    if reference_image_present(client):
        client.images.remove(REFERENCE_IMAGE)
        print(f"removed image {REFERENCE_IMAGE}")


# The reference node names its algorithm containers, network and volumes after itself.
NAME_PREFIXES = ("vantage6-bench-ref-", "v6bench-")


def run(args: argparse.Namespace) -> dict[str, Any]:
    kinds = [args.only] if args.only else [k.strip() for k in args.order.split(",")]
    ensure_images(["echo-algo"])
    client = docker.from_env(timeout=300)
    if "reference" in kinds:
        print(f"reference image: {ensure_reference_image(client)}", file=sys.stderr, flush=True)
    executable = None
    if "v6node" in kinds:
        executable = operator_install()
        print(f"v6node: {executable}", file=sys.stderr, flush=True)
    report: dict[str, Any] = {"machine": machine(), "arguments": {k: str(v) for k, v in vars(args).items()}, "nodes": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="v6node-vs-reference-") as tmp, bench_network(client) as gateway:
            work = Path(tmp)
            server = RealServer(work / "server", access_log=True)
            server.host = gateway
            server.start()
            try:
                admin = AdminApi(server)
                # Part by part, the nodes one after the other: each pair of figures is measured
                # minutes apart, under about the same load of a shared machine.
                for part in ("main", "scale") if args.scale else ("main",):
                    for kind in kinds:
                        results = section(kind, part, server, admin, work, args, client, executable)
                        report["nodes"].setdefault(kind, {}).update(results)
                admin.close()
            finally:
                server.stop()
    finally:
        client.close()
        report["leftovers_removed_at_end"] = remove_run_leftovers()
    report["machine"]["load_average_at_end"] = os.getloadavg()
    return report


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.clean:
        client = docker.from_env()
        try:
            clean(client)
        finally:
            client.close()
        return 0
    if args.show:
        show(json.loads(args.show.read_text()), markdown=True)
        return 0
    report = run(args)
    path = args.json or RIG_DIR / "bench" / f"vs_reference-{report['machine']['date'].replace(':', '')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    show(report)
    print(f"\nresults: {path}")
    return 0


def show(report: dict[str, Any], markdown: bool = False) -> None:
    m = report["machine"]
    print(f"\n{m['date']}  {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Docker {m['docker_engine']}, "
          f"commit {m['commit']}, load {m['load_average_at_start'][0]:.1f} -> {m['load_average_at_end'][0]:.1f}\n")
    print(table(report["nodes"], markdown=markdown))
    for phase in ("start_up", "sequential", "burst", "scale"):
        if any(phase in r for r in report["nodes"].values()):
            print("\n" + endpoints(report["nodes"], phase))


if __name__ == "__main__":
    # Stopped with Ctrl-C or kill (even when started in the background, where SIGINT is
    # ignored), the run still stops its nodes and server and removes what it created.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
