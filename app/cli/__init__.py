"""The ``v6node`` command: the only place that reads the environment, handles signals and exits.

One module per group of commands: ``run`` (start), ``control`` (stop, restart, attach, list),
``manage`` (files, check-config, set-api-key, remove, clean, version), ``new``, ``keys``
(create-private-key, check-policy), ``observe`` (logs, audit), ``run_local`` (run-local),
``images`` (build-images); ``common`` holds the exit codes and the node options.
"""
from __future__ import annotations

import click

from v6node.app.cli import control, images, keys, manage, new, run
from v6node.app.cli.observe import audit_group, logs_command
from v6node.app.cli.run_local import run_local_command
from v6node.app.cli.common import EXIT_CODES, exit_code_for, load_node_or_exit, node_option_for_observe
from v6node.app.cli.docker_mode import audited_node_option, load_audited_node
from v6node.app.cli.files import private_folder, replace_file


@click.group()
def main() -> None:
    """v6node: a vantage6 4.x node. Name a node with --name (its config is in the vantage6
    config folder, as `v6 node` keeps it) or give its config file with -c."""


for command in (
    new.new, run.start, control.stop, control.restart, control.attach, control.list_nodes, manage.files,
    manage.check_config, manage.set_api_key, manage.remove, manage.clean, manage.version_command,
    keys.create_private_key, keys.check_policy, run_local_command, images.build_images,
):
    main.add_command(command)
main.add_command(logs_command(load_node_or_exit, node_option_for_observe))
main.add_command(audit_group(load_audited_node, audited_node_option))

__all__ = ["EXIT_CODES", "exit_code_for", "main", "private_folder", "replace_file"]
