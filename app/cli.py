"""The ``v6node`` command: the only place that reads the environment, handles signals and exits."""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import logging.handlers
import os
import re
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import click
import yaml

from v6node.adapters.crypto.rsa_cryptor import create_private_key_pem, public_key_of
from v6node.adapters.docker.sidecar_images import CONFIG_KEYS, DEFAULT_MIRROR, build_sidecar_images
from v6node.adapters.filesystem.run_log_files import RunLogFiles, prune, without_run_output
from v6node.adapters.system.data_folder_lock import DataFolderLock
from v6node.app.cli_observe import audit_group, logs_command
from v6node.app.cli_run_local import run_local_command
from v6node.app.config import load_config
from v6node.app.container import NodeContainer
from v6node.app.node import Node
from v6node.app.set_up_encryption import EncryptionMismatch
from v6node.app.show_egress import egress_lines
from v6node.app.policy import CheckPolicy
from v6node.domain.config import NodeConfig
from v6node.domain.model import TaskRef
from v6node.domain.policy import PolicyDecision
from v6node.domain.errors import (
    AuthenticationFailed,
    CleanupIncomplete,
    ConfigError,
    NodeAlreadyRunning,
    NodeError,
    RuntimeUnavailable,
)

log = logging.getLogger("v6node")

# Exit codes, one table: what went wrong -> what the process returns.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ConfigError, 2),
    (EncryptionMismatch, 2),
    (NodeAlreadyRunning, 2),
    (AuthenticationFailed, 3),
    (RuntimeUnavailable, 4),
    (CleanupIncomplete, 5),
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


def private_folder(path: Path) -> None:
    """Create ``path`` (and missing parents) readable by this user only; warn when an existing
    folder is open to others (the node's data folder holds keys, tokens and task data)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)  # mkdir's mode is cut by the umask
    if path not in missing and path.stat().st_mode & 0o077:
        log.warning("%s can be read by other users (mode %04o); chmod 700 it", path, path.stat().st_mode & 0o777)


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file next to ``path`` and rename it over ``path``: a link at
    ``path`` is replaced, not followed, and a crash leaves the old file or the new one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


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
    private_folder(log_file.parent)
    file_handler = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=settings.max_size * 1024, backupCount=settings.backup_count
    )
    file_handler.setFormatter(formatter)
    file_handler.addFilter(without_run_output)
    root.addHandler(file_handler)
    if settings.use_console:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(formatter)
        console.addFilter(without_run_output)
        root.addHandler(console)
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
    return log_file


async def serve(config: NodeConfig) -> None:
    """Run a node until SIGINT/SIGTERM, then clean up."""
    container = NodeContainer(config=config)
    await container.adapters.init_resources()
    try:
        node: Node = await _provided(container.node)
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
    private_folder(Path(config.data_dir))
    lock = DataFolderLock(config.data_dir)
    try:
        lock.acquire()
    except NodeAlreadyRunning as exc:
        _fail(exc)
    try:
        log_file = setup_logging(config)
        log.info("v6node %s starting node '%s' (log file %s, PID %d)", _version(), config.name, log_file, os.getpid())
        asyncio.run(serve(config))
    except NodeError as exc:
        log.error("%s", exc)
        _fail(exc)
    finally:
        lock.release()


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
    for line in egress_lines(config):
        click.echo(f"  {line}")


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


@main.command("create-private-key")
@config_option
@click.option("--overwrite", is_flag=True, help="Replace an existing key file.")
@click.option("--no-upload", is_flag=True, help="Do not contact the server (no upload, no encryption check).")
@click.option("--bits", default=4096, show_default=True, help="RSA key size.")
def create_private_key(config_file: str, overwrite: bool, no_upload: bool, bits: int) -> None:
    """Create the organization's private key, point the config at it and upload its public key.

    The config file is rewritten with `encryption.enabled: true` and
    `encryption.private_key: <path>` (YAML comments are not kept).
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    config = _load(config_file)
    try:
        asyncio.run(_create_private_key(config, Path(config_file), overwrite, no_upload, bits))
    except NodeError as exc:
        _fail(exc)


async def _create_private_key(config: NodeConfig, config_file: Path, overwrite: bool, no_upload: bool, bits: int) -> None:
    container = NodeContainer(config=config)
    await container.adapters.init_resources()
    try:
        server = await _provided(container.adapters.server)
        name = config.name
        if not no_upload:
            identity = await server.authenticate()
            collaboration = await server.get_collaboration(identity.collaboration_id)
            if not collaboration.encrypted:
                raise ConfigError(
                    str(config_file), "encryption",
                    f"collaboration '{collaboration.name}' is not encrypted, so this node needs no private key",
                )
            name = identity.organization_name
        key_file = Path(config.private_key or f"privkey_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.pem")
        if not key_file.is_absolute():
            key_file = Path(config.data_dir) / key_file
        if key_file.exists() and not overwrite:
            raise ConfigError(
                str(config_file), "encryption.private_key",
                f"{key_file} already exists; use --overwrite to replace it (results encrypted for the "
                "old key can then no longer be read)",
            )
        pem = create_private_key_pem(bits)
        private_folder(key_file.parent)
        replace_file(key_file, pem, 0o600)
        click.echo(f"private key written to {key_file}")
        _set_key_in_config(config_file, key_file)
        click.echo(f"{config_file}: encryption.enabled: true, encryption.private_key: {key_file}")
        if no_upload:
            click.echo("public key not uploaded (--no-upload); the node uploads it when it starts")
            return
        await server.set_organization_public_key(identity.organization_id, public_key_of(pem))
        click.echo(f"public key of organization '{identity.organization_name}' uploaded to {config.api_base}")
    finally:
        await container.adapters.shutdown_resources()


async def _provided(provider: Any) -> Any:
    """An adapter from the container; providers of async resources hand out awaitables."""
    value = provider()
    return await value if inspect.isawaitable(value) else value


def _set_key_in_config(config_file: Path, key_file: Path) -> None:
    data = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    encryption = data.get("encryption") or {}
    encryption.update({"enabled": True, "private_key": str(key_file)})
    data["encryption"] = encryption
    # The config holds the API key: keep its mode, never write through a link, never half-written.
    mode = config_file.stat().st_mode & 0o777
    replace_file(config_file, yaml.safe_dump(data, sort_keys=False).encode("utf-8"), mode)


@main.command("check-policy")
@config_option
@click.argument("image")
@click.option("--user", "user_id", type=int, help="Id of the user who creates the task.")
@click.option("--org", "org_id", type=int, help="Id of the organization that creates the task.")
@click.option("--store", "store_id", type=int, help="Id of the algorithm store the task's image comes from.")
@click.option("--offline", is_flag=True, help="Do not contact the server (organization names and stores stay unknown).")
def check_policy(config_file: str, image: str, user_id: int | None, org_id: int | None, store_id: int | None, offline: bool) -> None:
    """Explain whether the node's policies let IMAGE run, without running anything.

    Exits 0 when allowed, 1 when denied.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    config = _load(config_file)
    try:
        decision = asyncio.run(_check_policy(config, image, user_id, org_id, store_id, offline))
    except NodeError as exc:
        _fail(exc)
    click.echo(f"{image}: {decision.reason}" if decision.allowed else f"{image}: NOT allowed: {decision.reason}")
    sys.exit(0 if decision.allowed else 1)


async def _check_policy(
    config: NodeConfig, image: str, user_id: int | None, org_id: int | None, store_id: int | None, offline: bool
) -> PolicyDecision:
    container = NodeContainer(config=config)
    await container.adapters.init_resources()
    try:
        server = None
        if not offline:
            server = await _provided(container.adapters.server)
            identity = await server.authenticate()
        runtime = await _provided(container.adapters.runtime)
        try:
            await runtime.ping()
        except NodeError:
            runtime = None  # no engine: tags are compared by name only
        task = TaskRef(
            id=1, image=image, collaboration_id=identity.collaboration_id if server else 1,
            init_org_id=org_id, init_user_id=user_id, store_id=store_id,
        )
        check: CheckPolicy = container.check_policy(server=server, runtime=runtime)
        return await check(task)
    finally:
        await container.adapters.shutdown_resources()


@main.command("build-images")
@click.option("--base", help="A local Debian 12 image to build on (default: make one with debootstrap, as root).")
@click.option("--prefix", default="", show_default=True, help="Put before each image name (e.g. a registry).")
@click.option("--tag", default=None, help="The images' tag (default: the v6node version).")
@click.option("--mirror", default=DEFAULT_MIRROR, show_default=True, help="Debian mirror for debootstrap.")
@click.option("--force", is_flag=True, help="Build even when an image is current.")
def build_images(base: str | None, prefix: str, tag: str | None, mirror: str, force: bool) -> None:
    """Build the Squid, SSH tunnel and firewall helper images from Debian packages (no registry).

    Prints each image and whether it was built or already current, then the `images`
    lines for the node config.
    """
    try:
        built = build_sidecar_images(prefix, tag or _version(), base=base, mirror=mirror, force=force)
    except NodeError as exc:
        _fail(exc)
    for item in built:
        click.echo(f"{item.action:8} {item.image}")
    click.echo("images:")
    for item in built:
        click.echo(f"  {CONFIG_KEYS[item.stage]}: {item.image}")


def _version() -> str:
    try:
        return version("v6node")
    except PackageNotFoundError:
        return "unknown"


@main.command("version")
def version_command() -> None:
    """Print the v6node version."""
    click.echo(_version())


main.add_command(logs_command(_load, config_option))
main.add_command(run_local_command)
main.add_command(audit_group(_load, config_option))


if __name__ == "__main__":
    main()
