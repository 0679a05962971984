"""What may run and what it may touch: policies, databases, isolation and limits, end to end.

Tasks are created with the real vantage6 client against the real server; `v6node start`
runs them in real Docker.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import attrs
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.rig.paths import image

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.server]

DENIAL = "This node does not allow this algorithm to run"


# --- helpers ---------------------------------------------------------------------------------------------
def policies(**rules) -> dict:
    """A ``policies`` section; test images exist only locally, so pulls must not be required."""
    return {"policies": {"require_algorithm_pull": False, **rules}}


def as_json(result):
    return json.loads(result) if isinstance(result, str) else result


def only_run(user, task_id: int) -> dict:
    (run,) = user.runs(task_id)
    return run


def run_task(user, federation, image_name: str, task_input: dict, **kw) -> tuple[dict, dict]:
    """Create a task for the federation's first organization and wait until it has ended."""
    task = user.create_task(federation.collaboration_id, [federation.organization_ids[0]], image_name, task_input, **kw)
    assert "id" in task, task
    (result,) = user.wait_for_results(task["id"])
    return only_run(user, task["id"]), result


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30.0, interval: float = 0.1):
    """Poll server state that has no event to wait on; returns the first truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def container_creations(docker_client, node_name: str, since: int) -> list[dict[str, str]]:
    """Labels of every container the engine created for this node since ``since`` (its own event log)."""
    events = docker_client.events(
        since=since,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": f"v6node.node={node_name}"},
    )
    try:
        return [event["Actor"]["Attributes"] for event in events]
    finally:
        events.close()


def node_config_rows(admin, node_id: int) -> set[tuple[str, str]]:
    return {(row["key"], str(row["value"])) for row in admin.get(f"/node/{node_id}")["config"]}


def task_folder(node, run_id: int) -> Path:
    return node.config_file.parent / "data" / "tasks" / f"task-{run_id:09d}"


def csv_database(folder: Path, label: str = "default", **extra) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{label}.csv"
    path.write_text("a,b,name\n1,2.5,x\n3,4,y\n")
    return {"label": label, "uri": str(path), "type": "csv", **extra}


def parquet_database(folder: Path, label: str = "default") -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{label}.parquet"
    pq.write_table(pa.table({"a": [1, 3], "b": [2.5, 4.0], "name": ["x", "y"]}), path)
    return {"label": label, "uri": str(path), "type": "parquet"}


# --- policies ----------------------------------------------------------------------------------------------
def test_a_denied_image_ends_not_allowed_and_no_container_is_ever_created(
    make_federation, start_node, researcher_for, admin, docker_client
):
    federation = make_federation(n_orgs=1)
    allowed = image("echo-algo")
    node = start_node(federation.nodes[0], **policies(allowed_algorithms=[allowed]))
    user = researcher_for(federation)
    since = int(time.time()) - 1

    denied, _ = run_task(user, federation, image("sleep-algo"), {"method": "sleep", "kwargs": {"seconds": 1}})
    # The allowed image runs on the same node: the engine's event log does show creations.
    control, result = run_task(user, federation, allowed, {"method": "echo"})

    assert denied["status"] == "not allowed"
    assert denied["finished_at"]
    assert DENIAL in denied["log"]
    assert f"'{image('sleep-algo')}' is not in allowed_algorithms" in denied["log"]
    assert control["status"] == "completed"
    assert as_json(result["result"]) == {"echo": {"method": "echo"}}
    created = [labels.get("run_id") for labels in container_creations(docker_client, node.name, since)]
    assert str(control["id"]) in created
    assert str(denied["id"]) not in created
    assert f"run {denied['id']} not allowed: image" in node.output
    assert f"run {denied['id']} (task" not in node.output  # "run N (task M) started: ..."


def test_an_allowed_regex_runs_and_restricts(make_federation, start_node, researcher_for):
    federation = make_federation(n_orgs=1)
    start_node(federation.nodes[0], **policies(allowed_algorithms=[r"^127\.0\.0\.1:5999/echo-.*"]))
    user = researcher_for(federation)

    allowed, result = run_task(user, federation, image("echo-algo"), {"method": "echo", "kwargs": {"x": 1}})
    denied, _ = run_task(user, federation, image("crash-algo"), {"method": "crash"})

    assert allowed["status"] == "completed"
    assert as_json(result["result"])["echo"]["kwargs"] == {"x": 1}
    assert denied["status"] == "not allowed" and denied["finished_at"]
    assert "is not in allowed_algorithms" in denied["log"]
    assert "crash-algo: failing on purpose" not in denied["log"]


def second_user(admin, federation):
    """Another user of the federation's (first) organization."""
    user = admin.create_user(federation.organization_ids[0], f"other-{uuid.uuid4().hex[:8]}")
    return attrs.evolve(federation, user=user)


def test_allowed_users_as_yaml_integers_let_that_user_run_and_refuse_another(
    make_federation, start_node, researcher_for, admin
):
    # share_config: false keeps the server from refusing the other user's task itself
    # (it would, from our node_info_update rows), so the node's own check is what decides.
    federation = make_federation(n_orgs=1)
    node = start_node(
        federation.nodes[0], share_config=False, **policies(allowed_users=[federation.user.user_id])
    )
    written = yaml.safe_load(node.config_file.read_text())["policies"]["allowed_users"]
    assert written == [federation.user.user_id] and isinstance(written[0], int)  # the docs' `allowed_users: [2]`
    allowed_user = researcher_for(federation)
    other = second_user(admin, federation)
    other_user = researcher_for(other)

    allowed, result = run_task(allowed_user, federation, image("echo-algo"), {"method": "echo"})
    refused, _ = run_task(other_user, federation, image("echo-algo"), {"method": "echo"})

    assert allowed["status"] == "completed"
    assert as_json(result["result"]) == {"echo": {"method": "echo"}}
    assert refused["status"] == "not allowed" and refused["finished_at"]
    assert DENIAL in refused["log"]
    assert f"user (id {other.user.user_id}) is not in allowed_users" in refused["log"]
    # share_config: false: nothing was shared (the node synced long before the tasks ended).
    assert node_config_rows(admin, federation.nodes[0].node_id) == set()


def test_shared_allowed_users_make_the_server_refuse_another_users_task(
    make_federation, start_node, researcher_for, admin
):
    federation = make_federation(n_orgs=1)
    node_id = federation.nodes[0].node_id
    start_node(federation.nodes[0], **policies(allowed_users=[federation.user.user_id]))
    wait_until(
        lambda: ("allowed_users", str(federation.user.user_id)) in node_config_rows(admin, node_id),
        "the node's allowed_users row on the server",
    )
    other_user = researcher_for(second_user(admin, federation))

    answer = other_user.create_task(
        federation.collaboration_id, [federation.organization_ids[0]], image("echo-algo"), {"method": "echo"}
    )

    assert "id" not in answer
    assert "does not allow you to create tasks" in answer["msg"]
    allowed, _ = run_task(researcher_for(federation), federation, image("echo-algo"), {"method": "echo"})
    assert allowed["status"] == "completed"


# --- databases -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make_database", [csv_database, parquet_database], ids=["csv", "parquet"])
def test_a_real_algorithm_reads_the_database_through_data_decorator(
    make_federation, start_node, researcher_for, tmp_path, make_database
):
    federation = make_federation(n_orgs=1)
    start_node(federation.nodes[0], databases=[make_database(tmp_path)])
    user = researcher_for(federation)

    run, result = run_task(
        user, federation, image("v6-algo"), {"method": "column_sums", "args": [], "kwargs": {}},
        databases=[{"label": "default"}],
    )

    assert run["status"] == "completed", run["log"]
    assert as_json(result["result"]) == {"a": 4, "b": 6.5}


@pytest.mark.parametrize(
    ("mount_mode", "status", "says"),
    [("ro", "crashed", "Read-only file system"), ("copy", "completed", "db-write-algo: the write succeeded")],
)
def test_an_algorithm_cannot_change_the_database_file(
    make_federation, start_node, researcher_for, tmp_path, mount_mode, status, says
):
    federation = make_federation(n_orgs=1)
    database = csv_database(tmp_path, mount_mode=mount_mode)
    original = Path(database["uri"]).read_bytes()
    start_node(federation.nodes[0], databases=[database])
    user = researcher_for(federation)

    run, result = run_task(user, federation, image("db-write-algo"), {"method": "write"}, databases=[{"label": "default"}])

    assert run["status"] == status, run["log"]
    assert says in run["log"]
    assert Path(database["uri"]).read_bytes() == original
    if mount_mode == "copy":  # it wrote to its own copy, inside its own task folder
        assert as_json(result["result"]) == {"wrote": f"/mnt/data/task-{run['id']:09d}/databases/default.csv"}


def test_a_run_sees_only_its_own_task_folder(make_federation, start_node, researcher_for, admin, tmp_path):
    federation = make_federation(n_orgs=1)
    node = start_node(federation.nodes[0], databases=[csv_database(tmp_path)])
    user = researcher_for(federation)
    org = federation.organization_ids[0]
    sleeper = user.create_task(
        federation.collaboration_id, [org], image("sleep-algo"), {"method": "sleep", "kwargs": {"seconds": 600}}
    )
    sleeper_run = admin.runs_of_task(sleeper["id"])[0]["id"]
    node.wait_for(f"run {sleeper_run} (task {sleeper['id']}) started")
    try:
        lookers = [
            user.create_task(federation.collaboration_id, [org], image("env-algo"), {"method": "look"})
            for _ in range(2)
        ]
        seen = {}
        for task in lookers:
            (result,) = user.wait_for_results(task["id"])
            run = only_run(user, task["id"])
            assert run["status"] == "completed", run["log"]
            seen[run["id"]] = as_json(result["result"])
        # The sleeping run's folder (input, output, token) was there on the host all along.
        assert (task_folder(node, sleeper_run) / "token").is_file()
    finally:
        user.call("kill_task", task_id=sleeper["id"])
    for run_id, view in seen.items():
        own = f"/mnt/data/task-{run_id:09d}"
        assert view["mounts"] == ["/mnt/data", own, "/mnt/default.csv", "/mnt/tmp"]
        assert view["env"]["TOKEN_FILE"] == f"{own}/token"
    assert len(seen) == 2
    user.wait_for_results(sleeper["id"])
    assert only_run(user, sleeper["id"])["status"] == "killed by user"


# --- limits ------------------------------------------------------------------------------------------------
def test_an_algorithm_past_its_memory_limit_ends_failed_with_the_reason(make_federation, start_node, researcher_for):
    federation = make_federation(n_orgs=1)
    start_node(federation.nodes[0], algorithm_memory="32m")
    user = researcher_for(federation)

    hog, _ = run_task(user, federation, image("mem-algo"), {"method": "hold", "kwargs": {"megabytes": 200}})
    modest, result = run_task(user, federation, image("mem-algo"), {"method": "hold", "kwargs": {"megabytes": 1}})

    # mem-algo itself exits 0 after its tail is killed: only the engine's OOM flag tells.
    assert hog["status"] == "failed"
    assert hog["finished_at"]
    assert "mem-algo: holding 200 MB" in hog["log"]
    assert "ran out of memory" in hog["log"] and "algorithm_memory" in hog["log"]
    assert modest["status"] == "completed", modest["log"]
    assert as_json(result["result"]) == {"held": 1}


# --- node_info_update --------------------------------------------------------------------------------------
def started_with_databases(make_federation, start_node, admin, tmp_path, **extra):
    federation = make_federation(n_orgs=1)
    databases = [
        csv_database(tmp_path),
        parquet_database(tmp_path, "measurements"),
        {"label": "warehouse", "uri": "postgresql://db.example.org/warehouse", "type": "sql"},
    ]
    start_node(federation.nodes[0], databases=databases, **extra)
    node_id = federation.nodes[0].node_id
    return wait_until(
        lambda: (rows := node_config_rows(admin, node_id)) and ("db_type_warehouse", "sql") in rows and rows,
        "the node's configuration rows on the server",
    )


def test_node_info_update_rows_appear_on_the_server_as_the_references_do(make_federation, start_node, admin, tmp_path):
    allowed = [image("echo-algo"), r"^127\.0\.0\.1:5999/v6-"]
    rows = started_with_databases(make_federation, start_node, admin, tmp_path, **policies(allowed_algorithms=allowed))

    # The whole set (column rows apart: the next test): only policies that are set are shared,
    # under the reference's key names, and dict values arrive as their inner keys. The server's
    # String column keeps the boolean the node sends (as the reference does) as SQLite's "0".
    assert {(key, value) for key, value in rows if not key.startswith("columns_")} == {
        ("encryption", "0"),
        ("allowed_algorithms", allowed[0]),
        ("allowed_algorithms", allowed[1]),
        ("database_labels", "default"),
        ("database_labels", "measurements"),
        ("database_labels", "warehouse"),
        ("db_type_default", "csv"),
        ("db_type_measurements", "parquet"),
        ("db_type_warehouse", "sql"),
    }


def test_node_info_update_has_the_column_names_of_csv_and_parquet_databases(make_federation, start_node, admin, tmp_path):
    rows = started_with_databases(make_federation, start_node, admin, tmp_path)

    columns = {(key, value) for key, value in rows if key.startswith("columns_")}
    # The reference would leave out the parquet columns (it refuses them); v6node reads them.
    assert columns == {
        ("columns_default", "a"), ("columns_default", "b"), ("columns_default", "name"),
        ("columns_measurements", "a"), ("columns_measurements", "b"), ("columns_measurements", "name"),
    }
