"""The ``v6node`` command: the only place that reads the environment, handles signals and exits."""
from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click

from v6node.app.config import load_config
from v6node.app.container import NodeContainer
from v6node.app.node import EncryptionMismatch
from v6node.domain.config import NodeConfig
from v6node.domain.errors import AuthenticationFailed, ConfigError, NodeError, RuntimeUnavailable

log = logging.getLogger("v6node")

# Exit codes, one table: what went wrong -> what the process returns.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ConfigError, 2),
    (EncryptionMismatch, 2),
    (AuthenticationFailed, 3),
    (RuntimeUnavailable, 4),
    (NodeError, 1),
)


def exit_code_for(error: BaseException) -> int:
    return next((code for kind, code in EXIT_CODES if isinstance(error, kind)), 1)


def default_data_dir(config_file: Path) -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "vantage6", "node", config_file.stem)


def read_config(config_file: str) -> NodeConfig:
    path = Path(config_file)
    return load_config(path, default_data_dir=default_data_dir(path))


def setup_logging(config: NodeConfig) -> Path:
    settings = config.logging
    formatter = logging.Formatter(settings.format, settings.datefmt)
    root = logging.getLogger()
    root.setLevel(settings.level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    log_file = Path(settings.file) if settings.file and os.sep in settings.file else Path(config.log_dir) / (
        settings.file or f"{config.name}.log"
    )
    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=settings.max_size * 1024, backupCount=settings.backup_count
    )
    file_handler.setFormatter(formatter)
    root.addHandler(file_handler)
    if settings.use_console:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(formatter)
        root.addHandler(console)
    # Libraries log every request; the node's own loggers say what matters.
    for noisy in ("httpx", "httpcore", "websockets", "urllib3", "docker"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for name, level in settings.loggers:
        logging.getLogger(name).setLevel(level)
    return log_file


async def serve(config: NodeConfig) -> None:
    """Run a node until SIGINT/SIGTERM, then clean up."""
    container = NodeContainer(config=config)
    await container.adapters.init_resources()
    try:
        node = await container.node()
        loop = asyncio.get_running_loop()
        main = asyncio.ensure_future(node.run_forever())
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, main.cancel)
        try:
            await main
        except asyncio.CancelledError:
            log.info("stopped by signal; node cleaned up")
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    finally:
        await container.adapters.shutdown_resources()


def _fail(error: BaseException) -> None:
    click.echo(f"v6node: error: {error}", err=True)
    sys.exit(exit_code_for(error))


def _load(config_file: str) -> NodeConfig:
    try:
        return read_config(config_file)
    except ConfigError as exc:
        _fail(exc)
        raise  # unreachable: _fail exits


config_option = click.option(
    "-c", "--config", "config_file", required=True, type=click.Path(dir_okay=False), help="Node YAML file."
)


@click.group()
def main() -> None:
    """v6node: a vantage6 4.x node."""


@main.command()
@config_option
def start(config_file: str) -> None:
    """Start the node in the foreground (Ctrl-C or SIGTERM stops it cleanly)."""
    config = _load(config_file)
    log_file = setup_logging(config)
    log.info("v6node %s starting node '%s' (log file %s)", _version(), config.name, log_file)
    try:
        asyncio.run(serve(config))
    except NodeError as exc:
        log.error("%s", exc)
        _fail(exc)


@main.command("check-config")
@config_option
def check_config(config_file: str) -> None:
    """Validate a node config file and print what the node will use."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    config = _load(config_file)
    click.echo(f"{config_file}: OK")
    click.echo(f"  node name:    {config.name}")
    click.echo(f"  server:       {config.api_base}")
    click.echo(f"  data folder:  {config.data_dir}")
    click.echo(f"  encryption:   {'enabled' if config.encryption_enabled else 'disabled'}")
    for db in config.databases:
        click.echo(f"  database:     {db.label} ({db.type}, {db.mount_mode}) {db.uri}")


@main.command("files")
@config_option
def files(config_file: str) -> None:
    """Print where the node keeps its config, log and data."""
    config = _load(config_file)
    click.echo(f"config file: {Path(config_file).resolve()}")
    click.echo(f"log folder:  {config.log_dir}")
    click.echo(f"data folder: {config.data_dir}")
    for db in config.databases:
        click.echo(f"database {db.label}: {db.uri} ({db.type})")


def _version() -> str:
    try:
        return version("v6node")
    except PackageNotFoundError:
        return "unknown"


@main.command("version")
def version_command() -> None:
    """Print the v6node version."""
    click.echo(_version())


if __name__ == "__main__":
    main()
