"""The small parts behind the operator commands: readiness, SIGHUP's diff, processes, host paths."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone

import attrs
import docker.errors
import pytest

from v6node.adapters.docker.host_paths import HostPaths, own_container_id
from v6node.adapters.system.processes import ProcessGone, send_signal, started_at, wait_for_exit
from v6node.adapters.system.readiness import ReadinessNotifier
from v6node.app.cli.run import reloader
from v6node.app.config_changes import config_changes
from v6node.domain.config import NodeConfig, PolicyConfig
from v6node.domain.errors import ConfigError, ContainerStartFailed

CONFIG = NodeConfig(
    name="alpha", api_key="secret-key", server_url="http://s", port=7601, api_path="/api", data_dir="/d",
    log_dir="/l", source="/etc/vantage6/node/alpha.yaml",
)


def test_systemd_hears_ready_when_the_node_is_online_and_stopping_when_it_stops(tmp_path):
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(address)
        notifier = ReadinessNotifier(notify_socket=address)
        notifier.ready({"summary": "node 'a' (id 3)"})
        notifier.stopping()
        assert systemd.recv(1024) == b"READY=1\nSTATUS=online: node 'a' (id 3)"
        assert systemd.recv(1024) == b"STOPPING=1"


def test_an_abstract_notify_socket_works_too():
    name = f"v6node-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name)
        ReadinessNotifier(notify_socket="@" + name).ready({"summary": "x"})
        assert systemd.recv(1024).startswith(b"READY=1")


def test_the_starting_command_gets_one_json_line_then_the_end_of_the_pipe():
    read_end, write_end = os.pipe()
    notifier = ReadinessNotifier(ready_fd=write_end)
    notifier.ready({"summary": "online", "node_id": 4})
    notifier.ready({"summary": "again"})  # once only: the pipe is closed
    with os.fdopen(read_end, "rb") as reader:
        assert reader.read() == json.dumps({"summary": "online", "node_id": 4}).encode() + b"\n"


def test_notifying_nobody_does_nothing_and_a_gone_reader_does_not_stop_the_node(caplog):
    ReadinessNotifier().ready({"summary": "x"})
    read_end, write_end = os.pipe()
    os.close(read_end)
    ReadinessNotifier(ready_fd=write_end).ready({"summary": "x"})  # EPIPE is logged, not raised
    ReadinessNotifier(notify_socket="/nonexistent/socket").ready({"summary": "x"})
    assert "could not notify systemd at /nonexistent/socket" in caplog.text


def test_config_changes_name_each_setting_and_hide_secrets():
    new = attrs.evolve(
        CONFIG, api_key="other", max_concurrent_runs=2, policies=PolicyConfig(allowed_algorithms=("^a$",)),
    )
    assert config_changes(CONFIG, new) == [
        "api_key: (changed; not shown)",
        "max_concurrent_runs: 8 -> 2",
        "policies.allowed_algorithms: () -> ('^a$',)",
    ]
    assert config_changes(CONFIG, attrs.evolve(CONFIG, source="elsewhere")) == []


def test_sighup_logs_what_differs_and_keeps_the_running_config(caplog):
    caplog.set_level(logging.INFO)
    reads = iter([attrs.evolve(CONFIG, sync_interval=60.0), CONFIG])
    reload = reloader(CONFIG, lambda: next(reads))
    reload()
    assert "1 setting(s) differ from the running node's: sync_interval: 300.0 -> 60.0" in caplog.text
    assert "restarted (`v6node restart`)" in caplog.text
    reload()
    assert f"SIGHUP: {CONFIG.source} re-read; nothing changed" in caplog.text


def test_sighup_with_a_broken_config_says_so_and_goes_on(caplog):
    def broken() -> NodeConfig:
        raise ConfigError("alpha.yaml", "port", "expected an integer")

    reloader(CONFIG, broken)()
    assert "SIGHUP: the config was not re-read: alpha.yaml: key 'port': expected an integer" in caplog.text


def test_waiting_for_a_process_returns_when_it_ends():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        began = started_at(child.pid)
        assert began is not None and abs((datetime.now(timezone.utc) - began).total_seconds()) < 120
        assert wait_for_exit(child.pid, 0.05) is False
        child.stdin.close()
        assert wait_for_exit(child.pid, 60) is True
    finally:
        child.wait(30)
    with pytest.raises(ProcessGone):
        send_signal(child.pid, 15)


MOUNTINFO = (
    "96 78 254:0 /var/lib/docker/containers/{id}/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda rw\n"
    "97 78 254:0 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/vda rw\n"
)


def test_the_own_container_id_comes_from_the_engines_files_in_mountinfo(tmp_path):
    container_id = "ab" * 32
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO.format(id=container_id))
    assert own_container_id(str(info)) == container_id
    info.write_text("22 1 0:21 / /proc rw - proc proc rw\n")
    assert own_container_id(str(info)) is None


def test_host_paths_map_paths_under_the_containers_mounts_to_their_sources():
    inspected = []

    def inspect(name: str) -> dict:
        inspected.append(name)
        if name == "gone":
            raise docker.errors.NotFound("no such container")
        return {"Name": "/vantage6-a-user", "Mounts": [
            {"Destination": "/mnt/data", "Source": "/var/lib/docker/volumes/vantage6-a-user-vol/_data"},
            {"Destination": "/mnt/default.csv", "Source": "/srv/data/patients.csv"},
            {"Destination": "/mnt", "Source": "/srv/mnt"},
        ]}

    paths = HostPaths(inspect, ("gone", "vantage6-a-user"))
    assert paths.host_path("/mnt/data/tasks/task-000000001") == (
        "/var/lib/docker/volumes/vantage6-a-user-vol/_data/tasks/task-000000001"
    )
    assert paths.host_path("/mnt/default.csv") == "/srv/data/patients.csv"
    assert paths.host_path("/mnt/other") == "/srv/mnt/other"  # the longest mount wins
    assert paths.host_path("/mnt/data2/x") == "/srv/mnt/data2/x"  # not under /mnt/data
    with pytest.raises(ContainerStartFailed, match="own file system"):
        paths.host_path("/tmp/task")
    assert inspected == ["gone", "vantage6-a-user"]  # read once


def test_host_paths_without_a_known_container_say_which_names_were_tried():
    def inspect(name: str) -> dict:
        raise docker.errors.NotFound(name)

    with pytest.raises(ContainerStartFailed, match="vantage6-a-user"):
        HostPaths(inspect, ("vantage6-a-user",)).host_path("/mnt/data/x")
