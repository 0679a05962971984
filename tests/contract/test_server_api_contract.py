"""One ServerApi suite, run against MemoryServerApi and against HttpxServerApi on the real server."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import httpx
import pytest
import pytest_asyncio
import yaml
from attrs import frozen

from v6node.adapters.http.httpx_server_api import BLOB_CHUNK_SIZE, HttpxServerApi
from v6node.adapters.http.payloads import parse_datetime
from v6node.adapters.memory.server_api import MemoryServerApi
from v6node.adapters.system.system_clock import SystemClock
from v6node.domain.errors import AuthenticationFailed, RunAlreadyFinished, ServerRejected, ServerUnavailable
from v6node.domain.model import NodeIdentity, RunUpdate, StreamedResult
from v6node.domain.status import RunStatus
from v6node.ports.server_api import ServerApi
from tests.rig.server import AdminApi, Federation, RealServer, create_federation, free_port

IMAGE = "127.0.0.1:5999/contract-algo:1"
INPUT = {"method": "main", "args": [1], "kwargs": {}}
UTC = timezone.utc

# One federation (and one logged-in node) per module and adapter: the server checks a
# node's API key against every node's bcrypt hash, so each node made slows every login.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def encoded(input_: dict[str, Any]) -> str:
    """Unencrypted input as the user client stores it."""
    return base64.b64encode(json.dumps(input_).encode()).decode()


@frozen
class StoredRun:
    """A run as the server keeps it, read back behind the adapter's back."""

    status: RunStatus
    log: str | None
    result: str | None
    started_at: datetime | None
    finished_at: datetime | None


class Driver(Protocol):
    """What the suite needs from a server besides the port: fixtures and a look at stored state."""

    api: ServerApi
    identity: NodeIdentity
    other_organization_id: int
    other_organization_name: str

    def create_task(self, image: str = IMAGE, both_organizations: bool = True) -> int: ...

    def create_blob_task(self, data: bytes) -> int:
        """A task whose input the user put in the blob store (a server with one only)."""

    def add_algorithm_store(self, collaboration_id: int | None) -> tuple[int, str]:
        """Register an algorithm store for a collaboration (None: for all); its id and URL."""

    def run_id(self, task_id: int, ours: bool = True) -> int: ...

    def stored(self, run_id: int) -> StoredRun: ...

    def api_with_wrong_key(self) -> ServerApi: ...

    def fresh_api(self) -> ServerApi:
        """Another adapter instance for our node, not logged in yet."""


class MemoryDriver:
    def __init__(self, blob_store: bool = False) -> None:
        self.identity = NodeIdentity(
            node_id=10, node_name="memory-node", organization_id=1, organization_name="org-1", collaboration_id=1
        )
        self.api = self.server = MemoryServerApi(identity=self.identity, blob_store=blob_store)
        self.other_organization_id = 2
        self.other_organization_name = "org-2"
        self.server.add_organization(self.other_organization_id, self.other_organization_name)

    def create_task(self, image: str = IMAGE, both_organizations: bool = True) -> int:
        orgs = (1, 2) if both_organizations else (1,)
        return self.server.create_task(image, INPUT, orgs).id

    def create_blob_task(self, data: bytes) -> int:
        return self.server.create_task(IMAGE, self.server.add_blob(data), (1, 2)).id

    def add_algorithm_store(self, collaboration_id: int | None) -> tuple[int, str]:
        store_id = len(self.server.algorithm_stores) + 1
        self.server.algorithm_stores[store_id] = url = f"https://store-{store_id}.example.org/api"
        return store_id, url

    def run_id(self, task_id: int, ours: bool = True) -> int:
        return next(
            run.id
            for run in self.server.runs_of(task_id)
            if (run.organization_id == self.identity.organization_id) == ours
        )

    def stored(self, run_id: int) -> StoredRun:
        run = self.server.runs[run_id]
        return StoredRun(run.status, run.log, run.result, run.started_at, run.finished_at)

    def api_with_wrong_key(self) -> ServerApi:
        other = MemoryServerApi(identity=self.identity)
        other.api_key = str(uuid.uuid4())
        return other

    def fresh_api(self) -> ServerApi:
        return MemoryServerApi(identity=self.identity)

    async def aclose(self) -> None:
        pass


class RealServerDriver:
    """The first node of a fresh federation; tasks are created by the federation's user."""

    def __init__(self, server: RealServer, admin: AdminApi, federation: Federation) -> None:
        self.server = server
        self.admin = admin
        self.federation = federation
        node = federation.nodes[0]
        self.identity = NodeIdentity(
            node_id=node.node_id,
            node_name=node.name,
            organization_id=node.organization_id,
            organization_name=admin.get(f"/organization/{node.organization_id}")["name"],
            collaboration_id=federation.collaboration_id,
        )
        self.other_organization_id = federation.organization_ids[1]
        self.other_organization_name = admin.get(f"/organization/{self.other_organization_id}")["name"]
        self._apis: list[HttpxServerApi] = []
        self._store: StubAlgorithmStore | None = None
        self.api = self._adapter(node.api_key)
        self.user = httpx.Client(base_url=server.api, timeout=30)
        login = self.user.post(
            "/token/user", json={"username": federation.user.username, "password": federation.user.password}
        )
        login.raise_for_status()
        self.user.headers["Authorization"] = f"Bearer {login.json()['access_token']}"

    def _adapter(self, api_key: str) -> HttpxServerApi:
        api = HttpxServerApi(self.server.api, self.server.root, api_key, SystemClock(), max_attempts=2)
        self._apis.append(api)
        return api

    def create_task(self, image: str = IMAGE, both_organizations: bool = True) -> int:
        orgs = self.federation.organization_ids if both_organizations else self.federation.organization_ids[:1]
        body = {
            "name": "contract",
            "image": image,
            "collaboration_id": self.federation.collaboration_id,
            "description": "",
            "organizations": [{"id": org, "input": encoded(INPUT)} for org in orgs],
            "databases": [],
        }
        response = self.user.post("/task", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def create_blob_task(self, data: bytes) -> int:
        upload = self.user.post("/blobstream", content=data, headers={"Content-Type": "application/octet-stream"})
        assert upload.status_code == 201, upload.text
        blob_id = upload.json()["uuid"]
        body = {
            "name": "contract-blob",
            "image": IMAGE,
            "collaboration_id": self.federation.collaboration_id,
            "description": "",
            "organizations": [{"id": org, "input": blob_id} for org in self.federation.organization_ids],
            "databases": [],
        }
        response = self.user.post("/task", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def add_algorithm_store(self, collaboration_id: int | None) -> tuple[int, str]:
        if self._store is None:
            self._store = StubAlgorithmStore()
        return register_algorithm_store(self.admin, self._store, collaboration_id)

    def run_id(self, task_id: int, ours: bool = True) -> int:
        return next(
            run["id"]
            for run in self.admin.runs_of_task(task_id)
            if (run["organization"]["id"] == self.identity.organization_id) == ours
        )

    def stored(self, run_id: int) -> StoredRun:
        run = self.admin.run(run_id)
        result = self.admin.get(f"/result/{run_id}")["result"]
        return StoredRun(
            RunStatus(run["status"]),
            run["log"],
            result,
            parse_datetime(run["started_at"]),
            parse_datetime(run["finished_at"]),
        )

    def api_with_wrong_key(self) -> ServerApi:
        return self._adapter(str(uuid.uuid4()))

    def fresh_api(self) -> ServerApi:
        return self._adapter(self.federation.nodes[0].api_key)

    async def aclose(self) -> None:
        self.user.close()
        for api in self._apis:
            await api.aclose()
        if self._store is not None:
            self._store.close()


class StubAlgorithmStore:
    """An algorithm store on loopback that accepts the server's whitelisting (POST .../vantage6-server).

    The server registers a store only after that call succeeds; nothing else is served.
    """

    def __init__(self) -> None:
        class Whitelist(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                found = self.path.split("?")[0].endswith("/vantage6-server")
                body = b"{}" if found else b'{"msg": "not found"}'
                self.send_response(201 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", free_port()), Whitelist)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()
        self._made = 0

    def new_url(self) -> str:
        """Another store URL on the stub (the server keeps one record per URL)."""
        self._made += 1
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}/store{self._made}/api"

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()


def register_algorithm_store(admin: AdminApi, store: StubAlgorithmStore, collaboration_id: int | None) -> tuple[int, str]:
    """As root; the server first whitelists itself at the store, which the stub accepts."""
    url = store.new_url()
    body: dict[str, Any] = {
        "name": "contract-store",
        "algorithm_store_url": url,
        "server_url": admin.server.api,
        "force": True,  # the stub is on 127.0.0.1
    }
    if collaboration_id is not None:
        body["collaboration_id"] = collaboration_id
    response = admin.http.post("/algorithmstore", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"], url


@pytest_asyncio.fixture(
    scope="module", loop_scope="module", params=["memory", pytest.param("httpx", marks=pytest.mark.server)]
)
async def driver(request: pytest.FixtureRequest) -> AsyncIterator[MemoryDriver | RealServerDriver]:
    if request.param == "memory":
        made: MemoryDriver | RealServerDriver = MemoryDriver()
    else:
        admin = request.getfixturevalue("admin")
        federation = create_federation(admin, f"serverapi-{uuid.uuid4().hex[:8]}", n_orgs=2)
        made = RealServerDriver(request.getfixturevalue("real_server"), admin, federation)
    await made.api.authenticate()
    yield made
    await made.aclose()


@pytest_asyncio.fixture(
    scope="module", loop_scope="module", params=["memory", pytest.param("httpx", marks=pytest.mark.server)]
)
async def blob_driver(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MemoryDriver | RealServerDriver]:
    """Like ``driver``, on a server with its blob store on (the real one: a server of its own, on Azurite)."""
    if request.param == "memory":
        made: MemoryDriver | RealServerDriver = MemoryDriver(blob_store=True)
        await made.api.authenticate()
        yield made
        return
    server = RealServer(tmp_path_factory.mktemp("blob-server"), blob_store=True)
    server.start()
    admin = AdminApi(server)
    try:
        made = RealServerDriver(server, admin, create_federation(admin, "blobs", n_orgs=2))
        await made.api.authenticate()
        yield made
        await made.aclose()
    finally:
        admin.close()
        server.stop()


@pytest.fixture
def api(driver: MemoryDriver | RealServerDriver) -> ServerApi:
    """Our node, logged in."""
    return driver.api


async def collect(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in chunks]


async def produce(data: bytes, made: list[int] | None = None) -> AsyncIterator[bytes]:
    """``data`` in chunks of a mebibyte, noting each chunk as it is made."""
    for start in range(0, len(data), BLOB_CHUNK_SIZE):
        if made is not None:
            made.append(start)
        yield data[start : start + BLOB_CHUNK_SIZE]


PUBLIC_KEY = base64.b64encode(b"-----BEGIN PUBLIC KEY-----\nMIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEA\n-----END PUBLIC KEY-----\n").decode()
NO_BLOB_STORE = "The large result store is not set to blob storage, result streaming is not available."


# --- identity and tokens -----------------------------------------------------------------------------
async def test_authenticate_returns_who_we_are(driver: MemoryDriver | RealServerDriver) -> None:
    api = driver.fresh_api()
    assert isinstance(api, ServerApi)
    assert (api.access_token(), api.token_expires_at()) == ("", 0.0)

    assert await api.authenticate() == driver.identity
    assert api.access_token()
    assert api.token_expires_at() > time.time() + 3600


async def test_wrong_api_key_fails_authentication(driver: MemoryDriver | RealServerDriver) -> None:
    with pytest.raises(AuthenticationFailed):
        await driver.api_with_wrong_key().authenticate()


async def test_refresh_gives_a_new_working_token(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    before = api.access_token()
    assert await api.renew_token() is False  # refreshed, no new login needed
    assert api.access_token() not in ("", before)
    assert (await api.get_organization(driver.identity.organization_id)).name == driver.identity.organization_name


# --- reads ----------------------------------------------------------------------------------------------
async def test_organization_collaboration_task_and_run(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    task_id = driver.create_task()
    run_id = driver.run_id(task_id)

    organization = await api.get_organization(driver.other_organization_id)
    collaboration = await api.get_collaboration(driver.identity.collaboration_id)
    task = await api.get_task(task_id)
    run = await api.get_run(run_id)

    assert organization.id == driver.other_organization_id and organization.public_key == ""
    assert (collaboration.id, collaboration.encrypted) == (driver.identity.collaboration_id, False)
    assert (task.id, task.image, task.collaboration_id) == (task_id, IMAGE, driver.identity.collaboration_id)
    assert (task.parent_id, task.init_org_id, task.databases) == (None, driver.identity.organization_id, ())
    assert task.job_id is not None and task.status == "pending"
    assert (run.id, run.task, run.input, run.status) == (run_id, task, encoded(INPUT), RunStatus.PENDING)
    assert run.organization_id == driver.identity.organization_id
    assert (run.started_at, run.finished_at, run.blob_storage_used) == (None, None, False)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("get_organization", "Organization id={} not found!"),
        ("get_collaboration", "collaboration having id={} not found"),
        ("get_task", "task id={} is not found"),
        ("get_run", "Run id={} not found!"),
    ],
)
async def test_unknown_ids_are_rejected_with_404(api: ServerApi, call: str, message: str) -> None:
    with pytest.raises(ServerRejected) as info:
        await getattr(api, call)(999_999)
    assert (info.value.status, info.value.message) == (404, message.format(999_999))


async def test_open_runs_are_ours_and_filter_by_task(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    first, second = driver.create_task(), driver.create_task()

    runs = await api.list_open_runs()

    # Newest first, like the server; runs of earlier tests in this module may follow.
    assert [run.id for run in runs[:2]] == [driver.run_id(second), driver.run_id(first)]
    assert [run.task.id for run in runs[:2]] == [second, first]
    assert {run.organization_id for run in runs} == {driver.identity.organization_id}
    assert all(run.finished_at is None for run in runs)
    assert [run.id for run in await api.list_open_runs(task_id=first)] == [driver.run_id(first)]


async def test_finished_runs_are_not_open(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    task_id = driver.create_task()
    await api.update_run(driver.run_id(task_id), RunUpdate.finished(RunStatus.COMPLETED, datetime.now(UTC), "done"))
    assert await api.list_open_runs(task_id=task_id) == []


async def test_open_runs_of_an_unknown_task_are_rejected(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    with pytest.raises(ServerRejected) as info:
        await api.list_open_runs(task_id=999_999)
    assert info.value.status == 400


async def test_more_than_one_page_of_open_runs_comes_back_complete(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    task_ids = [driver.create_task(both_organizations=False) for _ in range(23)]

    runs = await api.list_open_runs()

    assert {run.task.id for run in runs} >= set(task_ids)
    assert len({run.id for run in runs}) == len(runs)


# --- run updates --------------------------------------------------------------------------------------
async def test_started_then_finished_is_stored(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    run_id = driver.run_id(driver.create_task())
    # Whole seconds and another offset: the adapter must still send microseconds and +00:00.
    started = datetime(2026, 3, 1, 13, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    finished = datetime(2026, 3, 1, 12, 5, 7, 123456, tzinfo=UTC)

    await api.update_run(run_id, RunUpdate.started(started))
    after_start = driver.stored(run_id)
    await api.update_run(run_id, RunUpdate.finished(RunStatus.COMPLETED, finished, log="line 1\nline 2", result="cmVzdWx0"))

    assert after_start.started_at == datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert after_start.status is RunStatus.PENDING
    assert driver.stored(run_id) == StoredRun(
        RunStatus.COMPLETED, "line 1\nline 2", "cmVzdWx0", datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC), finished
    )
    run = await api.get_run(run_id)
    assert (run.status, run.finished_at) == (RunStatus.COMPLETED, finished)


async def test_a_streamed_result_is_stored_as_the_text_it_streams(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    run_id = driver.run_id(driver.create_task())
    text = base64.b64encode(bytes(range(256)) * 40_000).decode()  # 13 MB of base64 in 1 MiB pieces
    attempts = 0

    async def pieces() -> AsyncIterator[bytes]:
        nonlocal attempts
        attempts += 1
        data = text.encode()
        for start in range(0, len(data), 1024 * 1024):
            yield data[start : start + 1024 * 1024]

    result = StreamedResult(length=len(text), chunks=pieces)
    await api.update_run(run_id, RunUpdate.finished(RunStatus.COMPLETED, datetime.now(UTC), log="streamed", result=result))

    stored = driver.stored(run_id)
    assert (stored.status, stored.log, stored.result == text) == (RunStatus.COMPLETED, "streamed", True)
    assert attempts == 1


async def test_patch_is_not_partial_a_status_change_erases_the_log(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    run_id = driver.run_id(driver.create_task())
    await api.update_run(run_id, RunUpdate(status=RunStatus.INITIALIZING, log="pulling image"))
    assert driver.stored(run_id).log == "pulling image"

    await api.update_run(run_id, RunUpdate.status_change(RunStatus.ACTIVE))

    stored = driver.stored(run_id)
    assert (stored.status, stored.log, stored.result, stored.finished_at) == (RunStatus.ACTIVE, None, None, None)


async def test_patch_after_finish_is_run_already_finished(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    run_id = driver.run_id(driver.create_task())
    await api.update_run(run_id, RunUpdate.finished(RunStatus.CRASHED, datetime.now(UTC), log="boom"))

    with pytest.raises(RunAlreadyFinished) as info:
        await api.update_run(run_id, RunUpdate.status_change(RunStatus.KILLED))

    assert (info.value.status, info.value.message) == (400, "Cannot update an already finished algorithm run!")
    assert driver.stored(run_id).status is RunStatus.CRASHED


async def test_patch_of_another_organizations_run_is_rejected(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    theirs = driver.run_id(driver.create_task(), ours=False)
    with pytest.raises(ServerRejected) as info:
        await api.update_run(theirs, RunUpdate.status_change(RunStatus.ACTIVE))
    assert info.value.status == 401
    assert driver.stored(theirs).status is RunStatus.PENDING


async def test_patch_of_an_unknown_run_is_rejected(api: ServerApi) -> None:
    with pytest.raises(ServerRejected) as info:
        await api.update_run(999_999, RunUpdate.status_change(RunStatus.ACTIVE))
    assert (info.value.status, info.value.message) == (404, "Run id=999999 not found!")


async def test_a_failed_run_fails_its_unstarted_siblings(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    task_id = driver.create_task()
    ours, theirs = driver.run_id(task_id), driver.run_id(task_id, ours=False)

    await api.update_run(ours, RunUpdate.finished(RunStatus.FAILED, datetime.now(UTC), log="error"))

    sibling = driver.stored(theirs)
    assert sibling.status is RunStatus.FAILED
    assert sibling.finished_at is not None
    assert sibling.log == f"Marked as failed because sibling run id={ours} failed with status 'failed'."


# --- container tokens -------------------------------------------------------------------------------------
async def test_container_token_needs_the_tasks_exact_image(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    task_id = driver.create_task()

    with pytest.raises(ServerRejected) as info:
        await api.request_container_token(task_id, IMAGE.replace(":1", ":2"))
    assert info.value.status == 401

    token = await api.request_container_token(task_id, IMAGE)
    assert isinstance(token, str) and token


async def test_container_token_for_an_unknown_task_is_rejected(api: ServerApi) -> None:
    with pytest.raises(ServerRejected) as info:
        await api.request_container_token(999_999, IMAGE)
    assert info.value.status == 400


async def test_container_token_is_refused_once_the_task_has_failed(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    task_id = driver.create_task()
    # A failed status without finished_at: the server goes by the runs' statuses alone.
    await api.update_run(driver.run_id(task_id), RunUpdate.status_change(RunStatus.FAILED))

    with pytest.raises(ServerRejected) as info:
        await api.request_container_token(task_id, IMAGE)
    assert (info.value.status, info.value.message) == (400, "Task is already finished!")


# --- organizations and algorithm stores ------------------------------------------------------------------------
async def test_our_public_key_is_stored_and_can_be_cleared(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    ours = driver.identity.organization_id

    await api.set_organization_public_key(ours, PUBLIC_KEY)
    assert (await api.get_organization(ours)).public_key == PUBLIC_KEY

    await api.set_organization_public_key(ours, "")
    assert (await api.get_organization(ours)).public_key == ""


async def test_another_organizations_public_key_cannot_be_set(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    with pytest.raises(ServerRejected) as info:
        await api.set_organization_public_key(driver.other_organization_id, PUBLIC_KEY)
    assert (info.value.status, info.value.message) == (401, "You lack the permission to do that!")
    assert (await api.get_organization(driver.other_organization_id)).public_key == ""

    with pytest.raises(ServerRejected) as info:
        await api.set_organization_public_key(999_999, PUBLIC_KEY)
    assert (info.value.status, info.value.message) == (404, "Organization with id=999999 not found")


async def test_organizations_are_found_by_exact_name(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    ours = await api.find_organizations(driver.identity.organization_name)
    theirs = await api.find_organizations(driver.other_organization_name)

    assert ours == [await api.get_organization(driver.identity.organization_id)]
    assert [org.id for org in theirs] == [driver.other_organization_id]
    assert await api.find_organizations("no-such-organization") == []


@pytest.mark.parametrize(
    "variant",
    [str.upper, lambda name: name[:-1] + "_", lambda name: name[:-2] + "%"],
    ids=["other-case", "underscore-wildcard", "percent-wildcard"],
)
async def test_names_that_only_look_alike_find_nothing(
    api: ServerApi, driver: MemoryDriver | RealServerDriver, variant: Any
) -> None:
    # The real server answers these with our organization (see the assumptions below).
    assert await api.find_organizations(variant(driver.identity.organization_name)) == []


async def test_algorithm_store_url_of_our_collaboration(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    store_id, url = driver.add_algorithm_store(driver.identity.collaboration_id)
    assert await api.get_algorithm_store_url(store_id) == url

    with pytest.raises(ServerRejected) as info:
        await api.get_algorithm_store_url(999_999)
    assert (info.value.status, info.value.message) == (404, "Algorithm store id=999999 not found")


# --- blob store --------------------------------------------------------------------------------------------------
async def test_without_a_blob_store_blob_calls_are_refused(api: ServerApi, driver: MemoryDriver | RealServerDriver) -> None:
    assert await api.blob_store_enabled() is False
    run = await api.get_run(driver.run_id(driver.create_task()))
    assert run.blob_storage_used is False

    with pytest.raises(ServerRejected) as info:
        await api.upload_blob(produce(b"result"))
    assert (info.value.status, info.value.message) == (501, NO_BLOB_STORE)

    # The server looks for a run with that input or result first, then for its store.
    with pytest.raises(ServerRejected) as info:
        await collect(api.download_blob(run.input))
    assert (info.value.status, info.value.message) == (501, NO_BLOB_STORE)

    unknown = str(uuid.uuid4())
    with pytest.raises(ServerRejected) as info:
        await collect(api.download_blob(unknown))
    assert (info.value.status, info.value.message) == (404, f"No run found with input or result id={unknown}")


async def test_with_a_blob_store_it_is_reported_on(blob_driver: MemoryDriver | RealServerDriver) -> None:
    assert await blob_driver.api.blob_store_enabled() is True


async def test_a_blob_input_is_downloaded_in_mebibyte_chunks(blob_driver: MemoryDriver | RealServerDriver) -> None:
    api = blob_driver.api
    data = os.urandom(BLOB_CHUNK_SIZE + BLOB_CHUNK_SIZE // 2)
    run = await api.get_run(blob_driver.run_id(blob_driver.create_blob_task(data)))

    chunks = await collect(api.download_blob(run.input))

    assert run.blob_storage_used is True
    assert str(uuid.UUID(run.input)) == run.input
    assert b"".join(chunks) == data
    assert [len(chunk) for chunk in chunks] == [BLOB_CHUNK_SIZE, BLOB_CHUNK_SIZE // 2]


async def test_a_result_blob_of_several_mebibytes_round_trips(blob_driver: MemoryDriver | RealServerDriver) -> None:
    api = blob_driver.api
    data = os.urandom(5 * BLOB_CHUNK_SIZE + 7)
    made: list[int] = []

    blob_id = await api.upload_blob(produce(data, made))

    assert str(uuid.UUID(blob_id)) == blob_id
    assert len(made) == 6
    # A blob is served only once a run names it as its input or result.
    with pytest.raises(ServerRejected) as info:
        await collect(api.download_blob(blob_id))
    assert (info.value.status, info.value.message) == (404, f"No run found with input or result id={blob_id}")

    run_id = blob_driver.run_id(blob_driver.create_blob_task(b"input"))
    await api.update_run(run_id, RunUpdate.finished(RunStatus.COMPLETED, datetime.now(UTC), log="done", result=blob_id))
    chunks = await collect(api.download_blob(blob_id))

    assert blob_driver.stored(run_id).result == blob_id
    assert b"".join(chunks) == data
    assert [len(chunk) for chunk in chunks] == [BLOB_CHUNK_SIZE] * 5 + [7]


async def test_a_result_naming_a_blob_that_was_never_stored_is_unavailable(blob_driver: MemoryDriver | RealServerDriver) -> None:
    api = blob_driver.api
    missing = str(uuid.uuid4())
    run_id = blob_driver.run_id(blob_driver.create_blob_task(b"input"))
    await api.update_run(run_id, RunUpdate.finished(RunStatus.COMPLETED, datetime.now(UTC), log="", result=missing))

    # The server finds the run, then its storage fails: HTTP 500 on every attempt.
    with pytest.raises(ServerUnavailable, match="Error streaming result!"):
        await collect(api.download_blob(missing))


async def test_an_empty_blob_round_trips(blob_driver: MemoryDriver | RealServerDriver) -> None:
    api = blob_driver.api
    blob_id = await api.upload_blob(produce(b""))
    run_id = blob_driver.run_id(blob_driver.create_blob_task(b"input"))
    await api.update_run(run_id, RunUpdate.finished(RunStatus.COMPLETED, datetime.now(UTC), log="", result=blob_id))
    assert b"".join(await collect(api.download_blob(blob_id))) == b""


# --- what the adapter assumes about the real server -------------------------------------------------------
def _forged_token(secret: str, claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=")

    signing_input = part({"alg": "HS256", "typ": "JWT"}) + b"." + part(claims)
    signature = base64.urlsafe_b64encode(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


@pytest.mark.server
async def test_real_server_answers_an_expired_token_with_401_token_has_expired(real_server: RealServer) -> None:
    # The server will not issue tokens shorter than 30 minutes, so sign an expired one with its secret.
    secret = yaml.safe_load((real_server.workdir / "server.yaml").read_text())["jwt_secret_key"]
    past = int(time.time()) - 3600
    token = _forged_token(secret, {"sub": 1, "type": "access", "iat": past - 60, "nbf": past - 60, "exp": past, "jti": "x"})

    response = httpx.get(f"{real_server.api}/organization/1", headers={"Authorization": f"Bearer {token}"})

    # HttpxServerApi renews and repeats on exactly this answer.
    assert response.status_code == 401
    assert "expired" in response.json()["msg"].lower()


@pytest.fixture(scope="module")
def node_http(real_server: RealServer, admin: AdminApi) -> Iterator[tuple[httpx.Client, Federation]]:
    """Plain HTTP as the first node of a federation of its own, to see what the server answers."""
    federation = create_federation(admin, f"raw-{uuid.uuid4().hex[:8]}", n_orgs=2)
    client = httpx.Client(base_url=real_server.api, timeout=30)
    login = client.post("/token/node", json={"api_key": federation.nodes[0].api_key})
    login.raise_for_status()
    client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
    yield client, federation
    client.close()


@pytest.mark.server
async def test_real_server_matches_organization_names_with_like_within_the_nodes_collaborations(
    node_http: tuple[httpx.Client, Federation], admin: AdminApi
) -> None:
    client, federation = node_http
    ours = federation.organization_ids[0]
    name = admin.get(f"/organization/{ours}")["name"]

    def found(pattern: str) -> list[int]:
        response = client.get("/organization", params={"name": pattern})
        assert response.status_code == 200, response.text
        return [org["id"] for org in response.json()["data"]]

    # find_organizations filters these out again.
    assert found(name.upper()) == [ours]
    assert ours in found(name[:-1] + "_")
    assert ours in found(name[:-2] + "%")
    # Organizations outside the node's collaborations are not listed at all.
    assert found("root") == []


@pytest.mark.server
async def test_real_server_shows_a_node_the_stores_of_its_collaboration_and_the_global_ones(
    node_http: tuple[httpx.Client, Federation], admin: AdminApi
) -> None:
    client, federation = node_http
    other = create_federation(admin, f"other-{uuid.uuid4().hex[:8]}", n_orgs=1)
    store = StubAlgorithmStore()
    try:
        ours, our_url = register_algorithm_store(admin, store, federation.collaboration_id)
        everyone, everyone_url = register_algorithm_store(admin, store, None)
        theirs, _ = register_algorithm_store(admin, store, other.collaboration_id)
    finally:
        store.close()

    assert client.get(f"/algorithmstore/{ours}").json()["url"] == our_url
    assert client.get(f"/algorithmstore/{everyone}").json()["url"] == everyone_url
    refused = client.get(f"/algorithmstore/{theirs}")
    assert (refused.status_code, refused.json()["msg"]) == (401, "You lack the permission to do that!")
