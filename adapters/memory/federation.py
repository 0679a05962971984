"""A vantage6 server in memory with several organizations, each with a node: what ``run-local`` runs against."""
from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from v6node.adapters.crypto.base64_cryptor import Base64Cryptor
from v6node.adapters.crypto.rsa_cryptor import RsaCryptor, create_private_key_pem
from v6node.adapters.memory.container_tokens import ContainerTokens
from v6node.adapters.memory.event_stream import MemoryEventStream
from v6node.adapters.memory.server_api import MemoryServerApi
from v6node.adapters.memory.server_http import server_http_app
from v6node.adapters.memory.server_state import MemoryServerState, StoredRun
from v6node.domain.errors import CryptoError, NodeError
from v6node.domain.events import NewTask
from v6node.domain.local_run import RunReport, TaskReport
from v6node.domain.model import NodeIdentity, RequestedDatabase, RunUpdate, TaskRef
from v6node.ports.cryptor import Cryptor
from v6node.ports.local_federation import LocalFederation

SERVER_URL = "http://localhost"  # never dialled: the nodes' proxies reach the server through its transport
API_PATH = "/api"
COLLABORATION_ID = 1
RESEARCHER_ID = 1


class _NodeServerApi(MemoryServerApi):
    """One node's view of the shared server: container tokens are JWTs, and every PATCH is announced."""

    def __init__(self, federation: MemoryFederation, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._federation = federation

    async def request_container_token(self, task_id: int, image: str) -> str:
        await super().request_container_token(task_id, image)  # the server's checks
        return self._federation.tokens.issue(self.identity, self.tasks[task_id])

    async def update_run(self, run_id: int, update: RunUpdate) -> None:
        try:
            await super().update_run(run_id, update)
        finally:
            await self._federation.changed()


class MemoryFederation(LocalFederation):
    """``LocalFederation`` in memory: organizations 1..n in collaboration 1, node 100+i of
    organization i, and the researcher (user 1) of organization 1.

    The nodes share one ``MemoryServerState`` through their own ``MemoryServerApi``; their
    websockets are ``MemoryEventStream``s to which every new task is announced, as the
    server announces it to the collaboration's room. Algorithms reach the server through
    their node's proxy, whose transport (``transport``) serves ``server_http_app`` in this
    process. In an encrypted collaboration each organization gets an RSA key in
    ``key_folder``; the nodes upload their public keys when they start, as real ones do.
    """

    def __init__(self, organizations: int = 1, *, encrypted: bool = False, key_folder: str | None = None) -> None:
        if organizations < 1:
            raise ValueError(f"a federation needs at least one organization, got {organizations}")
        if encrypted and key_folder is None:
            raise ValueError("an encrypted federation needs a key_folder for its organizations' keys")
        self.organization_ids = tuple(range(1, organizations + 1))
        self.encrypted = encrypted
        self.collaboration_id = COLLABORATION_ID
        self.state = MemoryServerState()
        self.tokens = ContainerTokens()
        self._changed = asyncio.Condition()
        self._keys: dict[int, Path] = {}
        self.servers: dict[int, _NodeServerApi] = {}
        self.events: dict[int, MemoryEventStream] = {}
        for org in self.organization_ids:
            identity = NodeIdentity(
                node_id=100 + org, node_name=f"node-{org}", organization_id=org, organization_name=f"org-{org}",
                collaboration_id=COLLABORATION_ID,
            )
            server = _NodeServerApi(
                self, identity=identity, api_key=f"api-key-{org}", encrypted=encrypted, state=self.state
            )
            self.servers[org] = server
            self.events[org] = MemoryEventStream(token_provider=server.access_token)
            if key_folder is not None and encrypted:
                self._keys[org] = _write_key(Path(key_folder) / f"privkey_org-{org}.pem")
        self.transport = httpx.ASGITransport(app=server_http_app(self, API_PATH), raise_app_exceptions=False)

    # --- what a node needs ------------------------------------------------------------------------
    def node_settings(self, organization_id: int) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "api_key": self.servers[organization_id].api_key, "server_url": SERVER_URL, "api_path": API_PATH,
        }
        if self.encrypted:
            settings["encryption"] = {"enabled": True, "private_key": str(self._keys[organization_id])}
        return settings

    def node_adapters(self, organization_id: int) -> dict[str, object]:
        return {
            "server": self.servers[organization_id],
            "events": self.events[organization_id],
            "proxy_transport": self.transport,
        }

    # --- the server's side ------------------------------------------------------------------------
    def add_task(
        self,
        *,
        image: str,
        name: str,
        inputs: dict[int, str],
        init_org_id: int,
        init_user_id: int | None,
        databases: tuple[RequestedDatabase, ...],
        parent: TaskRef | None = None,
    ) -> TaskRef:
        """Store a task with one pending run per organization of ``inputs`` (its input as given)."""
        task_id = self.state.new_id()
        task = TaskRef(
            id=task_id, image=image, collaboration_id=self.collaboration_id, name=name,
            job_id=parent.job_id if parent is not None else task_id,
            parent_id=parent.id if parent is not None else None,
            init_org_id=init_org_id, init_user_id=init_user_id,
            store_id=parent.store_id if parent is not None else None, databases=databases,
        )
        self.state.tasks[task_id] = task
        now = datetime.now(timezone.utc)
        for org, input_ in inputs.items():
            run_id = self.state.new_id()
            self.state.runs[run_id] = StoredRun(run_id, task_id, org, input_, assigned_at=now)
        return task

    async def announce(self, task: TaskRef) -> None:
        """``new_task`` to every node of the collaboration, as the server emits it to its room."""
        for events in self.events.values():
            events.push(NewTask(task.id, task.parent_id))
        await self.changed()

    async def changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- the researcher's side --------------------------------------------------------------------
    async def create_task(
        self, image: str, input: bytes, organization_ids: tuple[int, ...], databases: tuple[RequestedDatabase, ...]
    ) -> TaskRef:
        unknown = sorted(set(organization_ids) - set(self.organization_ids))
        if unknown:
            raise NodeError(f"no organization {unknown} in this federation")
        inputs = {}
        for org in organization_ids:
            public_key = self.state.organizations[org].public_key
            if self.encrypted and not public_key:
                raise NodeError(f"organization {org} has no public key yet (its node uploads it when it starts)")
            # As the vantage6 client does: encrypted for each organization, or base64 of the JSON.
            inputs[org] = self._cryptor(organization_ids[0]).encrypt_to_str(input, public_key)
        task = self.add_task(
            image=image, name="run-local", inputs=inputs, init_org_id=self.organization_ids[0],
            init_user_id=RESEARCHER_ID, databases=databases,
        )
        await self.announce(task)
        return task

    async def until_job_finished(self, task_id: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._finished(task_id))

    def _finished(self, task_id: int) -> bool:
        tasks = (task_id, *(task.id for task in self.subtasks(task_id)))
        runs = [run for task in tasks for run in self.state.runs_of(task)]
        return bool(runs) and all(run.finished_at is not None for run in runs)

    def subtasks(self, task_id: int) -> tuple[TaskRef, ...]:
        found: list[TaskRef] = []
        parents = {task_id}
        for task in sorted(self.state.tasks.values(), key=lambda t: t.id):
            if task.parent_id in parents:
                found.append(task)
                parents.add(task.id)
        return tuple(found)

    def report(self, task_id: int) -> TaskReport:
        task = self.state.tasks[task_id]
        runs = tuple(
            self._run_report(run, task) for run in sorted(self.state.runs_of(task_id), key=lambda r: r.id)
        )
        return TaskReport(task.id, task.name, task.image, self.state.task_status(task_id), runs, task.parent_id)

    def _run_report(self, run: StoredRun, task: TaskRef) -> RunReport:
        result, problem = None, ""
        if run.result:
            try:
                result = self._cryptor(task.init_org_id or self.organization_ids[0]).decrypt_str(run.result)
            except CryptoError as exc:
                problem = f"the result could not be read by organization {task.init_org_id}: {exc}"
        return RunReport(
            run.id, run.task_id, run.organization_id, run.status, run.log, result,
            run.started_at, run.finished_at, problem,
        )

    def _cryptor(self, organization_id: int) -> Cryptor:
        """A user of that organization's cryptor (its private key when the collaboration is encrypted)."""
        if not self.encrypted:
            return Base64Cryptor()
        return RsaCryptor.from_file(self._keys[organization_id])


def _write_key(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(create_private_key_pem())
    return path
