"""An operator runs a node by name with the v6node commands, against the real server and dockerd.

new --no-prompt -> start --detach -> a task from the real vantage6 client completes -> list ->
attach -> stop -> list -> clean; and the failures an operator meets on the way.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import NO_LEFTOVERS, leftovers
from tests.rig import totp
from tests.rig.operator_shell import OperatorShell
from tests.rig.paths import image
from tests.rig.server import AdminApi, RealServer, create_federation

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.server]

TRANSCRIPT = os.environ.get("V6NODE_TRANSCRIPT")  # a file to write the operator's terminal to


@pytest.fixture
def shell(tmp_path, docker_client, test_images) -> Iterator[OperatorShell]:
    shell = OperatorShell(tmp_path / "home")
    yield shell
    # Whatever a failed test left running: stop it, and remove what it made.
    shell.run("stop", "--all", "--force", "--timeout", "30")
    folder = shell.root / "config" / "vantage6" / "node"
    for config in folder.glob("*.yaml") if folder.is_dir() else []:
        shell.run("clean", "--name", config.stem)


def new_node(shell: OperatorShell, server: RealServer, api_key: str, *extra: str) -> str:
    name = f"op-{uuid.uuid4().hex[:8]}"
    done = shell.run(
        "new", "--no-prompt", "--name", name, "--api-key", api_key, "--server-url", server.url,
        "--port", str(server.port), "--no-require-algorithm-pull", *extra,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # A key only v6node reads: a local image that checks that algorithms reach the proxy.
    shell.edit_config(name, proxy_check_image=image("echo-algo"))
    return name


def alive(pid: int) -> bool:
    """The process exists and has not ended (an ended one may wait a moment to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def lines_until(process, text: str, limit: int = 2000) -> list[str]:
    seen = []
    for _ in range(limit):
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip("\n"))
        if text in line:
            return seen
    raise AssertionError(f"{text!r} not in the output:\n" + "\n".join(seen[-40:]))


def test_new_start_detach_task_list_attach_stop_clean(
    shell, real_server, make_federation, researcher_for, docker_client, admin
):
    federation = make_federation(n_orgs=1)
    node = federation.nodes[0]
    name = new_node(shell, real_server, node.api_key)
    # new asked the server about the collaboration
    assert any(line.endswith("which is not encrypted") for line in shell.transcript)

    started = shell.run("start", "--detach", "--name", name)
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"node '{name}' (user) is online: node '{node.name}' (id {node.node_id})" in started.stdout
    assert admin.get(f"/node/{node.node_id}")["status"] == "online"

    user = researcher_for(federation)
    task = user.create_task(
        federation.collaboration_id, [federation.organization_ids[0]], image("echo-algo"), {"method": "echo", "kwargs": {"x": 1}}
    )
    (result,) = user.wait_for_results(task["id"])
    assert json.loads(result["result"])["echo"]["kwargs"] == {"x": 1}
    (run,) = user.runs(task["id"])
    assert run["status"] == "completed"
    shell.note(f"# the researcher's task {task['id']} completed: {result['result']}")

    listed = shell.run("list")
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith(name))
    assert row[1:3] == ["user", "running"] and row[3].isdigit()
    pid = int(row[3])

    attach = shell.popen("attach", "--name", name, "--tail", "200")
    seen = lines_until(attach, f"run {run['id']} reported: completed")
    assert any(f"run {run['id']} (task {task['id']}) started" in line for line in seen)
    attach.send_signal(signal.SIGINT)
    _, err = attach.communicate(timeout=30)
    shell.transcript += [line for line in seen if f"run {run['id']}" in line] + ["^C"] + err.strip().splitlines()
    assert attach.returncode == 0 and "goes on running" in err
    assert shell.run("list").stdout.count("running") == 1  # attach's Ctrl-C left it running

    stopped = shell.run("stop", "--name", name)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"node '{name}' (user) stopped; nothing left behind" in stopped.stdout
    assert not alive(pid)
    after = shell.run("list")
    assert next(line.split() for line in after.stdout.splitlines() if line.startswith(name))[1:4] == ["user", "stopped", "-"]
    assert leftovers(docker_client, name) == NO_LEFTOVERS
    assert shell.run("clean").stdout.strip() == "nothing to clean"
    if TRANSCRIPT:
        Path(TRANSCRIPT).write_text("\n".join(shell.transcript) + "\n")


def test_start_detach_with_a_refused_api_key_exits_3_with_the_log(shell, real_server, make_federation, docker_client):
    federation = make_federation(n_orgs=1)
    name = new_node(shell, real_server, federation.nodes[0].api_key)
    shell.edit_config(name, api_key="00000000-0000-0000-0000-000000000000")
    done = shell.run("start", "--detach", "--name", name)
    assert done.returncode == 3
    assert f"node '{name}' (user) did not start (exit code 3)" in done.stderr
    assert "the last lines of its log" in done.stderr and "not recogni" in done.stderr
    assert "stopped" in shell.run("list").stdout
    assert leftovers(docker_client, name) == NO_LEFTOVERS


def test_restart_applies_a_changed_config_and_sighup_only_logs_it(shell, real_server, make_federation):
    federation = make_federation(n_orgs=1)
    name = new_node(shell, real_server, federation.nodes[0].api_key)
    assert shell.run("start", "--detach", "--name", name).returncode == 0
    pid = int(next(line.split() for line in shell.run("list").stdout.splitlines() if line.startswith(name))[3])
    shell.edit_config(name, max_concurrent_runs=2)
    os.kill(pid, signal.SIGHUP)
    attach = shell.popen("attach", "--name", name)
    lines_until(attach, "max_concurrent_runs: 8 -> 2")
    attach.send_signal(signal.SIGINT)
    attach.communicate(timeout=30)
    restarted = shell.run("restart", "--name", name)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "stopped; nothing left behind" in restarted.stdout and "is online" in restarted.stdout
    new_pid = int(next(line.split() for line in shell.run("list").stdout.splitlines() if line.startswith(name))[3])
    assert new_pid != pid
    assert shell.run("stop", "--name", name).returncode == 0


def test_systemd_type_notify_hears_ready_once_the_node_is_online(shell, real_server, make_federation, tmp_path):
    federation = make_federation(n_orgs=1)
    name = new_node(shell, real_server, federation.nodes[0].api_key)
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(address)
        systemd.settimeout(120)
        shell.env["NOTIFY_SOCKET"] = address
        node = shell.popen("start", "--name", name)  # in the foreground, as systemd runs it
        try:
            ready = systemd.recv(4096).decode()
            assert ready.startswith("READY=1\nSTATUS=online: node ")
            assert f"id {federation.nodes[0].node_id}" in ready
            assert "ready; algorithm proxy at" in shell.log_file(name).read_text()
            node.send_signal(signal.SIGTERM)
            assert systemd.recv(4096) == b"STOPPING=1"
            assert node.wait(60) == 0
        finally:
            if node.poll() is None:
                node.kill()
                node.wait(30)


def test_version_asks_the_server(shell, real_server, make_federation):
    name = new_node(shell, real_server, make_federation(n_orgs=1).nodes[0].api_key)
    done = shell.run("version", "--name", name)
    assert done.stdout.splitlines() == ["v6node 0.1.0", f"server {real_server.api}: vantage6 4.15.2"]


@pytest.fixture(scope="module")
def mfa_server(tmp_path_factory) -> Iterator[RealServer]:
    server = RealServer(tmp_path_factory.mktemp("mfa-server"), two_factor_auth=True)
    server.start()
    yield server
    server.stop()


def test_create_private_key_as_a_user_with_a_two_factor_code(shell, mfa_server):
    with AdminApi(mfa_server) as admin:
        federation = create_federation(admin, "mfa", n_orgs=1, encrypted=True)
        user = federation.user
        name = new_node(shell, mfa_server, federation.nodes[0].api_key)
        # A user who has not set up two-factor authentication yet is told so.
        newcomer = admin.create_user(federation.organization_ids[0], "mfa-newcomer")
        refused = shell.run("create-private-key", "--name", name, "--username", newcomer.username, input=f"{newcomer.password}\n")
        assert refused.returncode == 3
        assert "has not set up two-factor authentication" in refused.stderr
        # The user sets it up (the first login hands out the secret, as the UI shows it as a QR code).
        secrets: dict[str, str] = {}
        with httpx.Client(base_url=mfa_server.api, timeout=30) as http:
            totp.log_in(http, user.username, user.password, secrets)
        answers = f"{user.password}\n{totp.totp(secrets[user.username])}\n"
        done = shell.run("create-private-key", "--name", name, "--username", user.username, "-o", "station-7", input=answers)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Two-factor authentication code" in done.stdout
        key_file = shell.data_dir(name) / "privkey_station-7.pem"
        assert f"private key written to {key_file}" in done.stdout
        config = yaml.safe_load(shell.config_file(name).read_text())
        assert config["encryption"] == {"enabled": True, "private_key": str(key_file)}
        organization = admin.get(f"/organization/{federation.organization_ids[0]}")
        assert organization["public_key"]
        assert f"uploaded to {mfa_server.api} (as '{user.username}')" in done.stdout
        wrong = shell.run(
            "create-private-key", "--name", name, "--username", user.username, "--overwrite", input=f"{user.password}\n000000\n"
        )
        assert wrong.returncode == 3 and "incorrect" in wrong.stderr
