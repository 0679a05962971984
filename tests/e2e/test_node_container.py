"""The node as a container (the image from scripts/build-node-image) against the real server.

`v6node start --docker` and the documented `docker run` line: the basic task, a
central/partial task in a plain and in an encrypted collaboration, and a stop that leaves
nothing of the node's in Docker (its data volume stays until `v6node remove`).
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest

from tests.e2e.conftest import NO_LEFTOVERS, leftovers
from tests.e2e.test_federated_mean import AGES, expected_mean
from tests.e2e.test_node_cli import new_node
from tests.rig.operator_shell import OperatorShell
from tests.rig.paths import RIG_SRC, image

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.server]

REPO = RIG_SRC.parents[1]
NODE_IMAGE = image("v6node", "test")


@pytest.fixture(scope="session")
def node_image(test_images) -> str:
    """The v6node image, built as an operator would (on the rig's Debian Python image)."""
    done = subprocess.run(
        [str(REPO / "scripts" / "build-node-image"), "--base", image("python-base"), "--tag", NODE_IMAGE],
        capture_output=True, text=True, timeout=900, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return NODE_IMAGE


@pytest.fixture
def shell(tmp_path, docker_client, node_image) -> Iterator[OperatorShell]:
    shell = OperatorShell(tmp_path / "home")
    yield shell
    shell.run("stop", "--all", "--force", "--timeout", "30")
    for config in (shell.root / "config" / "vantage6" / "node").glob("*.yaml"):
        for name in (f"vantage6-{config.stem}-user",):
            try:
                docker_client.containers.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass
        shell.run("clean", "--name", config.stem)
        try:
            docker_client.volumes.get(f"vantage6-{config.stem}-user-vol").remove(force=True)
        except docker.errors.NotFound:
            pass


def csv_file(folder: Path, ages: list[int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "patients.csv"
    path.write_text("age,name\n" + "".join(f"{age},p{i}\n" for i, age in enumerate(ages)))
    return path


def start_in_docker(shell: OperatorShell, name: str) -> None:
    done = shell.run("start", "--docker", "--name", name, "--image", NODE_IMAGE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"is online in container vantage6-{name}-user" in done.stdout
    assert "(reachable from a container on the algorithm network)" in done.stdout


def stop_leaving_nothing(shell: OperatorShell, docker_client, name: str) -> None:
    done = shell.run("stop", "--name", name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"node '{name}' (user) stopped; nothing left behind" in done.stdout
    assert leftovers(docker_client, name) == NO_LEFTOVERS
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(f"vantage6-{name}-user")


def central_mean(researcher, federation) -> dict:
    task = researcher.create_task(
        federation.collaboration_id, [federation.organization_ids[0]], image("v6-algo"),
        {"method": "central_mean", "kwargs": {"column": "age"}}, databases=[{"label": "default"}],
    )
    (result,) = researcher.wait_for_results(task["id"])
    return json.loads(result["result"])


def test_nodes_in_containers_run_the_basic_and_a_central_partial_task(
    shell, real_server, make_federation, researcher_for, docker_client, tmp_path
):
    federation = make_federation(n_orgs=2)
    names = [
        new_node(shell, real_server, node.api_key, "--database", f"default={csv_file(tmp_path / f'org{i}', AGES[i])}")
        for i, node in enumerate(federation.nodes)
    ]
    for name in names:
        start_in_docker(shell, name)
    again = shell.run("start", "--docker", "--name", names[0], "--image", NODE_IMAGE)
    assert again.returncode == 2 and f"is already running in container vantage6-{names[0]}-user" in again.stderr
    native = shell.run("start", "--detach", "--name", names[0])
    assert native.returncode == 2 and f"is already running in container vantage6-{names[0]}-user" in native.stderr
    listed = shell.run("list").stdout
    assert all(f"{name}  user   running (container)" in listed for name in names)

    researcher = researcher_for(federation)
    task = researcher.create_task(
        federation.collaboration_id, [federation.organization_ids[0]], image("echo-algo"), {"method": "echo", "kwargs": {"n": 7}}
    )
    (result,) = researcher.wait_for_results(task["id"])
    assert json.loads(result["result"])["echo"]["kwargs"] == {"n": 7}
    assert [run["status"] for run in researcher.runs(task["id"])] == ["completed"]

    combined = central_mean(researcher, federation)
    assert combined["mean"] == pytest.approx(expected_mean())
    assert combined["organizations"] == 2

    log = shell.log_file(names[0]).read_text()
    assert "bind mounts are translated: " in log  # task folders reached the engine as host paths
    # The audit log is in the data volume: `audit --docker` reads it there; without --docker a note says so.
    verified = shell.run("audit", "verify", "--name", names[0], "--docker")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"volumes/vantage6-{names[0]}-user-vol/_data/audit.jsonl: " in verified.stdout
    assert "the chain holds" in verified.stdout
    shown = shell.run("audit", "show", "--name", names[0], "--docker", "--run", str(researcher.runs(task["id"])[0]["id"]))
    assert [line.split()[2] for line in shown.stdout.splitlines()] == ["decided", "started", "finished"]
    on_host = shell.run("audit", "verify", "--name", names[0])
    assert f"keeps it in data volume vantage6-{names[0]}-user-vol: add --docker" in on_host.stderr
    for name in names:
        stop_leaving_nothing(shell, docker_client, name)
    # The data volume (journal, task folders) outlives a stop, as the data folder does; remove deletes it.
    assert docker_client.volumes.get(f"vantage6-{names[0]}-user-vol")
    removed = shell.run("remove", "--name", names[0], "--force")
    assert f"removed Docker volume vantage6-{names[0]}-user-vol" in removed.stdout
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(f"vantage6-{names[0]}-user-vol")


def test_nodes_in_containers_in_an_encrypted_collaboration(
    shell, real_server, make_federation, researcher_for, docker_client, tmp_path
):
    federation = make_federation(n_orgs=2, encrypted=True)
    names = []
    for i, node in enumerate(federation.nodes):
        name = new_node(shell, real_server, node.api_key, "--database", f"default={csv_file(tmp_path / f'org{i}', AGES[i])}")
        assert any(line.endswith("which is encrypted") for line in shell.transcript)
        created = shell.run("create-private-key", "--name", name)
        assert created.returncode == 0, created.stdout + created.stderr
        names.append(name)
        start_in_docker(shell, name)
    key = next(shell.data_dir(names[0]).glob("privkey_*.pem"))
    combined = central_mean(researcher_for(federation, private_key=str(key)), federation)
    assert combined["mean"] == pytest.approx(expected_mean())
    for name in names:
        stop_leaving_nothing(shell, docker_client, name)


def test_the_documented_docker_run_line(shell, real_server, make_federation, researcher_for, docker_client, tmp_path):
    """As README "The node in a container" prints it, with this test's paths."""
    federation = make_federation(n_orgs=1)
    name = new_node(shell, real_server, federation.nodes[0].api_key, "--database", f"default={csv_file(tmp_path, [1, 2])}")
    log_dir = shell.log_file(name).parent
    log_dir.mkdir(parents=True)
    run = [
        "docker", "run", "-d", "--name", f"vantage6-{name}-user", "--network", "host",
        "-v", "/var/run/docker.sock:/var/run/docker.sock",
        "-v", f"{shell.config_file(name)}:/mnt/config/{name}.yaml:ro",
        "-v", f"vantage6-{name}-user-vol:/mnt/data",
        "-v", f"{log_dir}:/mnt/log",
        "-v", f"{tmp_path / 'patients.csv'}:/mnt/default.csv:ro", "-e", "DEFAULT_DATABASE_URI=default.csv",
        "-e", f"DATA_VOLUME_NAME=vantage6-{name}-user-vol",
        NODE_IMAGE, "start", "--dockerized",
    ]
    assert subprocess.run(run, capture_output=True, text=True, timeout=120).returncode == 0
    container = docker_client.containers.get(f"vantage6-{name}-user")
    for line in container.logs(stream=True, follow=True):
        if b"ready; algorithm proxy at" in line:
            break
    assert shell.run("list").stdout.count("running (container)") == 1
    researcher = researcher_for(federation)
    task = researcher.create_task(
        federation.collaboration_id, [federation.organization_ids[0]], image("v6-algo"),
        {"method": "partial_mean", "kwargs": {"column": "age"}}, databases=[{"label": "default"}],
    )
    (result,) = researcher.wait_for_results(task["id"])
    assert json.loads(result["result"])["count"] == 2  # the database came from DEFAULT_DATABASE_URI
    stopped = subprocess.run(["docker", "stop", "-t", "60", container.name], capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0
    container.remove()
    assert leftovers(docker_client, name) == NO_LEFTOVERS
