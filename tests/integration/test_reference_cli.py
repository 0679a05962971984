"""The reference CLI (`v6 node`, vantage6 4.15.2 from the rig's server venv) and v6node agree:
the reference reads what `v6node new` writes, and both put a node's files in the same places.

The reference picks its in-container folders (/mnt/...) whenever /.dockerenv exists, which it
does on a test machine that is itself a container; the runner below tells it it is not in
Docker, as on a station's host.
"""
from __future__ import annotations

import re
import subprocess

import pytest
from click.testing import CliRunner

from v6node.app.cli import main
from tests.rig.paths import SERVER_PYTHON

pytestmark = pytest.mark.server

REFERENCE = """
import sys
import vantage6.common.context as context
context.running_in_docker = lambda: False
from vantage6.cli.cli import cli_complete
sys.argv = ["v6", *sys.argv[1:]]
cli_complete()
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    values = {
        "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_CONFIG_DIRS": str(tmp_path / "etc"),
        "XDG_DATA_DIRS": str(tmp_path / "share"), "HOME": str(tmp_path),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def reference(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(SERVER_PYTHON), "-c", REFERENCE, *args], capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def reference_files(env: dict[str, str], *args: str) -> dict[str, str]:
    found = dict(re.findall(r"\] - (Configuration file|Log file|data folders)\s*= (.*)", reference(env, "node", "files", *args)))
    return {"config file": found["Configuration file"], "log file": found["Log file"], "data folder": found["data folders"]}


def ours(*args: str) -> dict[str, str]:
    result = CliRunner().invoke(main, ["files", *args])
    assert result.exit_code == 0, result.output
    return {key: value for key, value in re.findall(r"^(config file|log file|data folder):\s+(.*)$", result.output, re.M)}


@pytest.mark.parametrize("scope", [[], ["--system"]], ids=["user", "system"])
def test_the_reference_reads_a_new_config_and_finds_its_files_where_v6node_does(env, tmp_path, scope):
    data = tmp_path / "patients.csv"
    data.write_text("age\n1\n")
    created = CliRunner().invoke(main, [
        "new", "--no-prompt", "--name", "alpha", *scope, "--api-key", "4b5c-key", "--server-url", "https://v6.example.org",
        "--no-encryption", "--database", f"default={data}", "--allowed-algorithm", "^harbor\\.example\\.org/.*",
    ])
    assert created.exit_code == 0, created.output
    theirs = reference_files(env, "--name", "alpha", *scope)
    assert theirs == ours("--name", "alpha", *scope)
    assert f"default         = {data} (type: csv)" in reference(env, "node", "files", "--name", "alpha", *scope)


def test_the_reference_lists_the_nodes_v6node_made(env):
    for name in ("alpha", "beta"):
        result = CliRunner().invoke(main, ["new", "--no-prompt", "--name", name, "--api-key", "k", "--no-encryption"])
        assert result.exit_code == 0, result.output
    listed = reference(env, "node", "list")
    assert re.search(r"alpha\s+.*Not running.*User", listed) and re.search(r"beta\s+.*Not running.*User", listed)
    assert "Failed imports" not in listed
