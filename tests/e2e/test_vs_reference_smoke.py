"""Keeps benchmarks/vs_reference from rotting: every phase with tiny counts.

v6node always runs. The reference node runs too when its image is present (``python -m
benchmarks.vs_reference`` builds it, ``--clean`` removes it); building it here would take
minutes, so without it this test covers v6node's side and the shared harness only.
"""
from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from benchmarks.vs_reference.__main__ import main
from benchmarks.vs_reference.measure import AccessLog, endpoint
from benchmarks.vs_reference.nodes import BENCH_RUN_LABEL, RUN_ID
from benchmarks.vs_reference.reference_image import reference_image_present
from benchmarks.vs_reference.report import ROWS, table

pytestmark = [pytest.mark.docker, pytest.mark.server, pytest.mark.e2e]

_PHASES = ("floors", "start_up", "idle", "sequential", "burst", "scale")


def test_access_log_lines_are_counted_by_endpoint(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("before\n")
    access = AccessLog(log)
    mark = access.mark()
    with log.open("a") as out:
        out.write('10.0.0.2 - - [2026-12-05 21:00:00] "GET /api/run?task_id=4&include=task HTTP/1.1" 200 12 0.010000\n')
        out.write("21:00:00 websockets INFO some log line\n")
        out.write('10.0.0.2 - - [2026-12-05 21:00:00] "PATCH /api/run/17 HTTP/1.1" 200 12 0.020000\n')
        out.write('10.0.0.3 - - [2026-12-05 21:00:01] "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1" 200 0 9.0\n')
    requests = access.between(mark)
    assert requests.total == 2
    assert requests.by_endpoint == {"GET run": 1, "PATCH run/<id>": 1}
    assert requests.by_client == {"10.0.0.2": 2}
    assert endpoint("GET", "/api/task/3/status") == "GET task/<id>/status"


def test_table_shows_both_nodes_and_the_ratio() -> None:
    nodes = {"reference": {"sequential": {"p50_s": 2.0}}, "v6node": {"sequential": {"p50_s": 0.5}}}
    text = table(nodes)
    assert "0.25x" in text and ROWS[0].label in text


# Two nodes through every phase: ≈ 2 min alone, and past the suite's 300 s with three suites
# at once on 2 cores (a fresh-clone run failed so on 2026-12-06); the phases have their own timeouts.
@pytest.mark.timeout(900)
def test_every_phase_runs_with_tiny_counts(tmp_path: Path, test_images: None) -> None:
    client = docker.from_env()
    try:
        with_reference = reference_image_present(client)
    finally:
        client.close()
    out = tmp_path / "results.json"
    args = ["--sequential", "2", "--burst", "3", "--scale", "4", "--idle", "1", "--settle", "0", "--floors", "1",
            "--json", str(out)]
    if not with_reference:
        args += ["--only", "v6node"]
    assert main(args) == 0
    nodes = json.loads(out.read_text())["nodes"]
    assert set(nodes) == ({"reference", "v6node"} if with_reference else {"v6node"})
    for kind, results in nodes.items():
        assert all(phase in results for phase in _PHASES), (kind, results.keys())
        assert results["scale"]["statuses"] == ["completed"], kind
        assert results["sequential"]["rest_calls_per_run"] > 0, kind
        assert results["start_up"]["online_s"] < results["start_up"]["first_task_done_s"], kind
        assert results["idle"]["rss_mib"] > 0, kind
        assert results["floors"]["imports"]["rss_mib"] > results["floors"]["interpreter"]["rss_mib"], kind
    # What the nodes made in Docker is gone, and the benchmark's own network with it; the
    # reference node's own containers, networks and volumes are named after it.
    client = docker.from_env()
    label = {"label": f"{BENCH_RUN_LABEL}={RUN_ID}"}
    try:
        assert client.containers.list(all=True, filters=label) == []
        assert client.networks.list(filters=label) == []
        assert client.volumes.list(filters=label) == []
        for kind, results in nodes.items():
            for name in (results["node_name_main"], results["node_name_scale"]):
                assert client.containers.list(all=True, filters={"name": name}) == [], kind
                assert [n.name for n in client.networks.list() if name in n.name] == [], kind
                assert [v.name for v in client.volumes.list() if name in v.name] == [], kind
    finally:
        client.close()
