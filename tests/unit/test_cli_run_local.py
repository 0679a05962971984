"""`v6node run-local`'s arguments: which organization gets which database, the task input, refusals."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from v6node.app.cli.run_local import organization_databases, run_local_command, task_input
from v6node.app.run_local import database_entries, organizations_of


def test_the_nth_database_of_a_label_goes_to_the_nth_organization() -> None:
    per_org, count = organization_databases(["default=a.csv", "default=b.csv", "extra=e.csv"], None)
    assert count == 2
    assert per_org == [{"default": "a.csv", "extra": "e.csv"}, {"default": "b.csv", "extra": "e.csv"}]


def test_an_organization_can_be_named() -> None:
    per_org, count = organization_databases(["2:default=b.csv", "1:default=a.csv", "3:other=c.csv"], None)
    assert count == 3 and per_org == [{"default": "a.csv"}, {"default": "b.csv"}, {"other": "c.csv"}]
    per_org, count = organization_databases(["default=a.csv"], 3)
    assert per_org == [{"default": "a.csv"}] * 3


@pytest.mark.parametrize(
    ("options", "orgs", "says"),
    [
        (["my-db=a.csv"], None, "LABEL"),
        (["default"], None, "LABEL=PATH"),
        (["default=a.csv", "default=b.csv"], 1, "more than --orgs"),
        (["1:default=a.csv", "1:default=b.csv"], None, "already"),
        (["default=a.csv", "default=b.csv", "1:default=c.csv"], None, "twice"),
        (["0:default=a.csv"], None, "from 1"),
    ],
)
def test_databases_that_cannot_be_placed_are_refused(options, orgs, says) -> None:
    with pytest.raises(click.BadParameter, match=says):
        organization_databases(options, orgs)


def test_the_input_is_given_whole_or_built_from_a_method() -> None:
    assert task_input('{"method": "m", "kwargs": {"a": 1}}', None, None, None) == {"method": "m", "kwargs": {"a": 1}}
    assert task_input(None, "m", "[1]", '{"x": 2}') == {"method": "m", "args": [1], "kwargs": {"x": 2}}
    assert task_input(None, "m", None, None) == {"method": "m", "args": [], "kwargs": {}}
    with pytest.raises(click.UsageError):
        task_input("{}", "m", None, None)
    with pytest.raises(click.UsageError):
        task_input(None, None, None, None)
    with pytest.raises(click.BadParameter, match="not JSON"):
        task_input(None, "m", None, "{x")


def test_database_entries_take_their_type_from_the_path(tmp_path) -> None:
    (tmp_path / "folder").mkdir()
    entries = database_entries({
        "a": "a.csv", "b": tmp_path / "b.parquet", "c": "c.XLSX", "d": tmp_path / "folder", "e": "e.txt",
        "f": {"uri": "postgresql://db", "type": "sql"},
    })
    kinds = {entry["label"]: entry.get("type") for entry in entries}
    assert kinds == {"a": "csv", "b": "parquet", "c": "excel", "d": "folder", "e": None, "f": "sql"}
    assert all(entry["uri"].startswith("/") for entry in entries[:5])  # relative to the working folder


def test_one_set_of_databases_for_all_or_one_per_organization() -> None:
    assert organizations_of([], None) == 1
    assert organizations_of([{}, {}], None) == 2
    assert organizations_of([{}], 3) == 3
    with pytest.raises(ValueError, match="2 sets of databases for 3 organizations"):
        organizations_of([{}, {}], 3)


@pytest.mark.parametrize(
    "args",
    [
        ["img:1"],
        ["img:1", "--input", "{}", "--method", "m"],
        ["img:1", "--method", "m", "--database", "not a database"],
        ["img:1", "--method", "m", "--orgs", "0"],
        ["img:1", "--method", "m", "--setting", "novalue"],
    ],
)
def test_bad_arguments_exit_2_before_anything_runs(args) -> None:
    done = CliRunner().invoke(run_local_command, args)
    assert done.exit_code == 2, done.output
