"""`v6node new`: a guided questionnaire that writes a node config the reference node reads too.

Every answer is also a flag; with ``--no-prompt`` nothing is asked (scripted installs) and a
missing required answer is an error that names its flag.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from v6node.adapters.http.operator_api import HttpxOperatorApi
from v6node.app.cli.common import ENV, failing_with_codes, scope_flag
from v6node.app.cli.files import private_folder, write_config
from v6node.app.config import parse_config
from v6node.app.folders import locate, name_problem
from v6node.domain.config import DATABASE_TYPES, FILE_DATABASE_TYPES, FOLDER_DATABASE_TYPES, LOG_LEVELS
from v6node.domain.errors import ConfigError, NodeError

T = TypeVar("T")

LOG_FORMAT = "%(asctime)s - %(name)-14s - %(levelname)-8s - %(message)s"
# The loggers the reference's questionnaire quiets, plus the ones of our libraries.
QUIET_LOGGERS = ("urllib3", "requests", "engineio.client", "docker.utils.config", "docker.auth", "httpx", "websockets")


class NodeExists(ConfigError):
    """``new`` never overwrites a node's config."""


def node_yaml(
    *, api_key: str, server_url: str, port: int | None, api_path: str, task_dir: str,
    databases: list[dict[str, str]], encryption: bool, private_key: str, policies: dict[str, Any], log_level: str,
) -> dict[str, Any]:
    """The config as the reference's ``v6 node new`` writes it (its schema's required keys included)."""
    config: dict[str, Any] = {
        "api_key": api_key,
        "server_url": server_url.rstrip("/"),
        "port": port,
        "api_path": api_path,
        "task_dir": task_dir,
        "databases": databases,
        "encryption": {"enabled": encryption, "private_key": private_key},
        "logging": {
            "level": log_level,
            "use_console": True,
            "backup_count": 5,
            "max_size": 1024,
            "format": LOG_FORMAT,
            "datefmt": "%Y-%m-%d %H:%M:%S",
            "loggers": [{"name": name, "level": "warning"} for name in QUIET_LOGGERS],
        },
    }
    if policies:
        config["policies"] = policies
    return config


class Asker:
    """Answers from flags first; the rest asked on the terminal, or an error with ``--no-prompt``."""

    def __init__(self, prompt: bool) -> None:
        self.prompt = prompt

    def value(self, given: T | None, flag: str, question: str, default: T | None = None, **kw: Any) -> T:
        if given is not None:
            return given
        if self.prompt:
            answer: T = click.prompt(question, default=default, **kw)
            return answer
        if default is None:
            raise click.UsageError(f"{flag} is required with --no-prompt")
        return default

    def confirm(self, question: str, default: bool) -> bool:
        return click.confirm(question, default=default) if self.prompt else default

    def repeated(self, given: tuple[T, ...], ask_first: str, ask: Callable[[], T]) -> list[T]:
        items = list(given)
        if not given and self.prompt:
            while click.confirm(ask_first if not items else "Add another?", default=False):
                items.append(ask())
        return items


def _databases(asker: Asker, given: tuple[str, ...], types: dict[str, str]) -> list[dict[str, str]]:
    def ask() -> str:
        label = click.prompt("Database label (letters, digits, _)", default="default")
        uri = click.prompt("Database URI (a file path, a folder or a connection string)")
        types[label] = click.prompt("Database type", type=click.Choice(sorted(DATABASE_TYPES)), default="csv")
        return f"{label}={uri}"

    databases = []
    for item in asker.repeated(given, "Do you want to add a database?", ask):
        label, sep, uri = item.partition("=")
        if not sep or not label or not uri:
            raise click.BadParameter(f"expected LABEL=URI, got {item!r}", param_hint="--database")
        db_type = types.get(label, "csv")
        if db_type in FILE_DATABASE_TYPES | FOLDER_DATABASE_TYPES:
            uri = str(Path(uri).expanduser().absolute())  # the config may be read from another folder
        databases.append({"label": label, "uri": uri, "type": db_type})
    return databases


def _encryption(asker: Asker, given: bool | None, api_base: str, api_key: str) -> bool:
    """``--encryption/--no-encryption``, else what the node's collaboration says (as the
    reference's questionnaire asks the server), else the operator's answer."""
    if given is not None:
        return given
    try:
        with HttpxOperatorApi(api_base, timeout=15) as api:
            found = api.node_collaboration(api_key)
    except NodeError as exc:
        if not asker.prompt:
            raise NodeError(
                f"could not read the collaboration's encryption setting from {api_base} ({exc}): "
                "give --encryption or --no-encryption"
            ) from exc
        click.echo(f"Could not ask the server about the collaboration: {exc}")
        return click.confirm("Is the collaboration encrypted?", default=False)
    click.echo(
        f"API key accepted: node '{found.node_name}' of collaboration '{found.collaboration}', which is "
        f"{'encrypted' if found.encrypted else 'not encrypted'}"
    )
    return found.encrypted


@click.command()
@click.option("-n", "--name", help="The node's name (letters, digits, _ . -).")
@click.option("--system/--user", "system", default=False, help="Write it to the system folders, or the user's (default).")
@click.option("--no-prompt", is_flag=True, help="Ask nothing: take every answer from the flags (scripted installs).")
@click.option("--api-key", help="The node's API key (from registering the node at the server).")
@click.option("--server-url", help="The server's base URL.  [default: http://localhost]")
@click.option("--port", type=int, help="The server's port.  [default: 443 for https, else 7601]")
@click.option("--api-path", help="The server's API path.  [default: /api]")
@click.option("--database", "databases", multiple=True, metavar="LABEL=URI", help="A database; repeat for more.")
@click.option("--database-type", "database_types", multiple=True, metavar="LABEL=TYPE", help="Its type (default csv).")
@click.option("--encryption/--no-encryption", default=None, help="Whether the collaboration is encrypted (default: ask the server).")
@click.option("--private-key", help="The organization's private key file (encrypted collaborations).")
@click.option("--allowed-algorithm", "allowed_algorithms", multiple=True, metavar="REGEX", help="An allowed algorithm image (regex); repeat for more.")
@click.option("--allowed-store", "allowed_stores", multiple=True, metavar="URL", help="An allowed algorithm store (URL or regex); repeat for more.")
@click.option("--allow-either-whitelist-or-store", is_flag=True, default=None, help="Allow what either list allows (default: both must).")
@click.option(
    "--require-algorithm-pull/--no-require-algorithm-pull", default=None,
    help="Whether an image must be pulled before it runs (default true; false also runs local images).",
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), help="  [default: INFO]")
@failing_with_codes
def new(
    name: str | None, system: bool, no_prompt: bool, api_key: str | None, server_url: str | None, port: int | None,
    api_path: str | None, databases: tuple[str, ...], database_types: tuple[str, ...], encryption: bool | None,
    private_key: str | None, allowed_algorithms: tuple[str, ...], allowed_stores: tuple[str, ...],
    allow_either_whitelist_or_store: bool | None, require_algorithm_pull: bool | None, log_level: str | None,
) -> None:
    """Create a node config with a guided questionnaire (or from flags with --no-prompt)."""
    asker = Asker(prompt=not no_prompt)
    name = asker.value(name, "--name", "Name of the node").strip().replace(" ", "-")
    problem = name_problem(name)
    if problem:
        raise click.BadParameter(problem, param_hint="--name")
    location = locate(name, system, ENV)
    if location.config_file.exists():
        raise NodeExists(
            str(location.config_file), "",
            f"node '{name}' already exists; choose another name, or remove it first (`v6node remove --name {name}"
            f"{scope_flag(location)}`)",
        )
    api_key = asker.value(api_key, "--api-key", "API key of the node (from registering it at the server)")
    server_url = asker.value(server_url, "--server-url", "Base URL of the server", default="http://localhost").rstrip("/")
    default_port = 443 if server_url.startswith("https") else 7601
    port = asker.value(port, "--port", "Port of the server", default=default_port, type=int)
    api_path = asker.value(api_path, "--api-path", "API path of the server", default="/api")
    types = dict(item.partition("=")[::2] for item in database_types)
    chosen_databases = _databases(asker, databases, types)
    api_base = f"{server_url}:{port}{api_path}" if port else f"{server_url}{api_path}"
    encrypted = _encryption(asker, encryption, api_base, api_key)
    if encrypted and private_key is None and asker.prompt:
        private_key = click.prompt(
            "Path to the organization's private key (empty: create one later with `v6node create-private-key`)",
            default="", show_default=False,
        )
    policies: dict[str, Any] = {}
    algorithms = asker.repeated(
        allowed_algorithms, "Limit the algorithms allowed to run (recommended in production)?",
        lambda: str(click.prompt("Allowed algorithm image (a regular expression over the whole name)")),
    )
    stores = asker.repeated(
        allowed_stores, "Allow the algorithms of an algorithm store?", lambda: str(click.prompt("Store URL"))
    )
    if algorithms:
        policies["allowed_algorithms"] = algorithms
    if stores:
        policies["allowed_algorithm_stores"] = stores
    if algorithms and stores:
        either = allow_either_whitelist_or_store
        if either is None:
            either = asker.confirm("Allow an algorithm that is in either list (rather than in both)?", default=False)
        policies["allow_either_whitelist_or_store"] = either
    if not policies:
        click.echo("Note: no allowed_algorithms or allowed_algorithm_stores: any algorithm may run on this node")
    if require_algorithm_pull is not None:
        policies["require_algorithm_pull"] = require_algorithm_pull
    level = asker.value(log_level, "--log-level", "Log level", default="INFO", type=click.Choice(LOG_LEVELS)).upper()
    data = node_yaml(
        api_key=api_key, server_url=server_url, port=port, api_path=api_path, task_dir=str(location.data_dir),
        databases=chosen_databases, encryption=encrypted, policies=policies,
        private_key=str(Path(private_key).expanduser().absolute()) if private_key else "",
        log_level=level,
    )
    # Refuse what the node would refuse at start (a missing database file, a bad label...).
    parse_config(data, file=str(location.config_file), name=name, default_data_dir=str(location.data_dir))
    private_folder(location.config_file.parent)
    write_config(location.config_file, data)
    click.echo(f"New node config: {location.config_file}")
    click.echo(f"Start it with: v6node start --name {name}{scope_flag(location)}   (or --detach for the background)")
