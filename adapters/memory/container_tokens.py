"""Container tokens as the server issues them: JWTs whose ``sub`` says what an algorithm may do."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from typing import Any

from attrs import frozen

from v6node.domain.model import NodeIdentity, RequestedDatabase, TaskRef


@frozen
class ContainerClaims:
    """Who an algorithm container is, as its token says (spec §6.5)."""

    node_id: int
    organization_id: int
    collaboration_id: int
    task_id: int
    image: str
    store_id: int | None = None
    databases: tuple[RequestedDatabase, ...] = ()

    def sub(self) -> dict[str, Any]:
        return {
            "client_type": "container",
            "node_id": self.node_id,
            "organization_id": self.organization_id,
            "collaboration_id": self.collaboration_id,
            "study_id": None,
            "store_id": self.store_id,
            "task_id": self.task_id,
            "image": self.image,
            "databases": [{**db.parameters, "label": db.label} for db in self.databases],
        }


def _segment(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class ContainerTokens:
    """Issues HS256 JWTs (the algorithm client reads their ``sub`` without checking the
    signature) and knows each one it issued, which is how the server side tells a real
    token from a forged one."""

    def __init__(self) -> None:
        self._secret = os.urandom(32)
        self._issued: dict[str, ContainerClaims] = {}

    def issue(self, identity: NodeIdentity, task: TaskRef) -> str:
        claims = ContainerClaims(
            node_id=identity.node_id,
            organization_id=identity.organization_id,
            collaboration_id=identity.collaboration_id,
            task_id=task.id,
            image=task.image,
            store_id=task.store_id,
            databases=task.databases,
        )
        now = int(time.time())
        payload = {
            "fresh": False, "iat": now, "nbf": now, "jti": str(uuid.uuid4()), "type": "access",
            "sub": claims.sub(), "client_type": "container", "roles": [],
        }
        signed = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(payload)}"
        signature = hmac.new(self._secret, signed.encode("ascii"), hashlib.sha256).digest()
        token = f"{signed}.{_segment(signature)}"
        self._issued[token] = claims
        return token

    def claims(self, token: str) -> ContainerClaims | None:
        """The claims of a token this server issued; None for anything else."""
        return self._issued.get(token)
