"""`v6node logs RUN_ID` and `v6node audit verify|show`: what the node recorded, read back.

Both only read files the node wrote; neither contacts the server or the engine, so they
work while the node runs and after it stopped.
"""
from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from v6node.adapters.filesystem.json_lines_audit_log import in_data_folder
from v6node.adapters.filesystem.run_log_files import RunLogFiles
from v6node.domain.config import NodeConfig
from v6node.domain.errors import NodeError

# Everything but newline and tab that a terminal could take as a command (algorithm output
# is hostile: an escape sequence could retitle the window, hide lines or worse).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
EXIT_BROKEN = 1


def printable(text: str) -> str:
    """``text`` with control characters shown as ``\\xNN``."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def run_log_text(config: NodeConfig, run_id: int) -> str:
    """The run's log file, or a NodeError saying where it was looked for and why it may be gone."""
    path = RunLogFiles(Path(config.log_dir) / "runs").path(run_id)
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise NodeError(
            f"no log for run {run_id} at {path}: this node never ran it, or the file is older than "
            f"run_log_retention_days ({config.run_log_retention_days:g})"
        ) from None
    except OSError as exc:
        raise NodeError(f"cannot read {path}: {exc.strerror or exc}") from None


def audit_verify(config: NodeConfig) -> tuple[bool, str]:
    audit = in_data_folder(config.data_dir)
    verdict = asyncio.run(audit.verify())
    if verdict.ok:
        return True, f"audit log {audit.path}: {verdict.lines} entries, the chain holds"
    return False, f"audit log {audit.path}: broken at line {verdict.broken_at}: {verdict.why}"


def audit_entries(config: NodeConfig, since: datetime | None, run_id: int | None) -> list[dict[str, Any]]:
    return asyncio.run(in_data_folder(config.data_dir).entries(since=since, run_id=run_id))


_SHOWN_FIRST = ("seq", "at", "event", "run_id", "task_id")
_NOT_SHOWN = {"prev", "hash"}


def entry_line(entry: dict[str, Any]) -> str:
    """One entry for a human: seq, time, event, run and task, then the other facts as key=value."""
    head = "{seq:>5} {at} {event:<8} run {run_id} task {task_id}".format(**{k: entry.get(k, "?") for k in _SHOWN_FIRST})
    facts = " ".join(
        f"{key}={json.dumps(value, separators=(',', ':'))}"
        for key, value in entry.items()
        if key not in _SHOWN_FIRST and key not in _NOT_SHOWN and value is not None
    )
    return printable(f"{head} {facts}".rstrip())


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
Loader = Callable[[Any], NodeConfig]  # the node option's value (the CLI passes the node it names)


def logs_command(load: Loader, config_option: Decorator) -> click.Command:
    """``v6node logs``; ``load`` turns the config option's value into a NodeConfig (or exits)."""

    @click.command("logs")
    @config_option
    @click.argument("run_id", type=int)
    @click.option("--raw", is_flag=True, help="Print control characters as they are (the output is the algorithm's).")
    def logs(config_file: str, run_id: int, raw: bool) -> None:
        """Print one run's log: the node's lines about it and its algorithm's output."""
        config = load(config_file)
        try:
            text = run_log_text(config, run_id)
        except NodeError as exc:
            click.echo(f"v6node: error: {exc}", err=True)
            sys.exit(1)
        click.echo(text if raw else printable(text), nl=False)

    return logs


def audit_group(load: Loader, config_option: Decorator) -> click.Group:
    @click.group("audit")
    def audit() -> None:
        """The local audit log (audit_log: true): what ran on this node's data, chained line to line."""

    @audit.command("verify")
    @config_option
    def verify(config_file: str) -> None:
        """Check every line and the chain; exit 1 naming the first line that does not hold."""
        ok, text = audit_verify(load(config_file))
        click.echo(text, err=not ok)
        if not ok:
            sys.exit(EXIT_BROKEN)

    @audit.command("show")
    @config_option
    @click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
                  help="Only entries at or after this UTC time.")
    @click.option("--run", "run_id", type=int, help="Only the entries of this run.")
    @click.option("--json", "as_json", is_flag=True, help="The entries as stored, one JSON object per line.")
    def show(config_file: str, since: datetime | None, run_id: int | None, as_json: bool) -> None:
        """Print the audit log's entries, oldest first."""
        try:
            entries = audit_entries(load(config_file), since, run_id)
        except NodeError as exc:
            click.echo(f"v6node: error: {exc}", err=True)
            sys.exit(EXIT_BROKEN)
        for entry in entries:
            click.echo(json.dumps(entry, sort_keys=True) if as_json else entry_line(entry))

    return audit
