"""The ``v6node`` command: the only place that reads the environment, handles signals and exits.

One module per group of commands: ``run`` (start), ``control`` (stop, restart, attach, list),
``manage`` (files, check-config, set-api-key, remove, clean, version), ``new``, ``keys``
(create-private-key, check-policy), ``observe`` (logs, audit), ``run_local`` (run-local),
``images`` (build-images); ``common`` holds the exit codes and the node options.
A command's module is imported when that command runs (``v6node start`` does not load
``run-local``'s in-memory server, nor ``new``'s questionnaire).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

import click

from v6node.app.cli.common import EXIT_CODES, exit_code_for
from v6node.app.cli.files import private_folder, replace_file


def _observe(factory: str) -> Callable[[], click.Command]:
    def build() -> click.Command:
        from v6node.app.cli import observe
        from v6node.app.cli.common import load_node_or_exit, node_option_for_observe
        from v6node.app.cli.docker_mode import audited_node_option, load_audited_node

        if factory == "logs":
            return observe.logs_command(load_node_or_exit, node_option_for_observe)
        return observe.audit_group(load_audited_node, audited_node_option)

    return build


def _attribute(module: str, name: str) -> Callable[[], click.Command]:
    def load() -> click.Command:
        command = getattr(importlib.import_module(f"v6node.app.cli.{module}"), name)
        assert isinstance(command, click.Command)
        return command

    return load


# The command name, and what gives the command (importing its module then).
COMMANDS: dict[str, Callable[[], click.Command]] = {
    "new": _attribute("new", "new"),
    "start": _attribute("run", "start"),
    "stop": _attribute("control", "stop"),
    "restart": _attribute("control", "restart"),
    "attach": _attribute("control", "attach"),
    "list": _attribute("control", "list_nodes"),
    "files": _attribute("manage", "files"),
    "check-config": _attribute("manage", "check_config"),
    "set-api-key": _attribute("manage", "set_api_key"),
    "remove": _attribute("manage", "remove"),
    "clean": _attribute("manage", "clean"),
    "version": _attribute("manage", "version_command"),
    "create-private-key": _attribute("keys", "create_private_key"),
    "check-policy": _attribute("keys", "check_policy"),
    "run-local": _attribute("run_local", "run_local_command"),
    "build-images": _attribute("images", "build_images"),
    "logs": _observe("logs"),
    "audit": _observe("audit"),
}


class _LazyGroup(click.Group):
    """Lists every command; imports one only when it is asked for (to run, or for help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.add_command(COMMANDS[cmd_name](), cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=_LazyGroup)
def main() -> None:
    """v6node: a vantage6 4.x node. Name a node with --name (its config is in the vantage6
    config folder, as `v6 node` keeps it) or give its config file with -c."""


__all__ = ["EXIT_CODES", "exit_code_for", "main", "private_folder", "replace_file"]
