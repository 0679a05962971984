"""The side-by-side benchmark harness: a run names both nodes unless --only says one; a stop whose only
leftover is a network the engine keeps for phantom endpoints does not fail the run."""
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


def test_a_stop_that_left_only_networks_the_engine_keeps_is_not_a_failed_benchmark() -> None:
    from benchmarks.vs_reference.nodes import only_engine_kept_networks

    kept = (
        "  28127 ms v6node ERROR the node stopped, but could not remove: network vantage6-n-user-net (removing network "
        "vantage6-n-user-net: error while removing network: network vantage6-n-user-net id f6b4 has active endpoints). "
        "The next start removes these leftovers; or remove them by hand."
    )
    assert only_engine_kept_networks(kept)
    assert not only_engine_kept_networks(kept.replace("network vantage6-n-user-net (", "container c1 (gone); network vantage6-n-user-net (", 1))
    assert not only_engine_kept_networks("INFO stopped by signal; node cleaned up")
