"""What every command shares: exit codes, the CLI's own errors, choosing a node, loading its config.

This package is the only place that reads the environment (``ENV``), handles signals and exits.
"""
from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from v6node.app.config import load_config
from v6node.app.folders import NodeLocation, configured_names, locate, locate_file, log_file_name, scope_name
from v6node.app.set_up_encryption import EncryptionMismatch
from v6node.domain.config import NodeConfig
from v6node.domain.errors import (
    AuthenticationFailed,
    CleanupIncomplete,
    ConfigError,
    NodeAlreadyRunning,
    NodeError,
    RuntimeUnavailable,
)

ENV: Mapping[str, str] = os.environ


class UnknownNode(NodeError):
    """No node of that name is configured (or no node was named)."""


class NodeNotRunning(NodeError):
    """The command needs a running node and this one is stopped."""


class NodeStillRunning(NodeError):
    """The command needs a stopped node and this one runs."""


class NotOnline(NodeError):
    """``start --detach`` waited in vain: the node runs but is not online yet."""


# Exit codes, one table: what went wrong -> what the process returns.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ConfigError, 2),
    (EncryptionMismatch, 2),
    (NodeAlreadyRunning, 2),
    (UnknownNode, 2),
    (NodeStillRunning, 2),
    (AuthenticationFailed, 3),
    (RuntimeUnavailable, 4),
    (CleanupIncomplete, 5),
    (NotOnline, 6),
    (NodeError, 1),
)


def exit_code_for(error: BaseException) -> int:
    return next((code for kind, code in EXIT_CODES if isinstance(error, kind)), 1)


def fail(error: BaseException) -> NoReturn:
    click.echo(f"v6node: error: {error}", err=True)
    sys.exit(exit_code_for(error))


F = TypeVar("F", bound=Callable[..., Any])


def failing_with_codes(command: F) -> F:
    """Turn the node's errors (and file errors) into the message and exit code of ``EXIT_CODES``."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except NodeError as exc:
            fail(exc)
        except OSError as exc:  # a file or folder the command could not read or write
            fail(NodeError(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)))

    return wrapper  # type: ignore[return-value]


def node_options(command: F) -> F:
    """``-n/--name NAME`` or ``-c/--config FILE``, and ``--system/--user``, as the reference has them."""
    command = click.option(
        "--system/--user", "system", default=False,
        help="The node's config in the system folders (/etc/vantage6/node) or the user's (the default).",
    )(command)
    command = click.option(
        "-c", "--config", "config_file", type=click.Path(dir_okay=False),
        help="A node config file anywhere (the node's name is its stem); instead of --name.",
    )(command)
    return click.option("-n", "--name", help="The node's name: its config is <config folder>/NAME.yaml.")(command)


def node_option_for_observe(command: F) -> F:
    """``--name``/``-c``/``--system`` for the commands of ``observe``, which take the node as
    ``config_file`` and hand it to their loader (``load_node_or_exit``)."""

    @functools.wraps(command)
    def wrapper(*args: Any, name: str | None, config_file: str | None, system: bool, **kwargs: Any) -> Any:
        try:
            location = pick_node(name, config_file, system)
        except NodeError as exc:
            fail(exc)
        return command(*args, config_file=location, **kwargs)

    return node_options(wrapper)  # type: ignore[return-value]


def load_node_or_exit(location: NodeLocation) -> NodeConfig:
    try:
        return load_node(location)
    except NodeError as exc:
        fail(exc)


def _listing(system: bool) -> str:
    names = configured_names(system, ENV)
    return f"configured there: {', '.join(names)}" if names else "none is configured there"


def pick_node(name: str | None, config_file: str | None, system: bool) -> NodeLocation:
    """The node that ``--name`` or ``-c`` names; asks on a terminal when neither is given."""
    if name and config_file:
        raise click.UsageError("give the node's --name or its config file (-c), not both")
    if config_file:
        return locate_file(Path(config_file), system, ENV)
    if not name:
        names = configured_names(system, ENV)
        if names and sys.stdin.isatty():
            name = click.prompt("Which node", type=click.Choice(names), show_choices=True)
        else:
            where = locate("x", system, ENV).config_file.parent
            raise UnknownNode(
                f"no node given: use --name NAME or -c FILE ({where}: {_listing(system)})"
                if names else f"no node given, and none is configured in {where}: create one with `v6node new`"
            )
    location = locate(name, system, ENV)
    if not location.config_file.is_file():
        other = locate(name, not system, ENV)
        hint = (
            f"; there is one in the {other.scope} folders: add --{other.scope}" if other.config_file.is_file()
            else f"; create it with `v6node new --name {name}{' --system' if system else ''}`"
        )
        raise UnknownNode(
            f"no node named '{name}' in {location.config_file.parent} ({_listing(system)}){hint}"
        )
    return location


def node_args(location: NodeLocation) -> list[str]:
    """Options that name this node again, for a command run on its behalf."""
    scope = ["--system"] if location.system else []
    if location.config_file == locate(location.name, location.system, ENV).config_file:
        return ["--name", location.name, *scope]
    return ["-c", str(location.config_file), *scope]


def load_node(location: NodeLocation) -> NodeConfig:
    return load_config(
        location.config_file, default_data_dir=str(location.data_dir), default_log_dir=str(location.log_dir)
    )


def log_file_of(config: NodeConfig, location: NodeLocation) -> Path:
    """The node's log file: ``logging.file`` when it is a path, else in its log folder."""
    file = config.logging.file
    if file and os.sep in file:
        return Path(file)
    return Path(config.log_dir) / (file or log_file_name(location.system))


def scope_flag(location: NodeLocation) -> str:
    return " --system" if location.system else ""


def describe(location: NodeLocation) -> str:
    return f"node '{location.name}' ({scope_name(location.system)})"


def package_version() -> str:
    try:
        return version("v6node")
    except PackageNotFoundError:
        return "unknown"
