"""`stop`, `list`, `attach`, `remove`, `clean`, `set-api-key` and the clear error of each misuse.

A "running node" here is a small process that holds the node's data folder lock, as
`v6node start` does, and writes what it reads on stdin to the node's log; the commands find
it exactly as they find a node (tests/e2e/test_operator_cli.py runs the real node).
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from v6node.app.cli import main

pytestmark = pytest.mark.docker  # the commands also look for node containers and leftovers in Docker

HOLDER = """
import signal, sys
from pathlib import Path
from v6node.adapters.system.data_folder_lock import DataFolderLock
if sys.argv[3] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
DataFolderLock(sys.argv[1]).acquire()
Path(sys.argv[2]).parent.mkdir(parents=True, exist_ok=True)
log = open(sys.argv[2], "a")
print("locked", flush=True)
for line in sys.stdin:
    log.write(line)
    log.flush()
"""


class Home:
    """The user's vantage6 folders in a tmp folder, and the environment that points at them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {
            "XDG_CONFIG_HOME": str(root / "config"), "XDG_DATA_HOME": str(root / "data"),
            "XDG_CACHE_HOME": str(root / "cache"), "XDG_CONFIG_DIRS": str(root / "etc"),
            "XDG_DATA_DIRS": str(root / "share"),
        }
        self.holders: list[subprocess.Popen[str]] = []

    def config(self, name: str) -> Path:
        return self.root / "config" / "vantage6" / "node" / f"{name}.yaml"

    def data(self, name: str) -> Path:
        return self.root / "data" / "vantage6" / "node" / name

    def log(self, name: str) -> Path:
        return self.root / "cache" / "vantage6" / "log" / "node" / name / "node_user.log"

    def new(self, name: str | None = None) -> str:
        name = name or f"cli-{uuid.uuid4().hex[:8]}"
        result = v6node("new", "--no-prompt", "--name", name, "--api-key", "k", "--server-url", "http://127.0.0.1",
                        "--port", "9", "--no-encryption")
        assert result.exit_code == 0, result.output
        return name

    def run_node(self, name: str, ignore_term: bool = False) -> subprocess.Popen[str]:
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(self.data(name)), str(self.log(name)), "ignore-term" if ignore_term else "-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.holders.append(holder)
        assert holder.stdout.readline() == "locked\n"
        return holder

    def command(self, *args: str) -> subprocess.Popen[str]:
        """``v6node *args`` as a process of its own (for commands that follow a log)."""
        executable = Path(sys.executable).with_name("v6node")
        return subprocess.Popen(
            [str(executable), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
        )


def v6node(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = Home(tmp_path / "home")
    for key, value in home.env.items():
        monkeypatch.setenv(key, value)
    yield home
    for holder in home.holders:
        if holder.poll() is None:
            holder.kill()
        holder.wait(30)


def test_list_says_when_no_node_is_configured(home):
    result = v6node("list")
    assert result.exit_code == 0
    assert "no node is configured: create one with `v6node new`" in result.output


def test_list_shows_each_node_running_or_stopped_with_pid_server_and_since(home):
    stopped, running = sorted([home.new(), home.new()])
    holder = home.run_node(running)
    result = v6node("list")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines()[1:]}
    assert lines[running][1:5] == ["user", "running", str(holder.pid), "http://127.0.0.1:9/api"]
    assert lines[stopped][1:5] == ["user", "stopped", "-", "http://127.0.0.1:9/api"]
    assert result.output.splitlines()[0].split() == ["NAME", "SCOPE", "STATUS", "PID", "SERVER", "SINCE"]


def test_a_second_start_of_a_running_node_is_refused_with_its_pid(home):
    name = home.new()
    holder = home.run_node(name)
    result = v6node("start", "--detach", "--name", name)
    assert result.exit_code == 2
    assert f"node '{name}' (user) is already running (PID {holder.pid})" in result.output
    assert f"v6node attach --name {name}" in result.output


def test_stop_ends_the_node_with_sigterm_and_checks_nothing_is_left(home):
    name = home.new()
    holder = home.run_node(name)
    result = v6node("stop", "--name", name)
    assert result.exit_code == 0, result.output
    assert f"node '{name}' (user) stopped; nothing left behind" in result.output
    assert holder.wait(30) == -signal.SIGTERM
    again = v6node("stop", "--name", name)
    assert again.exit_code == 1
    assert f"node '{name}' (user) is not running" in again.output


def test_stop_reports_what_the_node_left_with_exit_5(home):
    name = home.new()
    home.run_node(name)
    (home.data(name) / "tasks" / "task-000000007").mkdir(parents=True)
    result = v6node("stop", "--name", name)
    assert result.exit_code == 5
    assert "task folder" in result.output and "task-000000007" in result.output
    assert f"v6node clean --name {name}" in result.output


def test_a_node_that_ignores_sigterm_is_not_killed_without_force(home):
    name = home.new()
    holder = home.run_node(name, ignore_term=True)
    result = v6node("stop", "--name", name, "--timeout", "0.5")
    assert result.exit_code == 1
    assert "has not stopped within 0.5 s" in result.output and "--force" in result.output
    assert holder.poll() is None


def test_stop_force_kills_after_the_timeout_and_removes_what_was_left(home):
    name = home.new()
    holder = home.run_node(name, ignore_term=True)
    folder = home.data(name) / "tasks" / "task-000000003"
    folder.mkdir(parents=True)
    result = v6node("stop", "--name", name, "--timeout", "0.5", "--force")
    assert result.exit_code == 0, result.output
    assert holder.wait(30) == -signal.SIGKILL
    assert f"removed task folder {folder}" in result.output
    assert not folder.exists()


def test_stop_all_stops_every_running_node(home):
    names = [home.new() for _ in range(3)]
    holders = [home.run_node(name) for name in names[:2]]
    result = v6node("stop", "--all")
    assert result.exit_code == 0, result.output
    assert [holder.wait(30) for holder in holders] == [-signal.SIGTERM] * 2
    assert v6node("stop", "--all").output.strip() == "no node is running"


def test_attach_follows_the_log_and_ctrl_c_leaves_the_node_running(home):
    name = home.new()
    holder = home.run_node(name)
    holder.stdin.write("before attach\n")
    holder.stdin.flush()
    attach = home.command("attach", "--name", name, "--tail", "5")
    assert attach.stdout.readline() == "before attach\n"
    holder.stdin.write("run 12 (task 4) started\n")
    holder.stdin.flush()
    assert attach.stdout.readline() == "run 12 (task 4) started\n"
    attach.send_signal(signal.SIGINT)
    _, err = attach.communicate(timeout=30)
    assert attach.returncode == 0
    assert f"detached; node '{name}' (user) goes on running" in err
    assert holder.poll() is None


def test_attach_ends_when_the_node_stops(home):
    name = home.new()
    holder = home.run_node(name)
    attach = home.command("attach", "--name", name)
    holder.stdin.write("last words\n")
    holder.stdin.flush()
    assert attach.stdout.readline() == "last words\n"
    holder.terminate()
    _, err = attach.communicate(timeout=30)
    assert attach.returncode == 0
    assert f"node '{name}' (user) has stopped" in err


def test_attach_to_a_stopped_node_names_its_log(home):
    name = home.new()
    result = v6node("attach", "--name", name)
    assert result.exit_code == 1
    assert f"node '{name}' (user) is not running; its log is {home.log(name)}" in result.output


def test_remove_refuses_while_the_node_runs(home):
    name = home.new()
    home.run_node(name)
    result = v6node("remove", "--name", name, "--force")
    assert result.exit_code == 2
    assert "is running" in result.output and f"v6node stop --name {name}" in result.output
    assert home.config(name).exists()


def test_remove_asks_and_then_deletes_config_data_and_logs(home):
    name = home.new()
    holder = home.run_node(name)
    holder.stdin.write("a log line\n")
    holder.stdin.close()
    holder.wait(30)
    declined = v6node("remove", "--name", name, input="n\n")
    assert declined.exit_code == 1 and "nothing removed" in declined.output
    assert home.config(name).exists()
    result = v6node("remove", "--name", name, input="y\n")
    assert result.exit_code == 0, result.output
    for path in (home.config(name), home.data(name), home.log(name).parent):
        assert f"removed {path}" in result.output
        assert not path.exists()
    assert v6node("files", "--name", name).exit_code == 2


def test_clean_removes_task_folders_of_stopped_nodes_and_skips_running_ones(home):
    stopped, running = home.new(), home.new()
    home.run_node(running)
    for name in (stopped, running):
        (home.data(name) / "tasks" / "task-000000001").mkdir(parents=True)
    result = v6node("clean")
    assert result.exit_code == 0, result.output
    assert f"removed task folder {home.data(stopped)}/tasks/task-000000001" in result.output
    assert f"skipped node '{running}' (user): it is running" in result.output
    assert (home.data(running) / "tasks" / "task-000000001").exists()
    assert "nothing to clean" in v6node("clean", "--name", stopped).output


def test_set_api_key_writes_the_key_and_keeps_the_file_private(home):
    name = home.new()
    holder = home.run_node(name)
    result = v6node("set-api-key", "--name", name, "--api-key", "new-key")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(home.config(name).read_text())["api_key"] == "new-key"
    assert stat.S_IMODE(home.config(name).stat().st_mode) == 0o600
    assert f"it runs with the old key until restarted: v6node restart --name {name}" in result.output
    assert holder.poll() is None
    prompted = v6node("set-api-key", "--name", name, input="from-the-prompt\n")
    assert prompted.exit_code == 0
    assert yaml.safe_load(home.config(name).read_text())["api_key"] == "from-the-prompt"


def test_version_names_a_server_that_does_not_answer(home):
    name = home.new()
    result = v6node("version", "--name", name)
    assert result.exit_code == 0
    assert result.output.splitlines()[0] == "v6node 0.1.0"
    assert "server http://127.0.0.1:9/api: no answer" in result.output


COMMANDS = [
    ["start"], ["start", "--detach"], ["stop"], ["restart"], ["attach"], ["files"], ["check-config"],
    ["set-api-key", "--api-key", "k"], ["remove", "-f"], ["clean"], ["version"], ["create-private-key"],
    ["check-policy", "img:1"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_every_command_names_an_unknown_node_clearly(home, command):
    home.new("known")
    result = v6node(*command, "--name", "nosuch")
    assert result.exit_code == 2, result.output
    assert "no node named 'nosuch'" in result.output
    assert "configured there: known" in result.output
    assert "v6node new --name nosuch" in result.output


def test_a_node_of_the_other_scope_is_pointed_at(home):
    name = home.new()
    result = v6node("files", "--name", name, "--system")
    assert result.exit_code == 2
    assert "there is one in the user folders: add --user" in result.output


def test_name_and_config_file_together_are_refused(home, tmp_path):
    result = v6node("files", "--name", "a", "-c", str(tmp_path / "a.yaml"))
    assert result.exit_code == 2
    assert "give the node's --name or its config file (-c), not both" in result.output


def test_no_node_given_and_none_configured_says_how_to_make_one(home):
    result = v6node("stop")
    assert result.exit_code == 2
    assert "none is configured in" in result.output and "v6node new" in result.output
