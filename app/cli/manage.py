"""Configured nodes: `files`, `check-config`, `set-api-key`, `remove`, `clean`, `version`."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import click

from v6node.adapters.docker.node_containers import DockerNodeContainers
from v6node.adapters.http.operator_api import HttpxOperatorApi
from v6node.app.cli.cleaning import TASKS, remove_leftovers
from v6node.app.cli.common import (
    ENV,
    NodeStillRunning,
    describe,
    failing_with_codes,
    load_node,
    log_file_of,
    node_args,
    node_options,
    package_version,
    pick_node,
)
from v6node.app.cli.control import all_configured, config_or_none, liveness
from v6node.app.cli.files import read_yaml, write_config
from v6node.app.folders import NodeLocation, log_file_name
from v6node.app.set_up_encryption import private_key_filename
from v6node.app.show_egress import egress_lines
from v6node.domain.config import NodeConfig
from v6node.domain.errors import CleanupIncomplete, NodeError

# What a node writes in its data folder (the rest of a folder the operator chose stays).
NODE_FILES = ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm", "node.lock", "audit.jsonl", "audit.jsonl.head")


@click.command("files")
@node_options
@failing_with_codes
def files(name: str | None, config_file: str | None, system: bool) -> None:
    """Print where the node keeps its config, data, log, journal and task folders."""
    location = pick_node(name, config_file, system)
    config = load_node(location)
    click.echo(f"config file: {location.config_file}")
    click.echo(f"data folder: {config.data_dir}")
    click.echo(f"log folder:  {config.log_dir}")
    click.echo(f"log file:    {log_file_of(config, location)}")
    click.echo(f"journal:     {Path(config.data_dir) / 'journal.sqlite'}")
    click.echo(f"task folder: {Path(config.data_dir) / TASKS}")
    if config.encryption_enabled:
        click.echo(f"private key: {private_key_filename(config)}")
    click.echo(f"in a container (start --docker): data volume {location.data_volume_name}, container {location.container_name}")
    for db in config.databases:
        click.echo(f"database {db.label}: {db.uri} ({db.type})")


@click.command("check-config")
@node_options
@failing_with_codes
def check_config(name: str | None, config_file: str | None, system: bool) -> None:
    """Validate a node config file and print what the node will use."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    location = pick_node(name, config_file, system)
    config = load_node(location)
    click.echo(f"{location.config_file}: OK")
    click.echo(f"  node name:    {config.name}")
    click.echo(f"  server:       {config.api_base}")
    click.echo(f"  data folder:  {config.data_dir}")
    click.echo(f"  encryption:   {'enabled' if config.encryption_enabled else 'disabled'}")
    for db in config.databases:
        click.echo(f"  database:     {db.label} ({db.type}, {db.mount_mode}) {db.uri}")
    for line in egress_lines(config):
        click.echo(f"  {line}")


@click.command("set-api-key")
@node_options
@click.option("--api-key", prompt="New API key of the node", hide_input=True, help="The new key (asked when not given).")
@failing_with_codes
def set_api_key(name: str | None, config_file: str | None, system: bool, api_key: str) -> None:
    """Write a new API key into the node's config."""
    location = pick_node(name, config_file, system)
    if not api_key.strip():
        raise click.BadParameter("the API key is empty", param_hint="--api-key")
    data = read_yaml(location.config_file)
    data["api_key"] = api_key.strip()
    write_config(location.config_file, data)
    click.echo(f"api_key of {describe(location)} set in {location.config_file}")
    config = config_or_none(location)
    containers = DockerNodeContainers()
    try:
        if liveness(location, config.data_dir if config else str(location.data_dir), containers).running:
            click.echo(f"it runs with the old key until restarted: v6node restart {' '.join(node_args(location))}")
    finally:
        containers.close()


def _removals(location: NodeLocation, config: NodeConfig | None) -> list[Path]:
    """The node's own files and folders: the default folders whole; in folders the operator
    chose (``directories``), only what the node wrote there."""
    found = [location.config_file]
    data_dir = Path(config.data_dir) if config else location.data_dir
    log_dir = Path(config.log_dir) if config else location.log_dir
    for folder, default in ((data_dir, location.data_dir), (log_dir, location.log_dir)):
        if folder == default:
            found.append(folder)
    if data_dir != location.data_dir:
        found += [data_dir / n for n in NODE_FILES] + [data_dir / TASKS] + sorted(data_dir.glob("journal.*.sqlite"))
    if log_dir != location.log_dir:
        found += sorted(log_dir.glob(log_file_name(location.system) + "*")) + [log_dir / "runs"]
        found += sorted(log_dir.glob(log_file_name(location.system).replace(".log", ".out")))
    return [p for p in dict.fromkeys(found) if p.exists() or p.is_symlink()]


@click.command()
@node_options
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@failing_with_codes
def remove(name: str | None, config_file: str | None, system: bool, force: bool) -> None:
    """Delete a stopped node: its config, data and logs (and its data volume and leftovers in Docker)."""
    location = pick_node(name, config_file, system)
    config = config_or_none(location)
    containers = DockerNodeContainers()
    try:
        live = liveness(location, config.data_dir if config else str(location.data_dir), containers)
        if live.running:
            raise NodeStillRunning(
                f"{describe(location)} is running ({live.how} {live.pid}): stop it first "
                f"(`v6node stop {' '.join(node_args(location))}`)"
            )
        paths = _removals(location, config)
        try:
            volume = location.data_volume_name if containers.volume_exists(location.data_volume_name) else None
        except NodeError:
            volume = None
        click.echo(f"{describe(location)}: this removes")
        for path in paths:
            click.echo(f"  {path}{'/' if path.is_dir() else ''}")
        if volume:
            click.echo(f"  Docker volume {volume} (its data folder in a container)")
        click.echo("  and whatever it left in Docker (containers, networks, volumes labelled with its name)")
        key = Path(private_key_filename(config)) if config and config.encryption_enabled else None
        if key and any(key == p or p in key.parents for p in paths if p.is_dir()):
            click.echo(f"  including the organization's private key {key}: keep a copy if other nodes use it")
        if not force and not click.confirm("Remove them? This cannot be undone", default=False):
            click.echo("nothing removed")
            raise SystemExit(1)
        try:
            remove_leftovers(location, config, containers, echo=True)
        except NodeError as exc:
            click.echo(f"warning: {exc}", err=True)
        if volume and containers.remove_volume(volume):
            click.echo(f"removed Docker volume {volume}")
    finally:
        containers.close()
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        click.echo(f"removed {path}")
    click.echo(f"{describe(location)} removed")


@click.command()
@node_options
@failing_with_codes
def clean(name: str | None, config_file: str | None, system: bool) -> None:
    """Remove what stopped nodes left: containers, networks and volumes labelled with their name,
    task folders, stopped node containers. Every configured node, or the one named."""
    locations = [pick_node(name, config_file, system)] if (name or config_file) else all_configured()
    containers = DockerNodeContainers()
    removed, failed = 0, []
    try:
        for location in locations:
            config = config_or_none(location)
            if liveness(location, config.data_dir if config else str(location.data_dir), containers).running:
                click.echo(f"skipped {describe(location)}: it is running")
                continue
            try:
                removed += len(remove_leftovers(location, config, containers, echo=True))
            except CleanupIncomplete as exc:
                failed.append(f"{describe(location)}: {exc}")
    finally:
        containers.close()
    if failed:
        raise CleanupIncomplete("; ".join(failed))
    if not removed:
        click.echo("nothing to clean")


@click.command("version")
@node_options
@failing_with_codes
def version_command(name: str | None, config_file: str | None, system: bool) -> None:
    """Print the v6node version, and the server's when a node is named."""
    click.echo(f"v6node {package_version()}")
    if not (name or config_file):
        return
    config = load_node(pick_node(name, config_file, system))
    try:
        with HttpxOperatorApi(config.api_base, timeout=15) as api:
            click.echo(f"server {config.api_base}: vantage6 {api.server_version()}")
    except NodeError as exc:
        click.echo(f"server {config.api_base}: no answer ({exc})")
