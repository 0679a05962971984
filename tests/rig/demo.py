"""The demo: a real vantage6 4.15.2 server, one v6node, one task created by a researcher.

Run it with ``scripts/demo`` (which sets everything up first).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from tests.rig.images import ensure_images
from tests.rig.node_process import NodeProcess, node_config
from tests.rig.paths import image
from tests.rig.researcher import Researcher
from tests.rig.server import AdminApi, RealServer, create_federation


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def main() -> int:
    ensure_images(["echo-algo"])
    with tempfile.TemporaryDirectory(prefix="v6node-demo-") as tmp:
        work = Path(tmp)
        server = RealServer(work / "server")
        step(f"starting the vantage6 4.15.2 server at {server.api} (SQLite in {work / 'server'})")
        server.start()
        node = None
        try:
            admin = AdminApi(server)
            federation = create_federation(admin, "demo", n_orgs=2)
            credentials = federation.nodes[0]
            step(
                f"registered organizations {list(federation.organization_ids)}, collaboration "
                f"{federation.collaboration_id}, node '{credentials.name}' (id {credentials.node_id}) "
                f"and researcher '{federation.user.username}'"
            )
            config = node_config(server, credentials, work / "node")
            config["logging"]["level"] = "INFO"
            node = NodeProcess.write_config(work / "node" / "demo-node.yaml", config)
            step(f"starting: v6node start -c {node.config_file}")
            node.start()
            step("the node is connected; the researcher creates a task with the vantage6 client")
            with Researcher(server, federation.user) as researcher:
                task_input = {"method": "echo", "args": [], "kwargs": {"greeting": "hello from the demo"}}
                started = time.monotonic()
                task = researcher.create_task(
                    federation.collaboration_id, [credentials.organization_id], image("echo-algo"), task_input
                )
                step(f"task {task['id']} created with image {task['image']}; waiting for the result")
                (result,) = researcher.wait_for_results(task["id"])
                elapsed = time.monotonic() - started
                (run,) = researcher.runs(task["id"])
            step(f"run {run['id']} finished with status '{run['status']}' in {elapsed:.2f} s")
            print("result:", json.dumps(json.loads(result["result"]) if isinstance(result["result"], str) else result["result"]))
            print("algorithm log:", run["log"].strip())
            return 0 if run["status"] == "completed" else 1
        finally:
            if node is not None:
                step("stopping the node (SIGTERM)")
                node.stop()
            server.stop()
            step("done")


if __name__ == "__main__":
    sys.exit(main())
