"""A real vantage6 algorithm for the tests, run by the algorithm-tools wrapper (PKG_NAME=v6_algo)."""
from __future__ import annotations

from typing import Any

import pandas as pd
from vantage6.algorithm.tools.decorators import data


def echo(value: Any) -> dict[str, Any]:
    return {"echo": value}


@data(1)
def column_sums(df: pd.DataFrame) -> dict[str, float | int]:
    """The sum of every numeric column of the first requested database."""
    return {str(column): df[column].sum().item() for column in df.select_dtypes("number").columns}
