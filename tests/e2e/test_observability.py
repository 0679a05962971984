"""What an operator, a researcher and a data owner see of a running node: live algorithm
logs through the real vantage6 client, metrics the real server accepts, the node's own
/health and /metrics, and the audit log checked with `v6node audit verify`.
"""
from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_policies_and_data import only_run, policies, run_task, wait_until
from tests.rig.paths import image
from tests.rig.server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.server]

SHELL, ECHO, CRASH, SLEEP = image("shell-algo"), image("echo-algo"), image("crash-algo"), image("sleep-algo")
TICKS = 'for i in 1 2 3 4 5; do echo "tick $i"; sleep 1; done; echo \'{"done": true}\' > "$OUTPUT_FILE"'


def v6node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "v6node.app.cli", *args], capture_output=True, text=True, timeout=60)


def test_the_client_sees_the_algorithms_lines_before_the_run_ends_and_each_once_after(
    make_federation, start_node, researcher_for
):
    federation = make_federation(n_orgs=1)
    start_node(federation.nodes[0], algorithm_env={"SCRIPT": TICKS}, share_algorithm_logs=True)
    user = researcher_for(federation)

    task = user.create_task(federation.collaboration_id, [federation.organization_ids[0]], SHELL, {"method": "tick"})
    seen_while_active = wait_until(
        lambda: (run := only_run(user, task["id"]))["status"] == "active" and "tick 2" in (run["log"] or "") and run,
        "the run's log to grow while it is active",
        timeout=60,
    )
    user.wait_for_results(task["id"])
    final = only_run(user, task["id"])

    assert "tick 5" not in seen_while_active["log"]  # seen before the algorithm was done
    assert final["status"] == "completed"
    assert [line for line in final["log"].splitlines() if line.startswith("tick")] == [f"tick {i}" for i in range(1, 6)]


def test_the_real_server_accepts_the_nodes_metrics(make_federation, start_node, real_server):
    federation = make_federation(n_orgs=1)
    node_id = federation.nodes[0].node_id
    start_node(federation.nodes[0], prometheus={"enabled": True, "report_interval_seconds": 1})

    updated = f"Updated metrics for node {node_id}"
    wait_until(lambda: real_server.log_file.read_text().count(updated) >= 2, "two metric updates", timeout=30)

    server_log = real_server.log_file.read_text()
    assert "Invalid metric data" not in server_log
    assert "Failed to process metric" not in server_log


def metrics_of(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def health_of(port: int) -> tuple[int, dict]:
    response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    return response.status_code, response.json()


def test_health_follows_the_server_and_metrics_count_the_runs(make_federation, start_node, researcher_for, real_server):
    federation = make_federation(n_orgs=1)
    port = free_port()
    start_node(federation.nodes[0], monitoring={"enabled": True, "port": port})
    user = researcher_for(federation)

    for method in ("one", "two"):
        run, _ = run_task(user, federation, ECHO, {"method": method})
        assert run["status"] == "completed"
    crashed, _ = run_task(user, federation, CRASH, {"method": "crash"})
    assert crashed["status"] == "crashed"

    samples = metrics_of(port)
    assert samples[("v6node_runs_received_total", ())] == 3
    assert samples[("v6node_runs_started_total", ())] == 3
    assert samples[("v6node_runs_finished_total", (("status", "completed"),))] == 2
    assert samples[("v6node_runs_finished_total", (("status", "crashed"),))] == 1
    assert samples[("v6node_run_duration_seconds_count", ())] == 3
    assert samples[("v6node_journal_entries", ())] >= 3
    assert samples[("v6node_server_request_seconds_count", ())] > 0
    status, body = health_of(port)
    assert status == 200, body
    assert body == {"status": "ok", "server": "logged in", "websocket": "connected", "docker": "answers"}

    real_server.stop()
    try:
        status, body = wait_until(lambda: (h := health_of(port))[0] == 503 and h, "/health to say 503", timeout=60)
        assert body["status"] == "unhealthy" and body["websocket"] == "not connected", body
    finally:
        real_server.start()
    wait_until(lambda: health_of(port)[0] == 200, "/health back to 200", timeout=90)
    assert metrics_of(port)[("v6node_websocket_reconnects_total", ())] >= 1


def test_the_audit_log_records_each_kind_of_end_and_verify_names_a_tampered_line(
    make_federation, start_node, researcher_for, admin
):
    federation = make_federation(n_orgs=1)
    allowed = [r"127\.0\.0\.1:5999/(echo|crash|sleep)-algo"]
    node = start_node(federation.nodes[0], audit_log=True, **policies(allowed_algorithms=allowed))
    user = researcher_for(federation)
    org = federation.organization_ids[0]

    completed, _ = run_task(user, federation, ECHO, {"method": "echo"})
    crashed, _ = run_task(user, federation, CRASH, {"method": "crash"})
    denied, _ = run_task(user, federation, SHELL, {"method": "anything"})
    sleeper = user.create_task(federation.collaboration_id, [org], SLEEP, {"method": "sleep", "kwargs": {"seconds": 600}})
    killed = admin.runs_of_task(sleeper["id"])[0]
    node.wait_for(f"run {killed['id']} (task {sleeper['id']}) started")
    user.call("kill_task", task_id=sleeper["id"])
    user.wait_for_results(sleeper["id"])
    assert [completed["status"], crashed["status"], denied["status"], only_run(user, sleeper["id"])["status"]] == [
        "completed", "crashed", "not allowed", "killed by user",
    ]
    node.stop()

    config = str(node.config_file)
    shown = v6node("audit", "show", "-c", config, "--json")
    assert shown.returncode == 0, shown.stderr
    entries = [json.loads(line) for line in shown.stdout.splitlines()]
    ends = {e["run_id"]: e["status"] for e in entries if e["event"] == "finished"}
    assert ends == {
        completed["id"]: "completed", crashed["id"]: "crashed", denied["id"]: "not allowed", killed["id"]: "killed by user",
    }
    decisions = {e["run_id"]: (e["allowed"], e["reason"]) for e in entries if e["event"] == "decided"}
    assert decisions[denied["id"]][0] is False and "allowed_algorithms" in decisions[denied["id"]][1]
    assert all(e["user_id"] == federation.user.user_id for e in entries if e["event"] == "decided")
    assert federation.nodes[0].api_key not in shown.stdout
    verified = v6node("audit", "verify", "-c", config)
    assert verified.returncode == 0, verified.stderr
    assert f"{len(entries)} entries, the chain holds" in verified.stdout

    audit_file = node.config_file.parent / "data" / "audit.jsonl"
    lines = audit_file.read_text().splitlines(keepends=True)
    edited = json.loads(lines[2])
    edited["task_id"] += 1000
    audit_file.write_text("".join([*lines[:2], json.dumps(edited, sort_keys=True, separators=(",", ":")) + "\n", *lines[3:]]))
    broken = v6node("audit", "verify", "-c", config)
    assert broken.returncode == 1
    assert "broken at line 3" in broken.stderr

    audit_file.write_text("".join(lines[:1] + lines[2:]))
    deleted = v6node("audit", "verify", "-c", config)
    assert deleted.returncode == 1
    assert "broken at line 2" in deleted.stderr
