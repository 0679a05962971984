"""`v6node start`: in the foreground (the default), in the background (--detach) or in a container (--docker)."""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import logging.handlers
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from v6node.adapters.docker.node_containers import DockerNodeContainers
from v6node.adapters.filesystem.run_log_files import RunLogFiles, prune, without_run_output
from v6node.adapters.system.data_folder_lock import DataFolderLock
from v6node.adapters.system.readiness import ReadinessNotifier
from v6node.app.cli.common import (
    ENV,
    NotOnline,
    describe,
    fail,
    failing_with_codes,
    load_node,
    log_file_of,
    node_args,
    node_options,
    package_version,
    pick_node,
)
from v6node.app.cli.docker_mode import load_in_container, node_image, start_in_docker
from v6node.app.cli.files import file_size, private_folder, show_log_tail
from v6node.app.config_changes import config_changes
from v6node.app.container import NodeContainer
from v6node.app.folders import CONTAINER_CONFIG_DIR, NodeLocation, locate_in_container
from v6node.app.node import Node
from v6node.domain.config import NodeConfig
from v6node.domain.errors import NodeAlreadyRunning, NodeError

log = logging.getLogger("v6node")

READY_TIMEOUT = 180.0


def setup_logging(config: NodeConfig, log_file: Path, console: bool = True) -> None:
    settings = config.logging
    formatter = logging.Formatter(settings.format, settings.datefmt)
    root = logging.getLogger()
    root.setLevel(settings.level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    private_folder(log_file.parent)
    file_handler = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=settings.max_size * 1024, backupCount=settings.backup_count
    )
    file_handler.setFormatter(formatter)
    file_handler.addFilter(without_run_output)
    root.addHandler(file_handler)
    if settings.use_console and console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        stream.addFilter(without_run_output)
        root.addHandler(stream)
    # Each run's lines and its algorithm's output also in <log folder>/runs/<run id>.log.
    runs = Path(config.log_dir) / "runs"
    prune(runs, config.run_log_retention_days)
    run_files = RunLogFiles(runs)
    run_files.setFormatter(formatter)
    root.addHandler(run_files)
    # Libraries log every request; the node's own loggers say what matters.
    for noisy in ("httpx", "httpcore", "websockets", "urllib3", "docker"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for name, level in settings.loggers:
        logging.getLogger(name).setLevel(level)


async def provided(provider: Any) -> Any:
    """An adapter from the container; providers of async resources hand out awaitables."""
    value = provider()
    return await value if inspect.isawaitable(value) else value


def reloader(config: NodeConfig, read: Callable[[], NodeConfig]) -> Callable[[], None]:
    """SIGHUP: read the config file again and log what differs from the running config.

    Nothing is applied while the node runs (its adapters, proxy and network were built from
    the config it started with): the log says to restart it.
    """

    def reload() -> None:
        try:
            new = read()
        except NodeError as exc:
            log.error("SIGHUP: the config was not re-read: %s; the node goes on as it started", exc)
            return
        changes = config_changes(config, new)
        if not changes:
            log.info("SIGHUP: %s re-read; nothing changed", config.source)
            return
        log.warning(
            "SIGHUP: %s re-read; %d setting(s) differ from the running node's: %s. They take effect when the "
            "node is restarted (`v6node restart`); until then it goes on as it started",
            config.source, len(changes), "; ".join(changes),
        )

    return reload


async def serve(
    config: NodeConfig, notifier: ReadinessNotifier, reload: Callable[[], None], own_container: str | None = None
) -> None:
    """Run a node until SIGINT/SIGTERM, then clean up; SIGHUP calls ``reload``."""
    container = NodeContainer(config=config, own_container=own_container)
    await container.adapters.init_resources()
    try:
        node: Node = await provided(container.node)
        loop = asyncio.get_running_loop()
        main = asyncio.ensure_future(_lifetime(node, config, notifier))
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, main.cancel)
        loop.add_signal_handler(signal.SIGHUP, reload)
        try:
            await main
        except asyncio.CancelledError:
            log.info("stopped by signal; node cleaned up")
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
    finally:
        await container.adapters.shutdown_resources()


async def _lifetime(node: Node, config: NodeConfig, notifier: ReadinessNotifier) -> None:
    try:
        await node.initialize()
        me = node.session.me()
        summary = f"node '{me.node_name}' (id {me.node_id}) of organization '{me.organization_name}' at {config.api_base}"
        notifier.ready({"summary": summary, "node_id": me.node_id, "pid": os.getpid()})
        await node.run_forever()
    finally:
        notifier.stopping()
        await node.cleanup()


def refuse_if_in_a_container(location: NodeLocation) -> None:
    """The same node must not also run in its container (same labels, same network)."""
    containers = DockerNodeContainers()
    try:
        state = containers.state(location.container_name)
    except NodeError:
        return  # no engine to ask: the node itself fails on it (exit 4)
    finally:
        containers.close()
    if state is not None and state.running:
        raise NodeAlreadyRunning(
            f"{describe(location)} is already running in container {location.container_name}: stop it first "
            f"(`v6node stop {' '.join(node_args(location))}`)"
        )


def run_foreground(
    location: NodeLocation,
    config: NodeConfig,
    read_again: Callable[[], NodeConfig],
    ready_fd: int | None = None,
    console: bool = True,
) -> None:
    """The node in this process until a signal stops it; exits with the code of ``EXIT_CODES``."""
    private_folder(Path(config.data_dir))
    lock = DataFolderLock(config.data_dir)
    try:
        lock.acquire()
    except NodeAlreadyRunning as exc:
        fail(exc)
    try:
        log_file = log_file_of(config, location)
        setup_logging(config, log_file, console)
        log.info(
            "v6node %s starting node '%s' (config %s, log file %s, PID %d)",
            package_version(), config.name, config.source, log_file, os.getpid(),
        )
        notifier = ReadinessNotifier(ENV.get("NOTIFY_SOCKET"), ready_fd)
        own_container = location.container_name if location.dockerized else None
        asyncio.run(serve(config, notifier, reloader(config, read_again), own_container))
    except NodeError as exc:
        log.error("%s", exc)
        fail(exc)
    finally:
        lock.release()


def _read_line(fd: int, timeout: float) -> tuple[bytes, bool]:
    """What ``fd`` gives up to a newline or its end, and whether it ended in time."""
    data = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return data, False
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data, True


def start_detached(location: NodeLocation, config: NodeConfig, timeout: float) -> None:
    """``v6node start`` again in a session of its own; returns once it is online or has failed.

    The child reports "online" on a pipe (``--ready-fd``); a child that dies closes the
    pipe without a line, and its exit code is the one a foreground start would have had.
    """
    holder = DataFolderLock(config.data_dir).holder()
    if holder is not None:
        raise NodeAlreadyRunning(
            f"{describe(location)} is already running (PID {holder}): follow it with "
            f"`v6node attach {' '.join(node_args(location))}`"
        )
    log_file = log_file_of(config, location)
    private_folder(log_file.parent)
    output = log_file.with_suffix(".out")
    log_offset, output_offset = file_size(log_file), file_size(output)
    read_end, write_end = os.pipe()
    try:
        with output.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "v6node.app.cli", "start", *node_args(location), "--background",
                 "--ready-fd", str(write_end)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, pass_fds=(write_end,),
                start_new_session=True,
            )
    finally:
        os.close(write_end)
    click.echo(f"starting {describe(location)} in the background (PID {process.pid}); waiting until it is online")
    try:
        line, ended = _read_line(read_end, timeout)
    finally:
        os.close(read_end)
    if line.strip():
        details = json.loads(line)
        click.echo(f"{describe(location)} is online: {details['summary']}; PID {process.pid}")
        click.echo(f"  log: {log_file}  (follow it: v6node attach {' '.join(node_args(location))})")
        click.echo(f"  stop it: v6node stop {' '.join(node_args(location))}")
        return
    if not ended:
        show_log_tail("its log so far", log_file, log_offset, output, output_offset)
        raise NotOnline(
            f"{describe(location)} (PID {process.pid}) is not online after {timeout:g} s; it goes on trying "
            f"in the background (stop it with `v6node stop {' '.join(node_args(location))}`)"
        )
    code = process.wait()
    show_log_tail("the last lines of its log", log_file, log_offset, output, output_offset)
    click.echo(f"v6node: error: {describe(location)} did not start (exit code {code})", err=True)
    sys.exit(code or 1)


def _only_config() -> str:
    """The one node config in /mnt/config (a container started without --name)."""
    names = sorted(p.stem for p in CONTAINER_CONFIG_DIR.glob("*.yaml"))
    if len(names) != 1:
        raise click.UsageError(
            f"--dockerized without --name needs exactly one config in {CONTAINER_CONFIG_DIR}, found "
            f"{', '.join(names) or 'none'}"
        )
    return names[0]


@click.command()
@node_options
@click.option("--detach", is_flag=True, help="Start in the background and return once the node is online (or has failed).")
@click.option("--docker", "in_docker", is_flag=True, help="Run the node in a container of the v6node image (in the background).")
@click.option("--image", help="The node image for --docker (default: the config's images.node, else v6node:<version>).")
@click.option(
    "--timeout", type=float, default=READY_TIMEOUT, show_default=True,
    help="With --detach/--docker: seconds to wait until the node is online.",
)
@click.option("--dockerized", is_flag=True, help="Run inside the node's container: /mnt/config, /mnt/data, /mnt/log.")
@click.option("--ready-fd", type=int, hidden=True)
@click.option("--background", is_flag=True, hidden=True)
@failing_with_codes
def start(
    name: str | None, config_file: str | None, system: bool, detach: bool, in_docker: bool, image: str | None,
    timeout: float, dockerized: bool, ready_fd: int | None, background: bool,
) -> None:
    """Start a node: in the foreground (Ctrl-C or SIGTERM stops it cleanly; SIGHUP re-reads
    the config and logs what changed), or in the background with --detach or --docker."""
    if dockerized:
        location = locate_in_container(
            name or (Path(config_file).stem if config_file else _only_config()), system,
            Path(config_file) if config_file else None,
        )

        def read() -> NodeConfig:
            return load_in_container(location, ENV)
    else:
        location = pick_node(name, config_file, system)

        def read() -> NodeConfig:
            return load_node(location)

    config = read()
    if not dockerized and not in_docker:
        refuse_if_in_a_container(location)
    if in_docker:
        start_in_docker(location, config, node_image(location, image), timeout)
    elif detach:
        start_detached(location, config, timeout)
    else:
        run_foreground(location, config, read, ready_fd, console=not background)
