"""A real vantage6 algorithm for the tests, run by the algorithm-tools wrapper (PKG_NAME=v6_algo)."""
from __future__ import annotations

from typing import Any

import pandas as pd
from vantage6.algorithm.client import AlgorithmClient
from vantage6.algorithm.tools.decorators import algorithm_client, data


def echo(value: Any) -> dict[str, Any]:
    return {"echo": value}


@data(1)
def column_sums(df: pd.DataFrame) -> dict[str, float | int]:
    """The sum of every numeric column of the first requested database."""
    return {str(column): df[column].sum().item() for column in df.select_dtypes("number").columns}


@algorithm_client
def central_mean(client: AlgorithmClient, column: str) -> dict[str, Any]:
    """The federated mean of ``column``: one ``partial_mean`` subtask for every organization
    of the collaboration, combined here. Fails rather than average over missing partials."""
    organizations = [org["id"] for org in client.organization.list()]
    task = client.task.create(
        input_={"method": "partial_mean", "kwargs": {"column": column}},
        organizations=organizations,
        name="partial_mean",
        description=f"partial mean of {column}",
    )
    if not isinstance(task, dict) or "id" not in task:
        raise RuntimeError(f"the subtask was not created: {task}")
    partials = client.wait_for_results(task_id=task["id"])
    if len(partials) != len(organizations) or any(partial is None for partial in partials):
        raise RuntimeError(f"expected {len(organizations)} partial results, got {partials}")
    total = sum(partial["sum"] for partial in partials)
    count = sum(partial["count"] for partial in partials)
    return {"mean": total / count if count else None, "sum": total, "count": count, "organizations": len(partials)}


@data(1)
def partial_mean(df: pd.DataFrame, column: str) -> dict[str, float | int]:
    """Sum and count of the numeric values of ``column`` (others are skipped)."""
    values = pd.to_numeric(df[column], errors="coerce").dropna()
    return {"sum": values.sum().item(), "count": int(values.count())}
