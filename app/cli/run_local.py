"""``v6node run-local``: run an algorithm image through the node's own code path against a server in memory."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from collections.abc import Sequence
from typing import Any

import click

from v6node.app.cli.common import fail
from v6node.app.run_local import Databases, run_locally
from v6node.domain.errors import NodeError
from v6node.domain.local_run import LocalRunReport, RunReport, TaskReport
from v6node.domain.run_events import RunEvent, Stage

_DATABASE = re.compile(r"^(?:(?P<org>\d+):)?(?P<label>[A-Za-z_]\w*)=(?P<path>.+)$")


def organization_databases(options: Sequence[str], organizations: int | None) -> tuple[list[Databases], int]:
    """``--database [ORG:]LABEL=PATH`` options -> each organization's databases, and how many organizations.

    ``ORG:`` (from 1) names the organization. Without it, the n-th option of a label goes to
    organization n, and a label given once (without ``ORG:``) goes to every organization.
    """
    explicit: dict[int, dict[str, str]] = {}
    implicit: dict[str, list[str]] = {}
    for option in options:
        match = _DATABASE.match(option)
        if match is None:
            raise click.BadParameter(f"{option!r}: expected [ORG:]LABEL=PATH (LABEL: letters, digits, _)", param_hint="--database")
        if match["org"] is not None:
            org = int(match["org"])
            if org < 1:
                raise click.BadParameter(f"{option!r}: organizations are numbered from 1", param_hint="--database")
            if match["label"] in explicit.setdefault(org, {}):
                raise click.BadParameter(f"{option!r}: organization {org} has {match['label']} already", param_hint="--database")
            explicit[org][match["label"]] = match["path"]
        else:
            implicit.setdefault(match["label"], []).append(match["path"])
    needed = max([1, *explicit, *(len(paths) for paths in implicit.values())])
    count = organizations or needed
    if count < needed:
        raise click.BadParameter(f"the databases name {needed} organizations, more than --orgs {count}", param_hint="--orgs")
    per_org: list[dict[str, str]] = [{} for _ in range(count)]
    for label, paths in implicit.items():
        shared = len(paths) == 1 and not any(label in found for found in explicit.values())
        for index in range(count) if shared else range(len(paths)):
            per_org[index][label] = paths[0] if shared else paths[index]
    for org, found in explicit.items():
        for label, path in found.items():
            if label in per_org[org - 1]:
                raise click.BadParameter(f"organization {org} has {label} twice", param_hint="--database")
            per_org[org - 1][label] = path
    return list(per_org), count


def task_input(input_json: str | None, method: str | None, args_json: str | None, kwargs_json: str | None) -> Any:
    if input_json is not None:
        if method or args_json or kwargs_json:
            raise click.UsageError("give either --input or --method (with --args/--kwargs), not both")
        return _json(input_json, "--input")
    if not method:
        raise click.UsageError("give --input JSON or --method NAME")
    return {
        "method": method,
        "args": _json(args_json, "--args") if args_json else [],
        "kwargs": _json(kwargs_json, "--kwargs") if kwargs_json else {},
    }


def _json(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=option) from exc


def _settings(options: Sequence[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for option in options:
        key, equals, value = option.partition("=")
        if not equals or not key:
            raise click.BadParameter(f"{option!r}: expected KEY=VALUE", param_hint="--setting")
        try:
            settings[key] = json.loads(value)
        except ValueError:
            settings[key] = value  # plain text
    return settings


def _print_event(org: int, event: RunEvent) -> None:
    what = {Stage.RECEIVED: "received", Stage.STARTED: "started", Stage.FINISHED: f"finished: {event.status}"}
    click.echo(f"[organization {org}] run {event.run_id} of task {event.task_id} {what[event.stage]}", err=True)


def _result_text(run: RunReport) -> str:
    if run.result_error:
        return f"(unreadable: {run.result_error})"
    if run.result is None:
        return "(none)"
    return run.result.decode("utf-8", errors="replace")


def _print_task(task: TaskReport, with_logs: bool) -> None:
    kind = f"subtask {task.task_id} of task {task.parent_id}" if task.parent_id else f"task {task.task_id}"
    click.echo(f"{kind} {task.name!r} ({task.image}): {task.status}")
    for run in task.runs:
        click.echo(f"  run {run.run_id}, organization {run.organization_id}: {run.status}")
        click.echo(f"    result: {_result_text(run)}")
        if with_logs:
            click.echo("    log:")
            for line in (run.log or "(none)").rstrip("\n").splitlines():
                click.echo(f"      {line}")


def print_report(report: LocalRunReport, subtask_logs: bool) -> None:
    for subtask in report.subtasks:
        _print_task(subtask, subtask_logs)
    _print_task(report.task, True)


@click.command("run-local")
@click.argument("image")
@click.option("-d", "--database", "databases", multiple=True, metavar="[ORG:]LABEL=PATH",
              help="A database of an organization's node (csv by default; .parquet, .xlsx and folders by their kind). "
                   "The n-th one of a label goes to organization n; one given once goes to all; ORG: names one.")
@click.option("--input", "input_json", metavar="JSON", help='The whole task input, e.g. \'{"method": "m", "kwargs": {}}\'.')
@click.option("--method", help="The algorithm's method to call.")
@click.option("--args", "args_json", metavar="JSON", help="Its positional arguments (a JSON list).")
@click.option("--kwargs", "kwargs_json", metavar="JSON", help="Its keyword arguments (a JSON object).")
@click.option("--orgs", "organizations", type=click.IntRange(min=1), help="Organizations (default: as many as the databases name).")
@click.option("--encrypt", is_flag=True, help="An encrypted collaboration (a new RSA key for each organization).")
@click.option("--everywhere", is_flag=True, help="Create the task for every organization, not only the first.")
@click.option("--setting", "settings", multiple=True, metavar="KEY=JSON",
              help="A node config key for every node, e.g. 'algorithm_env={\"A\": \"1\"}' or 'policies={...}'.")
@click.option("--subtask-logs", is_flag=True, help="Print the logs of sub-task runs too.")
@click.option("--keep", is_flag=True, help="Keep the work folder (task folders, journals, keys) and say where it is.")
@click.option("-v", "--verbose", is_flag=True, help="The nodes' own log lines (INFO) on stderr.")
def run_local_command(
    image: str, databases: tuple[str, ...], input_json: str | None, method: str | None, args_json: str | None,
    kwargs_json: str | None, organizations: int | None, encrypt: bool, everywhere: bool, settings: tuple[str, ...],
    subtask_logs: bool, keep: bool, verbose: bool,
) -> None:
    """Run IMAGE as nodes run it, with a server in memory, and print how its runs ended.

    Each organization gets a real v6node node (Docker, task folders, environment, database
    mounts, policies, algorithm proxy) against a simulated vantage6 server; a central
    algorithm's sub-tasks run on the organizations it names. Progress goes to stderr; the
    status, result and log of each run go to stdout. Exits 0 when every run of the task
    completed, 1 when one did not, 2 on bad arguments, 4 when Docker cannot be reached.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3", "docker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    per_org, count = organization_databases(databases, organizations)
    payload = task_input(input_json, method, args_json, kwargs_json)
    node_settings = _settings(settings)
    click.echo(f"run-local: {image} on {count} organization(s), collaboration "
               f"{'encrypted' if encrypt else 'not encrypted'}", err=True)
    for org, found in enumerate(per_org, start=1):
        listed = ", ".join(f"{label}={path}" for label, path in found.items()) or "no databases"
        click.echo(f"  organization {org}: {listed}", err=True)
    try:
        report = asyncio.run(run_locally(
            image, payload, databases=per_org, organizations=count, encrypt=encrypt,
            everywhere=everywhere, settings=node_settings, keep=keep, on_event=_print_event,
        ))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    except NodeError as exc:  # exit codes as every command's: 2 config, 4 no Docker, 1 otherwise
        fail(exc)
    click.echo(f"nodes {', '.join(report.nodes)} stopped", err=True)
    if report.work_folder:
        click.echo(f"work folder kept: {report.work_folder}", err=True)
    print_report(report, subtask_logs)
    sys.exit(0 if report.completed else 1)
