import logging
import os
import textwrap

import pytest

from v6node.app.config import load_config
from v6node.domain.config import AlgorithmLimits
from v6node.domain.errors import ConfigError

# A complete config as `v6 node new` writes it for vantage6 4.x.
REFERENCE_CONFIG = """\
api_key: 6b1b1b6e-0d8c-4d5f-9a55-0f6b6c4f4b9a
api_path: /api
databases:
  - label: default
    type: csv
    uri: data/patients.csv
  - label: omop
    type: sql
    uri: postgresql://user:pw@db:5432/omop
    env:
      user: reader
encryption:
  enabled: false
  private_key: ''
logging:
  backup_count: 5
  datefmt: '%Y-%m-%d %H:%M:%S'
  format: '%(asctime)s - %(name)-14s - %(levelname)-8s - %(message)s'
  level: DEBUG
  max_size: 1024
  use_console: true
  loggers:
    - name: urllib3
      level: warning
policies:
  allowed_algorithms:
    - ^harbor2\\.vantage6\\.ai/.*
  allowed_users: [2, "5"]
  require_algorithm_pull: false
port: 7601
server_url: http://localhost/
task_dir: /home/me/.local/share/vantage6/node/alpha
vpn_subnet: 10.76.0.0/16
algorithm_env:
  MY_FLAG: 1
"""


def write(tmp_path, text, name="alpha.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_reference_config_loads(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "patients.csv").write_text("age,weight\n1,2\n")
    config = load_config(write(tmp_path, REFERENCE_CONFIG), default_data_dir=str(tmp_path / "data"))
    assert config.name == "alpha"
    assert config.server_url == "http://localhost"
    assert config.api_base == "http://localhost:7601/api"
    assert config.server_root == "http://localhost:7601"
    assert config.databases[0].uri == str(tmp_path / "data" / "patients.csv")
    assert config.databases[0].mount_mode == "ro"
    assert config.databases[1].uri == "postgresql://user:pw@db:5432/omop"
    assert config.databases[1].env == {"user": "reader"}
    assert config.policies.allowed_users == ("2", "5")
    assert config.policies.allowed_algorithms == ("^harbor2\\.vantage6\\.ai/.*",)
    assert config.policies.require_algorithm_pull is False
    assert config.private_key is None
    assert config.logging.level == "DEBUG"
    assert config.logging.loggers == (("urllib3", "WARNING"),)
    assert config.algorithm_env == {"MY_FLAG": "1"}
    assert config.data_dir == str(tmp_path / "data")
    assert config.max_concurrent_runs == 8


def test_minimal_config_gets_defaults(tmp_path):
    config = load_config(write(tmp_path, "api_key: k\nserver_url: https://v6.example.org\n"), "/d")
    assert config.api_base == "https://v6.example.org/api"
    assert config.databases == ()
    assert config.encryption_enabled is False
    assert config.share_config is True
    assert config.policies.require_algorithm_pull is True
    assert config.log_dir == "/d/log"


def test_unknown_keys_are_ignored_with_a_warning(tmp_path, caplog):
    path = write(tmp_path, "api_key: k\nserver_url: http://s\nfancy_feature: 1\npolicies: {allowed_algos: x}\n")
    with caplog.at_level(logging.WARNING, logger="v6node.config"):
        load_config(path, "/d")
    assert f"{path}: unknown key 'fancy_feature' is ignored" in caplog.text
    assert "unknown key 'policies.allowed_algos' is ignored" in caplog.text


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("server_url: http://s\n", "api_key", "is required"),
        ("api_key: k\n", "server_url", "is required"),
        ("api_key: k\nserver_url: http://s\nport: '80'\n", "port", "expected an integer"),
        ("api_key: k\nserver_url: http://s\nport: true\n", "port", "expected an integer"),
        ("api_key: k\nserver_url: s.example\n", "server_url", "http://"),
        ("api_key: k\nserver_url: http://s\nencryption: {enabled: 'yes'}\n", "encryption.enabled", "true or false"),
        ("api_key: k\nserver_url: http://s\ndatabases: [{uri: x.csv}]\n", "databases[0].label", "is required"),
        ("api_key: k\nserver_url: http://s\ndatabases: [{label: a, uri: nowhere.csv}]\n", "databases[0].uri", "database 'a' (csv): no file at"),
        ("api_key: k\nserver_url: http://s\ndatabases: [{label: a, uri: nowhere, type: folder}]\n", "databases[0].uri", "no folder at"),
        ("api_key: k\nserver_url: http://s\nalgorithm_memory: lots\n", "algorithm_memory", "a size such as"),
        ("api_key: k\nserver_url: http://s\nalgorithm_cpus: 0\n", "algorithm_cpus", "a number > 0"),
        ("api_key: k\nserver_url: http://s\ndatabases: [{label: my-db, uri: x, type: sql}]\n", "databases[0].label", "identifier"),
        ("api_key: k\nserver_url: http://s\ndatabases: [{label: a, uri: x, type: mongo}]\n", "databases[0].type", "expected one of"),
        ("api_key: k\nserver_url: http://s\ndatabases: [{label: a, uri: x, type: sql, mount_mode: rw}]\n", "databases[0].mount_mode", "'ro' or 'copy'"),
        ("api_key: k\nserver_url: http://s\ndatabases: [{label: a, uri: x, type: sql}, {label: a, uri: y, type: sql}]\n", "databases[1].label", "used twice"),
        ("api_key: k\nserver_url: http://s\nlogging: {level: LOUD}\n", "logging.level", "expected one of"),
        ("api_key: k\nserver_url: http://s\npolicies: {allowed_users: [{id: 1}]}\n", "policies.allowed_users[0]", "string or an integer"),
        ("api_key: k\nserver_url: http://s\nmax_concurrent_runs: 0\n", "max_concurrent_runs", ">= 1"),
        ("api_key: k\nserver_url: http://s\nalgorithm_env: {A: [1]}\n", "algorithm_env.A", "plain value"),
    ],
)
def test_bad_values_name_the_file_and_the_key(tmp_path, text, key, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, "/d")
    assert info.value.file == str(path)
    assert info.value.key == key
    assert expected in str(info.value)
    assert str(path) in str(info.value) and key in str(info.value)


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.yaml", "/d")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "api_key: [unclosed\n"), "/d")
    with pytest.raises(ConfigError, match="mapping of settings"):
        load_config(write(tmp_path, "- a\n- b\n"), "/d")


def test_node_name_must_suit_docker(tmp_path):
    with pytest.raises(ConfigError, match="node name"):
        load_config(write(tmp_path, "api_key: k\nserver_url: http://s\n", name="my node.yaml"), "/d")


def test_limits_and_v6node_keys(tmp_path):
    text = "api_key: k\nserver_url: http://s\nalgorithm_cpus: 1.5\nalgorithm_memory: 512m\nalgorithm_pids_limit: 64\nalgorithm_time_limit: 600\nkeep_task_folders: true\nsync_interval: 30\n"
    config = load_config(write(tmp_path, text), "/d")
    assert config.limits.cpus == 1.5
    assert config.limits.memory == 512 * 1024 * 1024
    assert config.limits.pids == 64
    assert config.limits.seconds == 600
    assert config.keep_task_folders is True
    assert config.sync_interval == 30
    defaults = load_config(write(tmp_path, "api_key: k\nserver_url: http://s\n", "b.yaml"), "/d")
    assert defaults.limits.pids == 1024 and defaults.sync_interval == 300
    assert load_config(write(tmp_path, "api_key: k\nserver_url: http://s\nalgorithm_memory: 2GiB\n", "c.yaml"), "/d").limits.memory == 2 * 1024**3


def test_absent_limits_are_safe_defaults_and_null_lifts_them(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    defaults = load_config(write(tmp_path, "api_key: k\nserver_url: https://s\n", "a.yaml"), "/d")
    assert defaults.limits == AlgorithmLimits(
        cpus=4.0, memory=4 * 1024**3, pids=1024, seconds=86400.0, log_size=10 * 1024**2,
        read_only_root=True, tmp_size=1024**3, user=None,
    )
    assert defaults.max_input_size == 512 * 1024**2
    text = (
        "api_key: k\nserver_url: https://s\nalgorithm_cpus: null\nalgorithm_memory: null\nalgorithm_time_limit: null\n"
        "algorithm_pids_limit: null\nalgorithm_read_only_root: false\nalgorithm_user: '1000:1000'\n"
        "max_log_size: 1m\nalgorithm_tmp_size: 64m\nmax_input_size: 2g\n"
    )
    lifted = load_config(write(tmp_path, text, "b.yaml"), "/d")
    assert lifted.limits == AlgorithmLimits(
        cpus=None, memory=None, pids=None, seconds=None, log_size=1024**2,
        read_only_root=False, tmp_size=64 * 1024**2, user="1000:1000",
    )
    assert lifted.max_input_size == 2 * 1024**3
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert load_config(write(tmp_path, "api_key: k\nserver_url: https://s\n", "c.yaml"), "/d").limits.cpus == 1.0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("max_log_size: null\n", "max_log_size"),
        ("max_input_size: null\n", "max_input_size"),
        ("algorithm_user: 'root; rm -rf /'\n", "algorithm_user"),
        ("algorithm_user: true\n", "algorithm_user"),
    ],
)
def test_limits_that_cannot_be_lifted_or_make_no_sense_are_refused(tmp_path, text, key):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "api_key: k\nserver_url: https://s\n" + text), "/d")
    assert info.value.key == key


def test_the_api_key_never_shows_in_repr_or_in_errors(tmp_path):
    config = load_config(write(tmp_path, "api_key: 7c1f-secret-api-key\nserver_url: https://s\n"), "/d")
    assert "7c1f-secret-api-key" not in repr(config)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "api_key: [7c1f-secret-api-key]\nserver_url: https://s\n", "b.yaml"), "/d")
    assert info.value.key == "api_key" and "7c1f-secret-api-key" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://v6.example.org", True),
        ("http://10.0.0.5", True),
        ("https://v6.example.org", False),
        ("http://localhost", False),
        ("http://127.0.0.1", False),
        ("http://[::1]", False),
    ],
)
def test_plain_http_to_another_machine_is_warned_about(tmp_path, caplog, url, warned):
    load_config(write(tmp_path, f"api_key: k\nserver_url: '{url}'\n"), "/d")
    assert ("unencrypted" in caplog.text) is warned


def test_docker_registries_are_read_and_checked(tmp_path):
    text = "api_key: k\nserver_url: http://s\ndocker_registries:\n  - {registry: harbor.example.org, username: u, password: s3cret}\n"
    config = load_config(write(tmp_path, text), "/d")
    assert [(r.registry, r.username, r.password) for r in config.docker_registries] == [("harbor.example.org", "u", "s3cret")]
    assert "s3cret" not in repr(config.docker_registries[0])
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "api_key: k\nserver_url: http://s\ndocker_registries: [{registry: r}]\n", "b.yaml"), "/d")
    assert info.value.key == "docker_registries[0].username"
