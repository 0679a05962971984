"""Test a vantage6 algorithm image on your machine, the way nodes will run it, before you publish it.

    python examples/test_algorithm_locally.py [IMAGE]

IMAGE (default: the repository's test image ``127.0.0.1:5999/v6-algo:1``, which
``scripts/setup-rig`` builds) must have the methods ``column_sums`` and ``central_mean``
(which creates ``partial_mean`` sub-tasks). Each organization gets a real v6node node
(Docker, task folder, environment, database mount, policies, algorithm proxy) against a
vantage6 server simulated in memory; this is what ``v6node run-local`` does, from Python.
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from v6node.app import LocalRunReport, run_locally


def patients(folder: Path, name: str, ages: list[int]) -> str:
    path = folder / f"{name}.csv"
    path.write_text("age,weight\n" + "".join(f"{age},{60 + age // 2}\n" for age in ages))
    return str(path)


def show(title: str, report: LocalRunReport) -> None:
    for task in (*report.subtasks, report.task):
        for run in task.runs:
            result = run.result.decode() if run.result is not None else "(none)"
            print(f"{title}: task {task.task_id} {task.name!r}, organization {run.organization_id}: {run.status} {result}")


async def main(image: str) -> int:
    with tempfile.TemporaryDirectory() as folder:
        a = patients(Path(folder), "hospital_a", [30, 40, 50])
        b = patients(Path(folder), "hospital_b", [20, 60, 35, 45])

        # One organization, one database: the wrapper's @data reads it.
        sums = await run_locally(image, {"method": "column_sums"}, databases=[{"default": a}])
        show("column_sums", sums)

        # A central algorithm over two organizations, each with its own database; the
        # sub-tasks it creates through the node's proxy run on both nodes.
        mean = await run_locally(
            image, {"method": "central_mean", "kwargs": {"column": "age"}},
            databases=[{"default": a}, {"default": b}],
        )
        show("central_mean", mean)
        if mean.completed:
            print(f"federated mean of age: {mean.task.runs[0].result_json()['mean']}")
    return 0 if sums.completed and mean.completed else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:5999/v6-algo:1")))
