"""The examples that need Docker (and a server) run as they are written, as scripts of their own."""
from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import NO_LEFTOVERS, leftovers
from tests.rig.node_process import node_config
from tests.rig.paths import image

pytestmark = [pytest.mark.e2e, pytest.mark.docker]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.server
def test_a_node_embedded_in_an_asyncio_program_prints_its_run_events(
    real_server, make_federation, researcher_for, test_images, docker_client, tmp_path
) -> None:
    federation = make_federation(n_orgs=1)
    name = f"embed-{uuid.uuid4().hex[:8]}"
    config_file = tmp_path / f"{name}.yaml"
    config = node_config(real_server, federation.nodes[0], tmp_path)
    config_file.write_text(yaml.safe_dump(config))
    example = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "embed_node.py"), str(config_file), "--runs", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        online = example.stdout.readline()  # the first line comes once the node is online
        assert online.startswith(f"node {name} is online"), online + example.stderr.read()
        user = researcher_for(federation)
        task = user.create_task(
            federation.collaboration_id, [federation.organization_ids[0]], image("echo-algo"), {"method": "echo"}
        )
        out, err = example.communicate(timeout=180)
    finally:
        if example.poll() is None:
            example.kill()
            example.wait()
    assert example.returncode == 0, err
    lines = out.splitlines()
    run_of = rf"run \d+ of task {task['id']} \({re.escape(image('echo-algo'))}\)"
    assert [re.sub(run_of, "RUN", line) for line in lines] == [
        "RUN received", "RUN started", "RUN finished: completed", f"node {name} stopped after 1 finished run(s)",
    ]
    assert leftovers(docker_client, name) == NO_LEFTOVERS


def test_an_algorithm_image_is_tested_locally_with_run_locals_api(test_images, tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "test_algorithm_locally.py"), image("v6-algo")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("organization 1: completed {\"age\": 120, \"weight\": 240}")
    assert sorted(line.split(", ", 1)[1] for line in lines[1:3]) == [
        'organization 1: completed {"sum": 120, "count": 3}', 'organization 2: completed {"sum": 160, "count": 4}',
    ]
    assert lines[-1] == "federated mean of age: 40.0"
