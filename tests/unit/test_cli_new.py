"""`v6node new`: the questionnaire, its flags for scripted installs, and what it refuses."""
from __future__ import annotations

import stat

import pytest
import yaml
from click.testing import CliRunner

from v6node.app.cli import main
from v6node.app.config import load_config

FLAGS = ["--api-key", "k-123", "--server-url", "https://v6.example.org/", "--no-encryption"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    for variable, folder in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(variable, str(tmp_path / "home" / folder))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "etc"))
    monkeypatch.setenv("XDG_DATA_DIRS", str(tmp_path / "share"))
    return tmp_path / "home"


def new(*args, input=None):
    return CliRunner().invoke(main, ["new", *args], input=input)


def test_no_prompt_writes_a_reference_config_in_the_user_folder(home, tmp_path):
    data = tmp_path / "patients.csv"
    data.write_text("age\n1\n")
    result = new(
        "--no-prompt", "--name", "alpha", *FLAGS, "--database", f"default={data}", "--database", "db2=postgresql://h/db",
        "--database-type", "db2=sql", "--allowed-algorithm", "^harbor\\.example\\.org/.*", "--log-level", "debug",
    )
    assert result.exit_code == 0, result.output
    file = home / "config" / "vantage6" / "node" / "alpha.yaml"
    assert f"New node config: {file}" in result.output
    written = yaml.safe_load(file.read_text())
    assert written["api_key"] == "k-123"
    assert (written["server_url"], written["port"], written["api_path"]) == ("https://v6.example.org", 443, "/api")
    assert written["task_dir"] == str(home / "data" / "vantage6" / "node" / "alpha")
    assert written["databases"] == [
        {"label": "default", "uri": str(data), "type": "csv"},
        {"label": "db2", "uri": "postgresql://h/db", "type": "sql"},
    ]
    assert written["encryption"] == {"enabled": False, "private_key": ""}
    assert written["policies"] == {"allowed_algorithms": ["^harbor\\.example\\.org/.*"]}
    assert written["logging"]["level"] == "DEBUG"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600  # it holds the API key
    # And our node reads it.
    config = load_config(file, default_data_dir="/d")
    assert config.api_base == "https://v6.example.org:443/api"


def test_an_http_server_gets_port_7601_and_system_goes_to_the_system_folder(home, tmp_path):
    result = new("--no-prompt", "--name", "beta", "--system", "--api-key", "k", "--server-url", "http://localhost", "--no-encryption")
    assert result.exit_code == 0, result.output
    file = tmp_path / "etc" / "vantage6" / "node" / "beta.yaml"
    written = yaml.safe_load(file.read_text())
    assert written["port"] == 7601
    assert written["task_dir"] == str(tmp_path / "share" / "vantage6" / "node" / "beta")
    assert "v6node start --name beta --system" in result.output


def test_an_existing_name_is_never_overwritten(home):
    assert new("--no-prompt", "--name", "alpha", *FLAGS).exit_code == 0
    file = home / "config" / "vantage6" / "node" / "alpha.yaml"
    before = file.read_text()
    again = new("--no-prompt", "--name", "alpha", *FLAGS[:-1], "--encryption")
    assert again.exit_code == 2
    assert "node 'alpha' already exists" in again.output and "v6node remove --name alpha" in again.output
    assert file.read_text() == before


def test_no_prompt_names_the_missing_flag(home):
    result = new("--no-prompt", "--name", "alpha", "--no-encryption")
    assert result.exit_code == 2
    assert "--api-key is required with --no-prompt" in result.output


def test_no_prompt_without_an_encryption_answer_needs_the_server(home):
    # Port 9 on loopback: nothing listens, the answer is immediate.
    result = new("--no-prompt", "--name", "alpha", "--api-key", "k", "--server-url", "http://127.0.0.1", "--port", "9")
    assert result.exit_code == 1
    assert "give --encryption or --no-encryption" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "my node!"], "may only contain letters, digits"),
        (["--name", "a", "--database", "my-db=/x.csv"], "expected a valid identifier"),
        (["--name", "a", "--database", "nothing"], "expected LABEL=URI"),
        (["--name", "a", "--database", "default=/no/such/file.csv"], "no file at /no/such/file.csv"),
    ],
)
def test_bad_answers_are_refused_before_anything_is_written(home, args, message):
    result = new("--no-prompt", *FLAGS, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (home / "config" / "vantage6" / "node").exists() or not list((home / "config" / "vantage6" / "node").iterdir())


def test_the_questionnaire_asks_what_the_flags_do_not_say(home, tmp_path):
    data = tmp_path / "d.parquet"
    data.write_bytes(b"PAR1")
    answers = "\n".join([
        "gamma",                      # name
        "k-9",                        # API key
        "https://v6.example.org",     # server URL
        "",                           # port: the https default
        "",                           # API path: /api
        "y", "default", str(data), "parquet",  # one database
        "n",                          # no more databases
        "",                           # private key: later, with create-private-key
        "y", "^ghcr\\.io/org/.*",    # allowed algorithms
        "n",                          # no more
        "n",                          # no stores
        "WARNING",                    # log level
    ]) + "\n"
    result = new("--encryption", input=answers)
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((home / "config" / "vantage6" / "node" / "gamma.yaml").read_text())
    assert written["api_key"] == "k-9" and written["port"] == 443
    assert written["databases"] == [{"label": "default", "uri": str(data), "type": "parquet"}]
    assert written["policies"] == {"allowed_algorithms": ["^ghcr\\.io/org/.*"]}
    assert written["encryption"]["enabled"] is True
    assert written["logging"]["level"] == "WARNING"


def test_a_folder_that_cannot_be_written_is_named(home, tmp_path):
    blocked = tmp_path / "etc"
    blocked.write_text("a file where the system config folder would be")
    result = new("--no-prompt", "--name", "alpha", "--system", *FLAGS)
    assert result.exit_code == 1
    assert f"v6node: error: {blocked}" in result.output
