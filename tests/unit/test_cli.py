"""The `v6node` command line: exit codes and messages an operator sees."""
import pytest
from click.testing import CliRunner

from v6node.app.cli import exit_code_for, main
from v6node.app.set_up_encryption import EncryptionMismatch
from v6node.domain.errors import (
    AuthenticationFailed,
    CleanupIncomplete,
    ConfigError,
    NodeAlreadyRunning,
    NodeError,
    RuntimeUnavailable,
)


@pytest.fixture(autouse=True)
def own_folders(tmp_path, monkeypatch):
    """The user's vantage6 folders in the test's tmp folder: nothing touches the real ones."""
    for variable, folder in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(variable, str(tmp_path / "home" / folder))


def write(tmp_path, text, name="alpha.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_check_config_accepts_a_good_file_and_says_what_it_will_use(tmp_path):
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    config = write(tmp_path, "api_key: k\nserver_url: http://v6.example.org\nport: 7601\ndatabases:\n  - {label: default, uri: d.csv, type: csv}\n")
    result = CliRunner().invoke(main, ["check-config", "-c", config])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
    assert "http://v6.example.org:7601/api" in result.output
    assert "default (csv, ro)" in result.output


def test_check_config_names_the_key_and_exits_2(tmp_path):
    config = write(tmp_path, "api_key: k\nserver_url: http://s\nport: eighty\n")
    result = CliRunner().invoke(main, ["check-config", "-c", config])
    assert result.exit_code == 2
    assert f"{config}: key 'port': expected an integer" in result.output


def test_start_with_a_broken_config_exits_2_before_doing_anything(tmp_path):
    result = CliRunner().invoke(main, ["start", "-c", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "cannot read the file" in result.output


def test_files_prints_the_folders(tmp_path):
    config = write(tmp_path, f"api_key: k\nserver_url: http://s\ndirectories: {{data: {tmp_path}/d}}\n")
    result = CliRunner().invoke(main, ["files", "-c", config])
    assert result.exit_code == 0
    assert f"config file: {tmp_path}/alpha.yaml" in result.output
    assert f"data folder: {tmp_path}/d\n" in result.output
    # The log folder follows the reference's rule (the user's cache folder), not the data folder.
    log_dir = tmp_path / "home" / "cache" / "vantage6" / "log" / "node" / "alpha"
    assert f"log folder:  {log_dir}\n" in result.output
    assert f"log file:    {log_dir}/node_user.log\n" in result.output
    assert f"journal:     {tmp_path}/d/journal.sqlite\n" in result.output
    assert f"task folder: {tmp_path}/d/tasks\n" in result.output


def test_version_prints_the_package_version():
    result = CliRunner().invoke(main, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == "v6node 0.1.0"


def test_exit_codes_map_each_failure_kind():
    assert exit_code_for(ConfigError("f", "k", "bad")) == 2
    assert exit_code_for(EncryptionMismatch("x")) == 2
    assert exit_code_for(AuthenticationFailed("x")) == 3
    assert exit_code_for(RuntimeUnavailable("x")) == 4
    assert exit_code_for(CleanupIncomplete("x")) == 5
    assert exit_code_for(NodeAlreadyRunning("x")) == 2
    assert exit_code_for(NodeError("x")) == 1
    assert exit_code_for(ValueError("x")) == 1


def test_check_policy_explains_a_denial_offline(tmp_path):
    text = "api_key: k\nserver_url: http://127.0.0.1:9\npolicies:\n  allowed_algorithms: ['^127\\.0\\.0\\.1:5999/approved-.*']\n  allowed_users: [7]\n"
    config = write(tmp_path, text)
    runner = CliRunner()
    denied = runner.invoke(main, ["check-policy", "-c", config, "--offline", "--user-id", "7", "127.0.0.1:5999/other:1"])
    assert denied.exit_code == 1
    assert "NOT allowed" in denied.output and "allowed_algorithms" in denied.output
    allowed = runner.invoke(main, ["check-policy", "-c", config, "--offline", "--user-id", "7", "127.0.0.1:5999/approved-mean:1"])
    assert allowed.exit_code == 0 and "allowed" in allowed.output
    wrong_user = runner.invoke(main, ["check-policy", "-c", config, "--offline", "--user-id", "8", "127.0.0.1:5999/approved-mean:1"])
    assert wrong_user.exit_code == 1 and "allowed_users" in wrong_user.output
    # --user is the folder flag (with --system) here as in every command; the user's id is --user-id.
    scoped = runner.invoke(main, ["check-policy", "-c", config, "--user", "--offline", "--user-id", "7", "127.0.0.1:5999/approved-mean:1"])
    assert scoped.exit_code == 0, scoped.output


def test_replace_file_replaces_a_link_instead_of_writing_through_it(tmp_path):
    from v6node.app.cli import replace_file

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    key = tmp_path / "key.pem"
    key.symlink_to(victim)

    replace_file(key, b"new key", 0o600)

    assert victim.read_text() == "keep me"
    assert not key.is_symlink() and key.read_bytes() == b"new key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.pem", "victim"]  # no temporary left


def test_private_folders_are_created_for_this_user_only_and_open_ones_are_warned_about(tmp_path, caplog):
    from v6node.app.cli import private_folder

    created = tmp_path / "data" / "node"
    private_folder(created)
    assert [(p.stat().st_mode & 0o777) for p in (created, created.parent)] == [0o700, 0o700]
    assert "can be read by other users" not in caplog.text

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    private_folder(shared)
    assert "can be read by other users (mode 0755)" in caplog.text
    assert shared.stat().st_mode & 0o777 == 0o755  # the operator's folder is not changed behind their back


EGRESS_YAML = """\
api_key: k
server_url: http://v6.example.org
port: 7601
whitelist:
  domains: [.data.example.org]
  ips: [8.8.8.8]
  ports: [443]
ssh-tunnels:
  - hostname: db
    ssh:
      host: ssh.example.org
      fingerprint: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl
      identity: {username: tunnel-user, key: tunnel.pem}
    tunnel:
      bind: {ip: 0.0.0.0, port: 8000}
      dest: {ip: 127.0.0.1, port: 5432}
docker_services:
  pg: my-postgres
"""


def test_check_config_shows_what_algorithms_may_reach_and_no_secret(tmp_path):
    (tmp_path / "tunnel.pem").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n")
    (tmp_path / "tunnel.pem").chmod(0o600)
    result = CliRunner().invoke(main, ["check-config", "-c", write(tmp_path, EGRESS_YAML)])
    assert result.exit_code == 0, result.output
    for shown in (
        "whitelist:    algorithms reach it through http://squid:3128",
        "domains:    .data.example.org", "ips:        8.8.8.8", "ports:      443",
        "8.8.8.8 is outside the private ranges",
        "ssh tunnel:   db:8000 -> 127.0.0.1:5432 via ssh.example.org:22",
        "linked:       pg -> container my-postgres",
    ):
        assert shown in result.output
    for secret in ("tunnel.pem", "AAAAC3Nza", "tunnel-user", "secret"):
        assert secret not in result.output


def test_a_malformed_whitelist_exits_2_naming_the_key(tmp_path):
    config = write(tmp_path, "api_key: k\nserver_url: http://s\nwhitelist:\n  domains: example.org\n  port: [443]\n")
    result = CliRunner().invoke(main, ["check-config", "-c", config])
    assert result.exit_code == 2
    assert f"{config}: key 'whitelist.port': unknown key" in result.output
