"""The side-by-side benchmark's arguments: a run names both nodes unless --only says one."""
from __future__ import annotations

import pytest

from benchmarks.vs_reference.__main__ import parse


def test_order_names_both_nodes_in_either_order() -> None:
    assert parse([]).order == "reference,v6node"
    assert parse(["--order", "v6node,reference"]).order == "v6node,reference"


@pytest.mark.parametrize("order", ["reference", "v6node", "v6node,v6node", "reference,v6node,reference", "ref,v6node"])
def test_an_order_that_leaves_a_node_out_is_refused_with_what_to_write(
    order: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        parse(["--order", order])
    assert refused.value.code == 2
    assert "name both nodes, e.g. v6node,reference (one node alone: --only)" in capsys.readouterr().err


def test_one_node_alone_is_only() -> None:
    assert parse(["--only", "v6node"]).only == "v6node"
