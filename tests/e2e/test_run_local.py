"""run-local on the test images: the statuses, results and logs that the e2e tests get from a node
through the real server (test_first_task, test_policies_and_data, test_federated_mean)."""
from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from tests.e2e.conftest import NO_LEFTOVERS, leftovers
from tests.e2e.test_federated_mean import AGES, expected_mean
from tests.e2e.test_policies_and_data import csv_database, parquet_database
from tests.rig.paths import image
from v6node.app.cli.run_local import run_local_command
from v6node.app.run_local import RunLocal
from v6node.domain.status import RunStatus

pytestmark = [pytest.mark.e2e, pytest.mark.docker]


@pytest.fixture
def run_local(test_images, docker_client):
    """``run_local``, checking that its nodes leave nothing in Docker."""
    reports = []

    async def run(*args, **kwargs):
        reports.append(await RunLocal()(*args, **kwargs))
        return reports[-1]

    yield run
    for report in reports:
        assert report.nodes
        for name in report.nodes:
            assert leftovers(docker_client, name) == NO_LEFTOVERS


def ages_csv(folder, ages) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "patients.csv"
    path.write_text("age,name\n" + "".join(f"{age},p{i}\n" for i, age in enumerate(ages)))
    return str(path)


async def test_echo_completes_with_its_input_as_result_and_its_log(run_local, tmp_path) -> None:
    task_input = {"method": "echo", "args": [], "kwargs": {"x": 1}}
    report = await run_local(image("echo-algo"), task_input, work_dir=str(tmp_path), keep=True)
    (run,) = report.task.runs
    assert run.status is RunStatus.COMPLETED and report.status == "completed" and report.completed
    assert run.result_json() == {"echo": task_input}
    assert "echo-algo: read" in run.log
    assert run.started_at and run.finished_at and report.subtasks == ()
    kept = report.work_folder
    assert kept and kept.startswith(str(tmp_path)) and (tmp_path / kept / "org-1" / "journal.sqlite").is_file()


async def test_a_crashing_algorithm_ends_crashed_with_its_log(run_local) -> None:
    report = await run_local(image("crash-algo"), {"method": "x"})
    (run,) = report.task.runs
    assert run.status is RunStatus.CRASHED and not report.completed
    assert "crash-algo: failing on purpose" in run.log
    assert run.result is None


async def test_an_unknown_image_ends_as_non_existing_docker_image(run_local) -> None:
    missing = "127.0.0.1:5999/no-such:1"
    report = await run_local(missing, {"method": "x"})
    (run,) = report.task.runs
    assert run.status is RunStatus.NON_EXISTING_IMAGE and report.status == "non-existing Docker image"
    assert missing in run.log


@pytest.mark.parametrize("make_database", [csv_database, parquet_database], ids=["csv", "parquet"])
async def test_the_real_wrapper_reads_the_database(run_local, tmp_path, make_database) -> None:
    database = make_database(tmp_path)
    report = await run_local(
        image("v6-algo"), {"method": "column_sums", "args": [], "kwargs": {}},
        databases=[{"default": database["uri"]}],
    )
    (run,) = report.task.runs
    assert run.status is RunStatus.COMPLETED, run.log
    assert run.result_json() == {"a": 4, "b": 6.5}


async def test_a_task_for_a_database_the_node_lacks_fails_as_a_node_fails_it(run_local, tmp_path) -> None:
    report = await run_local(
        image("v6-algo"), {"method": "column_sums"}, databases=[{"default": csv_database(tmp_path)["uri"]}, {}],
        everywhere=True,
    )
    runs = {run.organization_id: run for run in report.task.runs}
    assert runs[2].status is RunStatus.FAILED and "which this node does not have" in runs[2].log
    # The server fails a sibling that had not started yet when the other one failed (fail-fast).
    assert runs[1].status is RunStatus.COMPLETED or "because sibling run" in runs[1].log


def test_the_central_mean_over_two_organizations_through_the_command(test_images, docker_client, tmp_path) -> None:
    a, b = ages_csv(tmp_path / "org1", AGES[0]), ages_csv(tmp_path / "org2", AGES[1])
    done = CliRunner().invoke(run_local_command, [
        image("v6-algo"), "--database", f"default={a}", "--database", f"default={b}",
        "--method", "central_mean", "--kwargs", '{"column": "age"}',
    ])
    assert done.exit_code == 0, done.output
    result = json.loads(re.search(r"^task \d+ .*\n.*\n    result: (.*)$", done.stdout, re.M)[1])
    assert result["mean"] == pytest.approx(expected_mean())
    assert result["count"] == sum(len(ages) for ages in AGES) and result["organizations"] == 2
    partials = re.findall(r"^  run \d+, organization (\d): completed\n    result: (.*)$", done.stdout, re.M)
    assert {org: json.loads(text)["count"] for org, text in partials[:2]} == {"1": 3, "2": 4}
    assert "organization 2: default=" in done.stderr
    nodes = re.search(r"^nodes (.*) stopped$", done.stderr, re.M)[1].split(", ")
    assert len(nodes) == 2 and all(leftovers(docker_client, name) == NO_LEFTOVERS for name in nodes)


async def test_the_central_mean_in_an_encrypted_collaboration(run_local, tmp_path) -> None:
    databases = [{"default": ages_csv(tmp_path / f"org{i}", ages)} for i, ages in enumerate(AGES)]
    report = await run_local(
        image("v6-algo"), {"method": "central_mean", "kwargs": {"column": "age"}}, databases=databases, encrypt=True,
    )
    (run,) = report.task.runs
    assert run.status is RunStatus.COMPLETED, run.log
    assert run.result_json()["mean"] == pytest.approx(expected_mean())
    (subtask,) = report.subtasks
    assert subtask.parent_id == report.task.task_id and subtask.name == "partial_mean"
    assert sorted((r.organization_id, r.status) for r in subtask.runs) == [(1, "completed"), (2, "completed")]


async def test_the_nodes_policies_apply(run_local) -> None:
    settings = {"policies": {"allowed_algorithms": [r"^127\.0\.0\.1:5999/echo-.*"]}}
    allowed = await run_local(image("echo-algo"), {"method": "echo"}, settings=settings)
    denied = await run_local(image("crash-algo"), {"method": "crash"}, settings=settings)
    assert allowed.task.runs[0].status is RunStatus.COMPLETED
    (run,) = denied.task.runs
    assert run.status is RunStatus.NOT_ALLOWED and run.finished_at
    assert "is not in allowed_algorithms" in run.log and "crash-algo: failing on purpose" not in run.log


async def test_the_nodes_environment_reaches_the_algorithm(run_local) -> None:
    report = await run_local(
        image("env-algo"), {"method": "env"}, settings={"algorithm_env": {"STATION": "hospital-a"}},
    )
    (run,) = report.task.runs
    assert run.status is RunStatus.COMPLETED, run.log
    seen = run.result_json()
    assert seen["env"]["STATION"] == "hospital-a"
    assert seen["env"]["HOST"].startswith("http://") and seen["env"]["PORT"] and "API_PATH" in seen["env"]
    assert f"/mnt/data/task-{run.run_id:09d}" in seen["mounts"]
