"""Running nodes: `stop`, `restart`, `attach`, `list`."""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import click
from attrs import frozen

from v6node.adapters.docker.node_containers import DockerNodeContainers, Leftovers
from v6node.adapters.system.data_folder_lock import DataFolderLock
from v6node.adapters.system.processes import ProcessGone, send_signal, started_at, wait_for_exit
from v6node.app.cli.cleaning import remove_leftovers, task_folders
from v6node.app.cli.common import (
    ENV,
    NodeNotRunning,
    describe,
    failing_with_codes,
    load_node,
    log_file_of,
    node_args,
    node_options,
    pick_node,
)
from v6node.app.cli.docker_mode import start_in_docker
from v6node.app.cli.run import READY_TIMEOUT, start_detached
from v6node.app.folders import NodeLocation, configured_names, locate
from v6node.domain.config import NodeConfig
from v6node.domain.containers import managed_labels
from v6node.domain.errors import CleanupIncomplete, ConfigError, NodeError

STOP_TIMEOUT = 60.0
TAIL_BYTES = 256 * 1024  # attach's first lines come from at most this much of the log's end


@frozen
class Liveness:
    """Whether a node runs, and as what: a process on this host or a container."""

    running: bool
    how: str = ""  # "process" or "container"
    pid: int | None = None
    since: datetime | None = None
    image: str = ""


def liveness(location: NodeLocation, data_dir: str, containers: DockerNodeContainers | None) -> Liveness:
    pid = DataFolderLock(data_dir).holder()
    if pid is not None:
        return Liveness(True, "process", pid, started_at(pid))
    if containers is not None:
        try:
            state = containers.state(location.container_name)
        except NodeError:
            state = None  # no engine: no container can be running
        if state is not None and state.running:
            return Liveness(True, "container", state.pid, state.started_at, state.image)
    return Liveness(False)


def config_or_none(location: NodeLocation) -> NodeConfig | None:
    try:
        return load_node(location)
    except ConfigError:
        return None


def _data_dir(location: NodeLocation, config: NodeConfig | None) -> str:
    return config.data_dir if config is not None else str(location.data_dir)


def _what_left(location: NodeLocation, config: NodeConfig | None, containers: DockerNodeContainers) -> list[str]:
    try:
        left: Leftovers = containers.leftovers(managed_labels(location.name))
    except NodeError:
        left = Leftovers()
    return [
        *(f"container {n}" for n in left.containers), *(f"network {n}" for n in left.networks),
        *(f"volume {n}" for n in left.volumes),
        *(f"task folder {p}" for p in task_folders(Path(_data_dir(location, config)))),
    ]


def stop_node(location: NodeLocation, timeout: float, force: bool, containers: DockerNodeContainers) -> Liveness:
    """SIGTERM, wait for the node's own clean-up, then check that nothing of it is left."""
    config = config_or_none(location)
    live = liveness(location, _data_dir(location, config), containers)
    if not live.running:
        raise NodeNotRunning(f"{describe(location)} is not running")
    forced = False
    if live.how == "container":
        click.echo(f"stopping {describe(location)} (container {location.container_name}) ...")
        if not containers.stop(location.container_name, timeout, force):
            raise NodeError(f"{describe(location)} has not stopped within {timeout:g} s; wait, or use --force")
        containers.remove(location.container_name)
    else:
        assert live.pid is not None
        click.echo(f"stopping {describe(location)} (PID {live.pid}) ...")
        try:
            send_signal(live.pid, signal.SIGTERM)
        except ProcessGone:
            pass
        if not wait_for_exit(live.pid, timeout):
            if not force:
                raise NodeError(
                    f"{describe(location)} (PID {live.pid}) has not stopped within {timeout:g} s (it may still be "
                    "reporting runs and removing its containers): wait, or use --force to kill it"
                )
            click.echo(f"killing {describe(location)} (PID {live.pid}) after {timeout:g} s")
            try:
                send_signal(live.pid, signal.SIGKILL)
            except ProcessGone:
                pass
            wait_for_exit(live.pid, 30)
            forced = True
    if forced:
        remove_leftovers(location, config, containers, echo=True)
        click.echo(f"{describe(location)} killed; what it left was removed")
        return live
    left = _what_left(location, config, containers)
    if left:
        raise CleanupIncomplete(
            f"{describe(location)} stopped, but left: {'; '.join(left)}. Remove them with "
            f"`v6node clean {' '.join(node_args(location))}`"
        )
    click.echo(f"{describe(location)} stopped; nothing left behind")
    return live


def all_configured() -> list[NodeLocation]:
    return [locate(name, system, ENV) for system in (True, False) for name in configured_names(system, ENV)]


@click.command()
@node_options
@click.option("--all", "all_nodes", is_flag=True, help="Stop every running node (user and system).")
@click.option("--timeout", type=float, default=STOP_TIMEOUT, show_default=True, help="Seconds to wait for a clean stop.")
@click.option("--force", is_flag=True, help="After --timeout, kill the node (SIGKILL) and remove what it left.")
@failing_with_codes
def stop(name: str | None, config_file: str | None, system: bool, all_nodes: bool, timeout: float, force: bool) -> None:
    """Stop a running node gracefully (SIGTERM: it ends its runs and removes its containers)."""
    containers = DockerNodeContainers()
    try:
        if not all_nodes:
            stop_node(pick_node(name, config_file, system), timeout, force, containers)
            return
        stopped = 0
        for location in all_configured():
            config = config_or_none(location)
            if liveness(location, _data_dir(location, config), containers).running:
                stop_node(location, timeout, force, containers)
                stopped += 1
        if not stopped:
            click.echo("no node is running")
    finally:
        containers.close()


@click.command()
@node_options
@click.option("--timeout", type=float, default=STOP_TIMEOUT, show_default=True, help="Seconds to wait for a clean stop.")
@click.option("--force", is_flag=True, help="After --timeout, kill the node (SIGKILL) and remove what it left.")
@failing_with_codes
def restart(name: str | None, config_file: str | None, system: bool, timeout: float, force: bool) -> None:
    """Stop the node (when it runs) and start it again in the background, as it ran before."""
    location = pick_node(name, config_file, system)
    containers = DockerNodeContainers()
    try:
        live = liveness(location, _data_dir(location, config_or_none(location)), containers)
        if live.running:
            stop_node(location, timeout, force, containers)
        else:
            click.echo(f"{describe(location)} is not running; starting it")
    finally:
        containers.close()
    config = load_node(location)  # again: a restart is how a changed config takes effect
    if live.how == "container":
        start_in_docker(location, config, live.image, READY_TIMEOUT)
    else:
        start_detached(location, config, READY_TIMEOUT)


@click.command()
@node_options
@click.option("--tail", type=int, default=20, show_default=True, help="Lines of the log to show first.")
@failing_with_codes
def attach(name: str | None, config_file: str | None, system: bool, tail: int) -> None:
    """Follow a running node's log; Ctrl-C detaches (the node goes on running)."""
    location = pick_node(name, config_file, system)
    config = load_node(location)
    log_file = log_file_of(config, location)
    containers = DockerNodeContainers()
    try:
        if not liveness(location, config.data_dir, containers).running:
            raise NodeNotRunning(f"{describe(location)} is not running; its log is {log_file}")
        click.echo(f"following {log_file} (Ctrl-C detaches; the node goes on running)", err=True)
        try:
            _follow(log_file, tail, lambda: liveness(location, config.data_dir, containers).running)
        except KeyboardInterrupt:
            click.echo(
                f"\ndetached; {describe(location)} goes on running (stop it: v6node stop {' '.join(node_args(location))})",
                err=True,
            )
            return
    finally:
        containers.close()
    click.echo(f"{describe(location)} has stopped", err=True)


def _follow(path: Path, tail: int, running: Callable[[], bool]) -> None:
    """Print the last ``tail`` lines, then what is appended, until ``running()`` is false; a
    rotated log is followed into its new file."""
    handle = path.open("rb")
    # The tail and the following start at one position: no line between them is lost.
    end = handle.seek(0, os.SEEK_END)
    start = max(0, end - TAIL_BYTES)
    handle.seek(start)
    lines = handle.read(end - start).decode("utf-8", "replace").splitlines()
    for line in (lines[1:] if start else lines)[-tail:] if tail > 0 else []:
        click.echo(line)
    checked = time.monotonic()
    try:
        while True:
            chunk = handle.readline()
            if chunk:
                click.echo(chunk.decode("utf-8", "replace").rstrip("\n"))
                continue
            if _rotated(path, handle.fileno()):
                handle.close()
                handle = path.open("rb")
                continue
            if time.monotonic() - checked > 1.0:
                checked = time.monotonic()
                if not running():
                    for rest in handle:
                        click.echo(rest.decode("utf-8", "replace").rstrip("\n"))
                    return
            time.sleep(0.2)
    finally:
        handle.close()


def _rotated(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


@click.command("list")
def list_nodes() -> None:
    """Every configured node (system and user folders): running or stopped, PID, server, since when."""
    containers = DockerNodeContainers()
    rows = [("NAME", "SCOPE", "STATUS", "PID", "SERVER", "SINCE")]
    problems = []
    try:
        for location in all_configured():
            try:
                config: NodeConfig | None = load_node(location)
            except ConfigError as exc:
                config = None
                problems.append(str(exc))
            live = liveness(location, _data_dir(location, config), containers)
            server = config.api_base if config else "(config error)"
            if live.running:
                status = "running" if live.how == "process" else "running (container)"
                rows.append((location.name, location.scope, status, str(live.pid or "-"), server, _when(live.since)))
            else:
                last = log_file_of(config, location) if config else None
                since = datetime.fromtimestamp(last.stat().st_mtime).astimezone() if last and last.exists() else None
                rows.append((location.name, location.scope, "stopped", "-", server, _when(since)))
    finally:
        containers.close()
    if len(rows) == 1:
        click.echo("no node is configured: create one with `v6node new`")
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for problem in problems:
        click.echo(f"config error: {problem}", err=True)
