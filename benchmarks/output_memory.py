"""The node's memory while it sends a large algorithm output, and while an algorithm prints a lot.

Run with:  .venv/bin/python -m benchmarks.output_memory [--output-mib 512] [--stdout-mib 1024]

One real vantage6 4.15.2 server and one `v6node start` process. A busybox algorithm writes
an output of ``--output-mib`` MiB (a JSON string), then another prints ``--stdout-mib`` MiB
to stdout. For each run the node's resident memory (VmRSS before, VmHWM after: the peak
since the process started) is read from /proc, and the stored result's length is checked
against what the output's base64 must be.
"""
from __future__ import annotations

import argparse
import base64
import json
import tempfile
import time
from pathlib import Path

import httpx

from tests.rig.images import ensure_images
from tests.rig.node_process import NodeProcess, node_config
from tests.rig.paths import image
from tests.rig.server import AdminApi, RealServer, create_federation

SHELL = image("shell-algo")
MiB = 1024 * 1024


def run_script(http: httpx.Client, collaboration: int, organization: int, name: str) -> dict:
    task_input = base64.b64encode(json.dumps({"method": name}).encode()).decode()
    body = {
        "name": name, "image": SHELL, "collaboration_id": collaboration, "description": "",
        "organizations": [{"id": organization, "input": task_input}], "databases": [],
    }
    task = http.post("/task", json=body)
    task.raise_for_status()
    while True:  # a benchmark of memory, not of latency: a slow poll is fine
        (run,) = http.get("/run", params={"task_id": task.json()["id"]}).json()["data"]
        if run["finished_at"]:
            return run
        time.sleep(1)


def measure(work: Path, server: RealServer, federation, script: str, what: str, output_bytes: int | None) -> None:
    credentials = federation.nodes[0]
    home = work / what
    config = node_config(server, credentials, home, algorithm_env={"SCRIPT": script})
    config["logging"]["level"] = "INFO"
    node = NodeProcess.write_config(home / f"{what}.yaml", config)
    node.start()
    try:
        http = httpx.Client(base_url=server.api, timeout=600)
        token = http.post("/token/user", json={"username": federation.user.username, "password": federation.user.password})
        http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        before = node.memory_kib()
        started = time.perf_counter()
        run = run_script(http, federation.collaboration_id, credentials.organization_id, what)
        elapsed = time.perf_counter() - started
        after = node.memory_kib()
        assert run["status"] == "completed", run["log"][-500:]
        line = (
            f"{what}: {run['status']} in {elapsed:.1f} s; node RSS before {before['VmRSS'] / 1024:.0f} MiB, "
            f"peak {after['VmHWM'] / 1024:.0f} MiB (+{(after['VmHWM'] - before['VmRSS']) / 1024:.0f} MiB), "
            f"log {len(run['log'].encode()) / MiB:.1f} MiB"
        )
        if output_bytes is not None:
            result = http.get(f"/result/{run['id']}").json()["result"]
            expected = 4 * ((output_bytes + 2) // 3)
            assert len(result) == expected, (len(result), expected)
            line += f"; result stored: {len(result) / MiB:.0f} MiB of base64, as expected"
        print(line, flush=True)
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-mib", type=int, default=512)
    parser.add_argument("--stdout-mib", type=int, default=1024)
    args = parser.parse_args()
    ensure_images(["shell-algo"])
    output_bytes = args.output_mib * MiB + len('{"y": ""}')
    write = (
        f'printf \'{{"y": "\' > "$OUTPUT_FILE"; head -c {args.output_mib * MiB} /dev/zero | tr "\\0" y >> "$OUTPUT_FILE"; '
        'printf \'"}\' >> "$OUTPUT_FILE"'
    )
    chatter = f"head -c {args.stdout_mib * MiB} /dev/zero | tr '\\0' x; echo; echo the-end"
    with tempfile.TemporaryDirectory(prefix="v6node-bench-") as tmp:
        work = Path(tmp)
        server = RealServer(work / "server")
        server.start()
        try:
            federation = create_federation(AdminApi(server), "mem", n_orgs=1)
            measure(work, server, federation, write, f"output-{args.output_mib}MiB", output_bytes)
            measure(work, server, federation, chatter, f"stdout-{args.stdout_mib}MiB", None)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
