"""Use case: make the node's encryption match its collaboration, and the server's copy of our public key match our key."""
from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Callable

from v6node.app.retry import until_done
from v6node.app.session import NodeSession
from v6node.domain.config import NodeConfig
from v6node.domain.errors import NodeError
from v6node.ports.clock import Clock
from v6node.ports.cryptor import Cryptor
from v6node.ports.server_api import ServerApi

log = logging.getLogger("v6node.node")

# (encrypted collaboration?, private key path) -> the cryptor to use.
CryptorFactory = Callable[[bool, str], Cryptor]


class EncryptionMismatch(NodeError):
    """The node's ``encryption.enabled`` disagrees with the collaboration's setting."""


def same_public_key(a: str, b: str) -> bool:
    """Compare two public keys in the server's form (base64 of PEM) by their PEM text."""
    try:
        return bool(a) and base64.b64decode(a).strip() == base64.b64decode(b).strip()
    except (binascii.Error, ValueError):
        return False


def private_key_filename(config: NodeConfig) -> str:
    """``encryption.private_key`` (default ``private_key.pem``), relative to the data folder."""
    name = config.private_key or "private_key.pem"
    return name if os.path.isabs(name) else os.path.join(config.data_dir, name)


class SetUpEncryption:
    """Choose the cryptor and put it in the session.

    Business rules:
    - the collaboration's ``encrypted`` flag must equal ``encryption.enabled``, else the
      node stops (exit 2) saying which is which and what to set;
    - in an encrypted collaboration our organization's public key is uploaded when the
      server has none or another one (compared as PEM text).
    """

    def __init__(
        self, config: NodeConfig, server: ServerApi, clock: Clock, session: NodeSession, cryptor_factory: CryptorFactory
    ) -> None:
        self.config = config
        self.server = server
        self.clock = clock
        self.session = session
        self.cryptor_factory = cryptor_factory

    async def __call__(self) -> Cryptor:
        me = self.session.me()
        collaboration = await until_done(
            lambda: self.server.get_collaboration(me.collaboration_id), self.clock, log, "reading the collaboration"
        )
        if collaboration.encrypted != self.config.encryption_enabled:
            server_says = "encrypted" if collaboration.encrypted else "not encrypted"
            raise EncryptionMismatch(
                f"collaboration '{collaboration.name}' (id {collaboration.id}) is {server_says} on the "
                f"server, but {self.config.source or 'the node config'} has encryption.enabled: "
                f"{str(self.config.encryption_enabled).lower()}. Set encryption.enabled to "
                f"{str(collaboration.encrypted).lower()}"
                + (" and point encryption.private_key to the organization's private key" if collaboration.encrypted else "")
                + "."
            )
        cryptor = self.cryptor_factory(collaboration.encrypted, private_key_filename(self.config))
        if collaboration.encrypted:
            await self._publish_public_key(me.organization_id, cryptor)
        self.session.cryptor = cryptor
        return cryptor

    async def _publish_public_key(self, org_id: int, cryptor: Cryptor) -> None:
        organization = await until_done(
            lambda: self.server.get_organization(org_id), self.clock, log, "reading our organization"
        )
        ours = cryptor.own_public_key()
        if same_public_key(organization.public_key, ours):
            return
        what = "has no public key" if not organization.public_key else "has a different public key"
        log.warning("organization '%s' %s on the server; uploading ours", organization.name, what)
        await until_done(
            lambda: self.server.set_organization_public_key(org_id, ours), self.clock, log, "uploading our public key"
        )
