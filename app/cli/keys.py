"""`create-private-key` (as the node, or as a user) and `check-policy`."""
from __future__ import annotations

import asyncio
import logging
import re
import sys
from pathlib import Path

import click

from v6node.adapters.crypto.rsa_cryptor import create_private_key_pem, public_key_of
from v6node.adapters.http.operator_api import HttpxOperatorApi, MfaCodeNeeded, UserOrganization
from v6node.app.cli.common import failing_with_codes, load_node, node_options, pick_node
from v6node.app.cli.files import private_folder, read_yaml, replace_file, write_config
from v6node.app.cli.run import provided
from v6node.app.container import NodeContainer
from v6node.app.policy import CheckPolicy
from v6node.domain.config import NodeConfig
from v6node.domain.errors import ConfigError, NodeError
from v6node.domain.model import TaskRef
from v6node.domain.policy import PolicyDecision


def _key_file(config: NodeConfig, organization_name: str) -> Path:
    key = Path(config.private_key or f"privkey_{re.sub(r'[^A-Za-z0-9_.-]', '_', organization_name)}.pem")
    return key if key.is_absolute() else Path(config.data_dir) / key


def _write_key(config: NodeConfig, config_file: Path, organization_name: str, overwrite: bool, bits: int) -> bytes:
    key_file = _key_file(config, organization_name)
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
    data = read_yaml(config_file)
    encryption = data.get("encryption") or {}
    encryption.update({"enabled": True, "private_key": str(key_file)})
    data["encryption"] = encryption
    write_config(config_file, data)  # YAML comments are not kept
    click.echo(f"{config_file}: encryption.enabled: true, encryption.private_key: {key_file}")
    return pem


async def _as_node(config: NodeConfig, config_file: Path, organization_name: str | None, upload: bool,
                   overwrite: bool, bits: int) -> None:
    container = NodeContainer(config=config)
    await container.adapters.init_resources()
    try:
        server = await provided(container.adapters.server)
        if not upload and organization_name:
            _write_key(config, config_file, organization_name, overwrite, bits)
            click.echo("public key not uploaded (--no-upload); the node uploads it when it starts")
            return
        identity = await server.authenticate()
        collaboration = await server.get_collaboration(identity.collaboration_id)
        if not collaboration.encrypted:
            raise ConfigError(
                str(config_file), "encryption",
                f"collaboration '{collaboration.name}' is not encrypted, so this node needs no private key",
            )
        pem = _write_key(config, config_file, organization_name or identity.organization_name, overwrite, bits)
        if not upload:
            click.echo("public key not uploaded (--no-upload); the node uploads it when it starts")
            return
        await server.set_organization_public_key(identity.organization_id, public_key_of(pem))
        click.echo(f"public key of organization '{identity.organization_name}' uploaded to {config.api_base}")
    finally:
        await container.adapters.shutdown_resources()


def _log_in(api: HttpxOperatorApi, username: str, password: str | None) -> UserOrganization:
    password = password if password is not None else click.prompt(f"Password of {username}", hide_input=True)
    try:
        api.log_in(username, password)
    except MfaCodeNeeded:
        code = click.prompt("Two-factor authentication code")
        api.log_in(username, password, mfa_code=str(code).strip())
    return api.my_organization()


def _as_user(config: NodeConfig, config_file: Path, username: str, password: str | None,
             organization_name: str | None, upload: bool, overwrite: bool, bits: int) -> None:
    with HttpxOperatorApi(config.api_base) as api:
        organization = _log_in(api, username, password)
        click.echo(f"logged in as '{username}' of organization '{organization.name}'")
        pem = _write_key(config, config_file, organization_name or organization.name, overwrite, bits)
        if not upload:
            click.echo("public key not uploaded (--no-upload); the node uploads it when it starts")
            return
        api.set_organization_public_key(organization.id, public_key_of(pem))
        click.echo(f"public key of organization '{organization.name}' uploaded to {config.api_base} (as '{username}')")


@click.command("create-private-key")
@node_options
@click.option("--username", help="Log in as this user (asks the password, and the MFA code when the server wants one).")
@click.option("--password", hidden=True, help="The user's password (else asked).")
@click.option("-o", "--organization-name", help="Name the key file privkey_<NAME>.pem; with --no-upload the server is not asked.")
@click.option("--overwrite", is_flag=True, help="Replace an existing key file.")
@click.option("--no-upload", is_flag=True, help="Do not upload the public key (the node uploads it when it starts).")
@click.option("--bits", default=4096, show_default=True, help="RSA key size.")
@failing_with_codes
def create_private_key(
    name: str | None, config_file: str | None, system: bool, username: str | None, password: str | None,
    organization_name: str | None, overwrite: bool, no_upload: bool, bits: int,
) -> None:
    """Create the organization's private key, point the config at it and upload its public key.

    As the node (its API key) by default; with --username as a user of the organization, for
    servers where the node may not change its organization's key.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    location = pick_node(name, config_file, system)
    config = load_node(location)
    if username:
        _as_user(config, location.config_file, username, password, organization_name, not no_upload, overwrite, bits)
    else:
        asyncio.run(_as_node(config, location.config_file, organization_name, not no_upload, overwrite, bits))


@click.command("check-policy")
@node_options
@click.argument("image")
# --user-id, not --user: --user/--system says where the node's config is, as for every command.
@click.option("--user-id", "user_id", type=int, help="Id of the user who creates the task.")
@click.option("--org-id", "--org", "org_id", type=int, help="Id of the organization that creates the task.")
@click.option("--store-id", "--store", "store_id", type=int, help="Id of the algorithm store the task's image comes from.")
@click.option("--offline", is_flag=True, help="Do not contact the server (organization names and stores stay unknown).")
@failing_with_codes
def check_policy(
    name: str | None, config_file: str | None, system: bool, image: str, user_id: int | None, org_id: int | None,
    store_id: int | None, offline: bool,
) -> None:
    """Explain whether the node's policies let IMAGE run, without running anything.

    Exits 0 when allowed, 1 when denied.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    config = load_node(pick_node(name, config_file, system))
    decision = asyncio.run(_check_policy(config, image, user_id, org_id, store_id, offline))
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
            server = await provided(container.adapters.server)
            identity = await server.authenticate()
        runtime = await provided(container.adapters.runtime)
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
