"""Algorithms are untrusted: what they leave in their task folder or print is hostile input.

Each test runs the `v6node start` process against the real server and dockerd; the hostile
algorithm is the busybox shell image running a script from the node's ``algorithm_env``.
"""
from __future__ import annotations

import contextlib
import uuid

import pytest

from tests.e2e.test_policies_and_data import as_json, run_task
from tests.rig.paths import image

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.server]

SHELL, ECHO = image("shell-algo"), image("echo-algo")
MiB = 1024 * 1024


def test_an_output_swapped_for_a_link_to_the_nodes_config_ends_failed_and_sends_nothing_of_it(
    make_federation, start_node, researcher_for
):
    federation = make_federation(n_orgs=1)
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    # On the host the task folder is <home>/data/tasks/task-N and the config <home>/<name>.yaml.
    script = f'rm -f "$OUTPUT_FILE"; ln -s ../../../{name}.yaml "$OUTPUT_FILE"; ls -l "$OUTPUT_FILE"'
    node = start_node(federation.nodes[0], name=name, algorithm_env={"SCRIPT": script})
    user = researcher_for(federation)

    run, result = run_task(user, federation, SHELL, {"method": "steal"})

    assert node.config_file.name == f"{name}.yaml"
    api_key = federation.nodes[0].api_key
    assert run["status"] == "failed"
    assert "the output file was replaced by a symbolic link" in run["log"]
    assert not result["result"]
    assert api_key not in str(run) and api_key not in str(result)
    later, _ = run_task(user, federation, ECHO, {"method": "echo"})
    assert later["status"] == "completed"


def test_a_fifo_as_output_ends_failed_at_once_and_the_node_runs_the_next_task(make_federation, start_node, researcher_for):
    federation = make_federation(n_orgs=1)
    node = start_node(federation.nodes[0], algorithm_env={"SCRIPT": 'rm -f "$OUTPUT_FILE"; mkfifo "$OUTPUT_FILE"'})
    user = researcher_for(federation)

    run, _ = run_task(user, federation, SHELL, {"method": "block"})
    later, _ = run_task(user, federation, ECHO, {"method": "echo"})

    assert run["status"] == "failed"
    assert "the output is a named pipe (FIFO), not a regular file" in run["log"]
    assert later["status"] == "completed"
    assert node.running


def test_an_algorithm_printing_a_gibibyte_leaves_the_node_memory_bounded(make_federation, start_node, researcher_for):
    federation = make_federation(n_orgs=1)
    script = "head -c 1073741824 /dev/zero | tr '\\0' x; echo; echo the-end"
    node = start_node(federation.nodes[0], algorithm_env={"SCRIPT": script}, max_log_size="2m")
    user = researcher_for(federation)
    before = node.memory_kib()

    run, _ = run_task(user, federation, SHELL, {"method": "chatter"})

    after = node.memory_kib()
    print(f"node memory (KiB): before {before}, after {after}")
    assert run["status"] == "completed"
    assert run["log"].endswith("x\nthe-end\n")
    assert MiB <= len(run["log"].encode()) <= 2 * MiB + 200  # the newest 1-2 MiB the engine kept
    assert after["VmHWM"] - before["VmRSS"] < 64 * 1024  # not a GiB, nor its 2 MiB tail many times over


def test_a_large_output_is_streamed_with_the_node_memory_bounded(make_federation, start_node, researcher_for):
    federation = make_federation(n_orgs=1)
    size = 32 * MiB
    script = (
        'printf \'{"y": "\' > "$OUTPUT_FILE"; '
        f'head -c {size} /dev/zero | tr "\\0" y >> "$OUTPUT_FILE"; '
        'printf \'"}\' >> "$OUTPUT_FILE"'
    )
    node = start_node(federation.nodes[0], algorithm_env={"SCRIPT": script})
    user = researcher_for(federation)
    before = node.memory_kib()

    run, result = run_task(user, federation, SHELL, {"method": "write"})

    after = node.memory_kib()
    print(f"node memory (KiB) for a {size // MiB} MiB output: before {before}, after {after}")
    assert run["status"] == "completed", run["log"]
    assert as_json(result["result"]) == {"y": "y" * size}
    assert after["VmHWM"] - before["VmRSS"] < 24 * 1024  # far below the output (32 MiB) and its base64 (43 MiB)


def test_400_idle_connections_to_the_proxy_do_not_stop_a_runs_subtasks(make_federation, start_node, researcher_for, tmp_path):
    import re
    import socket

    from tests.e2e.test_federated_mean import expected_mean, run_federated_mean

    federation = make_federation(n_orgs=2)
    idle: list[socket.socket] = []

    def flood(start, node, **extra):
        process = start(node, **extra)
        if not idle:  # the first node runs the central part: its proxy takes the subtask requests
            host, port = re.search(r"algorithm proxy at ([\d.]+):(\d+)", process.output).groups()
            for _ in range(400):
                with contextlib.suppress(OSError):  # refused at once past the caps: that is the point
                    idle.append(socket.create_connection((host, int(port)), timeout=5))
        return process

    try:
        combined, nodes, _, _ = run_federated_mean(
            federation, lambda node, **extra: flood(start_node, node, **extra), researcher_for, tmp_path
        )
    finally:
        for sock in idle:
            sock.close()

    assert len(idle) == 400  # all were accepted by the kernel; the proxy then closed all but its per-peer share
    assert combined["mean"] == pytest.approx(expected_mean())
    assert "Too many open files" not in nodes[0].output
