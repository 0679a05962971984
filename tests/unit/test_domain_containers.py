import pytest

from v6node.domain.config import DatabaseConfig
from v6node.domain.containers import (
    AlgorithmSettings,
    build_container_spec,
    decode_env_value,
    encode_env_value,
    task_folder_name,
)
from v6node.domain.errors import InvalidRunEnvironment
from v6node.domain.model import RequestedDatabase, Run, TaskRef


def make_run(run_id=42, databases=(), job_id=7):
    task = TaskRef(id=3, image="127.0.0.1:5999/echo-algo:1", collaboration_id=1, job_id=job_id, databases=databases)
    return Run(id=run_id, task=task, input="e30=")


def settings(**changes):
    base = dict(
        node_name="alpha",
        tasks_dir="/srv/node/tasks",
        network="vantage6-alpha-user-net",
        proxy_host="172.18.0.1",
        proxy_port=41234,
    )
    base.update(changes)
    return AlgorithmSettings(**base)


def test_env_values_use_base32_with_bang_padding():
    assert encode_env_value("abc") == "MFRGG!!!"
    assert decode_env_value("MFRGG!!!") == "abc"
    assert decode_env_value(encode_env_value("ünïcode / ,=")) == "ünïcode / ,="


def test_task_folder_name_is_zero_padded():
    assert task_folder_name(42) == "task-000000042"


def test_spec_has_every_env_var_encoded():
    spec = build_container_spec(make_run(), settings())
    env = {k: decode_env_value(v) for k, v in spec.environment.items()}
    assert env == {
        "INPUT_FILE": "/mnt/data/task-000000042/input",
        "OUTPUT_FILE": "/mnt/data/task-000000042/output",
        "TOKEN_FILE": "/mnt/data/task-000000042/token",
        "TEMPORARY_FOLDER": "/mnt/tmp",
        "HOST": "http://172.18.0.1",
        "PORT": "41234",
        "API_PATH": "",
        "USER_REQUESTED_DATABASE_LABELS": "",
        "DB_LABELS": "",
    }


def test_spec_mounts_only_its_own_task_folder_and_the_jobs_tmp_volume():
    spec = build_container_spec(make_run(), settings())
    assert [(m.source, m.target, m.read_only, m.kind) for m in spec.mounts] == [
        ("/srv/node/tasks/task-000000042", "/mnt/data/task-000000042", False, "bind"),
        ("vantage6-alpha-user-7-tmpvol", "/mnt/tmp", False, "volume"),
    ]
    assert spec.name == "vantage6-alpha-run-42"
    assert spec.network == "vantage6-alpha-user-net"
    assert spec.labels["vantage6-type"] == "algorithm"
    assert spec.labels["node"] == "alpha"
    assert spec.labels["run_id"] == "42"
    assert spec.labels["v6node.node"] == "alpha"
    assert spec.cap_drop == ("ALL",)
    assert spec.security_opt == ("no-new-privileges",)


def test_databases_give_uris_types_params_and_read_only_mounts():
    dbs = (
        DatabaseConfig(label="default", uri="/data/patients.csv", type="csv", env={"sep": ";"}),
        DatabaseConfig(label="images", uri="/data/imgs", type="folder"),
        DatabaseConfig(label="warehouse", uri="postgresql://db/x", type="sql"),
    )
    requested = (
        RequestedDatabase("warehouse", {"query": "SELECT 1", "preprocessing": [{"f": 1}]}),
        RequestedDatabase("default", {"sheet_name": "s1"}),
    )
    spec = build_container_spec(make_run(databases=requested), settings(databases=dbs))
    env = {k: decode_env_value(v) for k, v in spec.environment.items()}
    assert env["DEFAULT_DATABASE_URI"] == "/mnt/default.csv"
    assert env["DEFAULT_DATABASE_TYPE"] == "csv"
    assert env["DEFAULT_DB_PARAM_SEP"] == ";"
    assert env["IMAGES_DATABASE_URI"] == "/mnt/images"
    assert env["WAREHOUSE_DATABASE_URI"] == "postgresql://db/x"
    assert env["WAREHOUSE_QUERY"] == "SELECT 1"
    assert env["WAREHOUSE_PREPROCESSING"] == '[{"f": 1}]'
    assert env["DEFAULT_SHEET_NAME"] == "s1"
    assert env["USER_REQUESTED_DATABASE_LABELS"] == "warehouse,default"
    assert env["DB_LABELS"] == "default,images,warehouse"
    db_mounts = [(m.source, m.target, m.read_only) for m in spec.mounts[2:]]
    assert db_mounts == [("/data/patients.csv", "/mnt/default.csv", True), ("/data/imgs", "/mnt/images", True)]


def test_algorithm_env_is_added_and_may_override():
    spec = build_container_spec(make_run(), settings(algorithm_env={"MY_SETTING": "1", "API_PATH": "/x"}))
    env = {k: decode_env_value(v) for k, v in spec.environment.items()}
    assert env["MY_SETTING"] == "1"
    assert env["API_PATH"] == "/x"


@pytest.mark.parametrize("bad", ["PKG_NAME", "not-an-identifier", "1ABC"])
def test_env_var_names_that_cannot_be_given_are_refused(bad):
    with pytest.raises(InvalidRunEnvironment, match="cannot be given"):
        build_container_spec(make_run(), settings(algorithm_env={bad: "x"}))


def test_the_references_proxy_name_is_a_hosts_entry_for_the_proxys_address():
    assert build_container_spec(make_run(), settings()).extra_hosts == {"proxyserver": "172.18.0.1"}
    # A proxy given by name (no address to put in /etc/hosts) adds no entry.
    assert build_container_spec(make_run(), settings(proxy_host="proxy.local")).extra_hosts == {}


def test_run_without_job_gets_its_own_tmp_volume():
    spec = build_container_spec(make_run(job_id=None), settings())
    assert spec.mounts[1].source == "vantage6-alpha-user-run42-tmpvol"


def test_limits_reach_the_container_spec():
    from v6node.domain.config import AlgorithmLimits

    spec = build_container_spec(make_run(), settings(limits=AlgorithmLimits(cpus=1.5, memory=2**30, pids=64)))
    assert spec.nano_cpus == 1_500_000_000
    assert spec.mem_limit == 2**30
    assert spec.pids_limit == 64
    default = build_container_spec(make_run(), settings())
    assert default.pids_limit == 1024 and default.mem_limit == 4 * 2**30 and default.nano_cpus is None


def test_containers_are_confined_by_default_and_the_reference_behaviour_is_an_opt_in():
    from v6node.domain.config import AlgorithmLimits

    default = build_container_spec(make_run(), settings())
    assert default.read_only_root is True
    assert default.tmpfs == {"/tmp": f"rw,nosuid,nodev,size={2**30}"}
    assert default.log_size == 10 * 2**20
    assert default.user is None  # the image's user, as the reference
    assert default.cap_drop == ("ALL",) and default.security_opt == ("no-new-privileges",)
    opened = build_container_spec(
        make_run(), settings(limits=AlgorithmLimits(read_only_root=False, user="1000:1000", memory=None, seconds=None))
    )
    assert (opened.read_only_root, opened.tmpfs, opened.user, opened.mem_limit) == (False, {}, "1000:1000", None)


def test_log_tail_keeps_the_last_bytes_and_says_how_many_were_left_out():
    from v6node.domain.containers import log_tail

    assert log_tail([b"abc", b"def\n"], 100) == "abcdef\n"
    assert log_tail([b"a" * 10, b"b" * 10, b"c" * 10], 15) == (
        "[v6node] 15 bytes of earlier output were left out (max_log_size)\n" + "b" * 5 + "c" * 10
    )
    assert log_tail(iter([b"x" * 1000] * 1000), 10).endswith("\n" + "x" * 10)
    assert log_tail([b"\xff\xfeok"], 10) == "\ufffd\ufffdok"


def test_copy_mode_files_live_in_the_runs_folder_and_are_not_mounted():
    dbs = (DatabaseConfig(label="default", uri="/data/p.csv", mount_mode="copy"), DatabaseConfig(label="imgs", uri="/data/i", type="folder", mount_mode="copy"))
    spec = build_container_spec(make_run(), settings(databases=dbs))
    env = {k: decode_env_value(v) for k, v in spec.environment.items()}
    assert env["DEFAULT_DATABASE_URI"] == "/mnt/data/task-000000042/databases/default.csv"
    assert env["IMGS_DATABASE_URI"] == "/mnt/data/task-000000042/databases/imgs"
    assert len(spec.mounts) == 2  # only the task folder and the tmp volume
