"""HttpxServerApi against a scripted server on httpx.MockTransport; time from a ManualClock."""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import httpx
import pytest

from v6node.adapters.http.httpx_server_api import BLOB_CHUNK_SIZE, HttpxServerApi
from v6node.adapters.http.payloads import parse_run
from v6node.adapters.memory.manual_clock import ManualClock
from v6node.domain.errors import (
    AuthenticationFailed,
    RunAlreadyFinished,
    ServerError,
    ServerRejected,
    ServerUnavailable,
)
from v6node.domain.model import NodeIdentity, Organization, RequestedDatabase, RunUpdate, StreamedResult
from v6node.domain.status import RunStatus

ROOT = "http://v6.test:7601"
API = f"{ROOT}/api"
API_KEY = "0f1e2d3c-aaaa-bbbb-cccc-123456789abc"
NODE_ID = 42
ORG_ID = 7
COLLAB_ID = 3
T = TypeVar("T")


def jwt(sub: int, exp: float, tag: str) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': sub, 'exp': exp, 'tag': tag})}.c2lnbmF0dXJl"


class RecordingClock(ManualClock):
    """A ManualClock that remembers how long each sleep was meant to be."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await super().sleep(seconds)


async def drive(clock: RecordingClock, call: Awaitable[T]) -> T:
    """Run ``call``, moving the clock over every sleep it starts."""
    task = asyncio.ensure_future(call)
    while not task.done():
        if clock.sleepers:
            await clock.advance(clock.slept[-1])
        else:
            await asyncio.sleep(0)
    return task.result()


Handler = Callable[[httpx.Request], httpx.Response]


class StreamingMockTransport(httpx.MockTransport):
    """A MockTransport that hands the handler a streamed request body unread.

    httpx's own reads the whole body first, which would hide whether an upload is
    streamed; handlers of streamed requests read ``request.stream`` themselves.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = self.handler(request)
        if not isinstance(response, httpx.Response):
            response = await response
        return response


class FakeServer:
    """Routes ``(METHOD, path)`` to handlers, logs in and refreshes like vantage6, records every request."""

    def __init__(self, clock: ManualClock, lifetime: float = 6 * 3600) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], Handler] = {}
        self.issued = 0
        self.refresh_status = 200
        self.route("POST", "/api/token/node", self._login)
        self.route("POST", "/api/token/refresh", self._refresh)
        self.route("GET", f"/api/node/{NODE_ID}", lambda r: self.ok({
            "id": NODE_ID, "name": "node-a", "type": "node",
            "organization": {"id": ORG_ID, "link": f"/api/organization/{ORG_ID}", "methods": ["GET"]},
            "collaboration": {"id": COLLAB_ID, "link": f"/api/collaboration/{COLLAB_ID}", "methods": ["GET"]},
        }))
        self.route("GET", f"/api/organization/{ORG_ID}", lambda r: self.ok({"id": ORG_ID, "name": "org-a", "public_key": ""}))

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    @staticmethod
    def ok(body: Any, status: int = 200) -> httpx.Response:
        return httpx.Response(status, json=body)

    @staticmethod
    def error(status: int, msg: str) -> httpx.Response:
        return httpx.Response(status, json={"msg": msg})

    def tokens(self) -> dict[str, str]:
        self.issued += 1
        exp = self.clock.now().timestamp() + self.lifetime
        return {
            "access_token": jwt(NODE_ID, exp, f"access-{self.issued}"),
            "refresh_token": jwt(NODE_ID, exp + 3600, f"refresh-{self.issued}"),
            "refresh_url": "/api/token/refresh",
            "node_url": f"/api/node/{NODE_ID}",
        }

    def _login(self, request: httpx.Request) -> httpx.Response:
        if json.loads(request.content) != {"api_key": API_KEY}:
            return self.error(401, "Api key is not recognized!")
        return self.ok(self.tokens())

    def _refresh(self, request: httpx.Request) -> httpx.Response:
        if self.refresh_status != 200:
            return self.error(self.refresh_status, "Token has expired")
        return self.ok(self.tokens())

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.routes.get((request.method, request.url.path))
        if handler is None:
            return self.error(404, f"no route {request.method} {request.url.path}")
        return handler(request)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]

    @property
    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]


@pytest.fixture
def clock() -> RecordingClock:
    return RecordingClock()


@pytest.fixture
def server(clock: RecordingClock) -> FakeServer:
    return FakeServer(clock)


def make_api(server: FakeServer, clock: ManualClock, **kwargs: Any) -> HttpxServerApi:
    transport = StreamingMockTransport(server.handle)
    return HttpxServerApi(API, ROOT, kwargs.pop("api_key", API_KEY), clock, transport=transport, **kwargs)


@pytest.fixture
async def api(server: FakeServer, clock: RecordingClock):
    async with make_api(server, clock) as adapter:
        yield adapter


@pytest.fixture
async def logged_in(api: HttpxServerApi, server: FakeServer) -> HttpxServerApi:
    await api.authenticate()
    server.requests.clear()
    return api


def bearer(request: httpx.Request) -> str:
    return request.headers.get("Authorization", "")


def claims(token: str) -> dict[str, Any]:
    payload = token.removeprefix("Bearer ").split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def task_body(task_id: int = 5, **overrides: Any) -> dict[str, Any]:
    body = {
        "id": task_id, "name": f"task-{task_id}", "description": "", "image": "harbor.test/algo:1", "job_id": task_id,
        "status": "pending", "created_at": "2026-01-01T10:00:00.000001", "finished_at": None,
        "collaboration": {"id": COLLAB_ID, "link": f"/api/collaboration/{COLLAB_ID}", "methods": ["GET"]},
        "parent": None, "init_org": {"id": ORG_ID, "link": "/api/organization/7", "methods": ["GET"]},
        "init_user": {"id": 9, "link": "/api/user/9", "methods": ["GET"]}, "algorithm_store": None,
        "study": None, "databases": [], "runs": "/api/run?task_id=5", "children": "/api/task?parent_id=5",
    }
    body.update(overrides)
    return body


def run_body(run_id: int, task: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    body = {
        "id": run_id, "input": "eyJhIjogMX0=", "status": "pending", "assigned_at": "2026-01-01T10:00:00.100000",
        "started_at": None, "finished_at": None, "log": None, "cleanup_at": None, "blob_storage_used": False,
        "organization": {"id": ORG_ID, "link": "/api/organization/7", "methods": ["GET"]},
        "task": task or task_body(), "ports": [], "node": {"id": NODE_ID, "name": "node-a"},
    }
    body.update(overrides)
    return body


# --- login and identity ---------------------------------------------------------------------------
async def test_authenticate_logs_in_and_discovers_who_we_are(api: HttpxServerApi, server: FakeServer, clock: ManualClock) -> None:
    identity = await api.authenticate()

    assert identity == NodeIdentity(
        node_id=NODE_ID, node_name="node-a", organization_id=ORG_ID, organization_name="org-a", collaboration_id=COLLAB_ID
    )
    assert server.paths == ["POST /api/token/node", f"GET /api/node/{NODE_ID}", f"GET /api/organization/{ORG_ID}"]
    login, node, org = server.requests
    assert json.loads(login.content) == {"api_key": API_KEY}
    assert "Authorization" not in login.headers
    assert bearer(node) == bearer(org) == f"Bearer {api.access_token()}"
    assert claims(api.access_token())["tag"] == "access-1"
    assert api.token_expires_at() == pytest.approx(clock.now().timestamp() + 6 * 3600)


async def test_before_authenticate_there_is_no_token_and_calls_are_refused_locally(api: HttpxServerApi, server: FakeServer) -> None:
    assert api.access_token() == ""
    assert api.token_expires_at() == 0.0
    with pytest.raises(ServerRejected) as info:
        await api.get_organization(ORG_ID)
    assert info.value.status == 401
    assert server.requests == []


async def test_unknown_api_key_fails_authentication_at_once(server: FakeServer, clock: RecordingClock) -> None:
    async with make_api(server, clock, api_key="11111111-2222-3333-4444-555555555555") as api:
        with pytest.raises(AuthenticationFailed) as info:
            await api.authenticate()
    message = str(info.value)
    assert "not recognised" in message and ROOT in message
    assert "11111111" not in message
    assert server.paths == ["POST /api/token/node"]
    assert clock.slept == []


async def test_api_key_that_is_not_a_uuid_fails_authentication_with_the_servers_reason(server: FakeServer, clock: RecordingClock) -> None:
    server.route("POST", "/api/token/node", lambda r: server.ok(
        {"msg": "Request body is incorrect", "errors": {"api_key": ["API key is not a valid UUID"]}}, 400
    ))
    async with make_api(server, clock, api_key="not-a-uuid") as api:
        with pytest.raises(AuthenticationFailed, match="API key is not a valid UUID"):
            await api.authenticate()
    assert len(server.requests) == 1


async def test_login_answer_without_a_jwt_is_an_unexpected_answer(server: FakeServer, clock: RecordingClock) -> None:
    server.route("POST", "/api/token/node", lambda r: server.ok({"access_token": "opaque", "refresh_token": "x"}))
    async with make_api(server, clock) as api:
        with pytest.raises(ServerError, match="unexpected answer") as info:
            await api.authenticate()
    assert not info.value.retryable


# --- retries and backoff ------------------------------------------------------------------------------
async def test_5xx_is_retried_with_growing_backoff_until_success(logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock) -> None:
    answers = [server.error(503, "down"), server.error(502, "bad gateway"), server.ok({"id": 8, "name": "org-b"})]
    server.route("GET", "/api/organization/8", lambda r: answers.pop(0))

    org = await drive(clock, logged_in.get_organization(8))

    assert org.name == "org-b"
    assert len(server.sent("GET", "/api/organization/8")) == 3
    assert clock.slept == [0.5, 1.0]
    assert clock.monotonic() == pytest.approx(1.5)


async def test_connection_errors_give_server_unavailable_after_max_attempts(server: FakeServer, clock: RecordingClock) -> None:
    async with make_api(server, clock, max_attempts=5, backoff_max=1.5) as api:
        await api.authenticate()

        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

        server.route("GET", "/api/collaboration/3", refuse)
        with pytest.raises(ServerUnavailable) as info:
            await drive(clock, api.get_collaboration(3))

    assert info.value.retryable
    assert "GET collaboration/3" in str(info.value) and "Connection refused" in str(info.value)
    assert len(server.sent("GET", "/api/collaboration/3")) == 5
    assert clock.slept == [0.5, 1.0, 1.5, 1.5]


async def test_timeouts_are_retried_like_connection_errors(logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock) -> None:
    calls = 0

    def slow_then_ok(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ReadTimeout("timed out", request=request)
        return server.ok({"id": 3, "name": "c", "encrypted": True})

    server.route("GET", "/api/collaboration/3", slow_then_ok)
    collaboration = await drive(clock, logged_in.get_collaboration(3))
    assert collaboration.encrypted is True
    assert clock.slept == [0.5]


async def test_4xx_is_rejected_with_the_servers_message_and_not_retried(logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock) -> None:
    with pytest.raises(ServerRejected) as info:
        await logged_in.get_task(999)
    assert (info.value.status, info.value.method, info.value.path) == (404, "GET", "task/999")
    assert info.value.message == "no route GET /api/task/999"
    assert not info.value.retryable
    assert server.paths == ["GET /api/task/999"]
    assert clock.slept == []


async def test_non_json_success_body_is_server_unavailable(logged_in: HttpxServerApi, server: FakeServer) -> None:
    server.route("GET", "/api/organization/8", lambda r: httpx.Response(200, text="<html>maintenance</html>"))
    with pytest.raises(ServerUnavailable, match="not JSON"):
        await logged_in.get_organization(8)
    assert len(server.sent("GET", "/api/organization/8")) == 1


# --- tokens ---------------------------------------------------------------------------------------------
async def test_expired_token_is_refreshed_once_and_the_request_repeated_once(logged_in: HttpxServerApi, server: FakeServer) -> None:
    first_token = logged_in.access_token()
    server.route("GET", "/api/organization/8", lambda r: (
        server.error(401, "Token has expired") if bearer(r) == f"Bearer {first_token}" else server.ok({"id": 8, "name": "org-b"})
    ))

    org = await logged_in.get_organization(8)

    assert org.name == "org-b"
    assert server.paths == ["GET /api/organization/8", "POST /api/token/refresh", "GET /api/organization/8"]
    refresh = server.requests[1]
    assert str(refresh.url) == f"{ROOT}/api/token/refresh"
    assert claims(bearer(refresh))["tag"] == "refresh-1"
    assert logged_in.access_token() != first_token
    assert bearer(server.requests[2]) == f"Bearer {logged_in.access_token()}"


async def test_a_token_that_stays_expired_is_refreshed_only_once(logged_in: HttpxServerApi, server: FakeServer) -> None:
    server.route("GET", "/api/organization/8", lambda r: server.error(401, "Token has expired"))
    with pytest.raises(ServerRejected) as info:
        await logged_in.get_organization(8)
    assert info.value.status == 401
    assert server.paths.count("POST /api/token/refresh") == 1
    assert server.paths.count("GET /api/organization/8") == 2


@pytest.mark.parametrize(("status", "msg"), [(401, "This is not your algorithm run to PATCH!"), (400, "bad"), (404, "gone")])
async def test_other_error_answers_do_not_refresh(logged_in: HttpxServerApi, server: FakeServer, status: int, msg: str) -> None:
    server.route("PATCH", "/api/run/4", lambda r: server.error(status, msg))
    with pytest.raises(ServerRejected) as info:
        await logged_in.update_run(4, RunUpdate(status=RunStatus.ACTIVE))
    assert (info.value.status, info.value.message) == (status, msg)
    assert server.paths == ["PATCH /api/run/4"]


async def test_token_close_to_expiry_is_refreshed_before_the_request(logged_in: HttpxServerApi, server: FakeServer, clock: ManualClock) -> None:
    before = logged_in.access_token()
    await clock.advance(6 * 3600 - 59)

    await logged_in.get_organization(ORG_ID)

    assert server.paths == ["POST /api/token/refresh", f"GET /api/organization/{ORG_ID}"]
    assert logged_in.access_token() != before
    assert bearer(server.requests[1]) == f"Bearer {logged_in.access_token()}"
    assert logged_in.token_expires_at() == pytest.approx(clock.now().timestamp() + 6 * 3600)


async def test_token_with_time_left_is_not_refreshed(logged_in: HttpxServerApi, server: FakeServer, clock: ManualClock) -> None:
    await clock.advance(6 * 3600 - 61)
    await logged_in.get_organization(ORG_ID)
    assert server.paths == [f"GET /api/organization/{ORG_ID}"]


async def test_concurrent_requests_share_one_refresh(logged_in: HttpxServerApi, server: FakeServer, clock: ManualClock) -> None:
    async def refresh_that_yields(request: httpx.Request) -> httpx.Response:
        for _ in range(20):  # stay in flight while the other requests reach the refresh
            await asyncio.sleep(0)
        return server.ok(server.tokens())

    server.route("POST", "/api/token/refresh", refresh_that_yields)
    await clock.advance(6 * 3600)

    await asyncio.gather(*(logged_in.get_organization(ORG_ID) for _ in range(5)))

    assert server.paths.count("POST /api/token/refresh") == 1
    assert server.paths.count(f"GET /api/organization/{ORG_ID}") == 5
    assert {bearer(r) for r in server.sent("GET", f"/api/organization/{ORG_ID}")} == {f"Bearer {logged_in.access_token()}"}


async def test_refused_refresh_falls_back_to_logging_in_with_the_api_key(logged_in: HttpxServerApi, server: FakeServer, clock: ManualClock) -> None:
    server.refresh_status = 401
    await clock.advance(6 * 3600)

    await logged_in.get_organization(ORG_ID)

    assert server.paths == ["POST /api/token/refresh", "POST /api/token/node", f"GET /api/organization/{ORG_ID}"]
    assert logged_in.token_expires_at() > clock.now().timestamp()


async def test_a_refused_refresh_token_is_renewed_by_logging_in_again(logged_in: HttpxServerApi, server: FakeServer) -> None:
    server.refresh_status = 422
    assert await logged_in.renew_token() is True
    assert server.paths == ["POST /api/token/refresh", "POST /api/token/node"]


async def test_a_refused_refresh_token_and_api_key_are_authentication_failed(server: FakeServer, clock: ManualClock) -> None:
    async with make_api(server, clock) as api:
        await api.authenticate()
        server.refresh_status = 422
        server.route("POST", "/api/token/node", lambda r: server.error(401, "Api key is not recognized!"))
        with pytest.raises(AuthenticationFailed, match="API key was not recognised"):
            await api.renew_token()


async def test_renewing_replaces_both_tokens(logged_in: HttpxServerApi, server: FakeServer, clock: ManualClock) -> None:
    before = logged_in.access_token()
    await clock.advance(100)
    assert await logged_in.renew_token() is False
    assert logged_in.access_token() != before
    assert logged_in.token_expires_at() == pytest.approx(clock.now().timestamp() + 6 * 3600)
    await logged_in.renew_token()
    # The second refresh must present the refresh token that the first one returned.
    assert claims(bearer(server.requests[-1]))["tag"] == "refresh-2"


async def test_tokens_and_api_key_never_reach_the_log(server: FakeServer, clock: RecordingClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="v6node.http")
    server.route("GET", "/api/organization/8", lambda r: server.error(401, "Token has expired"))
    async with make_api(server, clock) as api:
        await api.authenticate()
        with pytest.raises(ServerRejected):
            await api.get_organization(8)
    assert "v6node.http" in {record.name for record in caplog.records}
    secrets = [API_KEY] + [bearer(r).removeprefix("Bearer ") for r in server.requests if bearer(r)]
    for secret in secrets:
        assert secret not in caplog.text


# --- runs ----------------------------------------------------------------------------------------------
async def test_open_runs_are_read_over_every_page(logged_in: HttpxServerApi, server: FakeServer) -> None:
    pages = {"1": [30, 29], "2": [28, 27], "3": [26]}

    def run_list(request: httpx.Request) -> httpx.Response:
        page = request.url.params.get("page", "1")
        links = {"first": "/api/run?page=1", "self": f"/api/run?page={page}", "last": "/api/run?page=3"}
        if page != "3":
            links["next"] = f"/api/run?page={int(page) + 1}"
        return server.ok({"data": [run_body(i) for i in pages[page]], "links": links})

    server.route("GET", "/api/run", run_list)

    runs = await logged_in.list_open_runs(task_id=5)

    assert [run.id for run in runs] == [30, 29, 28, 27, 26]
    sent = server.sent("GET", "/api/run")
    assert [r.url.params.get("page") for r in sent] == [None, "2", "3"]
    for request in sent:
        assert request.url.params["state"] == "open"
        assert request.url.params["node_id"] == str(NODE_ID)
        assert request.url.params["include"] == "task"
        assert request.url.params["task_id"] == "5"


async def test_open_runs_without_task_filter_and_runs_seen_twice_once(logged_in: HttpxServerApi, server: FakeServer) -> None:
    # A run created while paging pushes the last run of page 1 onto page 2.
    pages = {"1": ([12, 11], True), "2": ([11, 10], False)}

    def run_list(request: httpx.Request) -> httpx.Response:
        ids, more = pages[request.url.params.get("page", "1")]
        return server.ok({"data": [run_body(i) for i in ids], "links": {"next": "/api/run?page=2"} if more else {}})

    server.route("GET", "/api/run", run_list)
    runs = await logged_in.list_open_runs()
    assert [run.id for run in runs] == [12, 11, 10]
    assert "task_id" not in server.requests[0].url.params


async def test_a_server_announcing_pages_without_end_is_refused_after_max_pages(
    server: FakeServer, clock: RecordingClock
) -> None:
    def endless(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        return server.ok({"data": [run_body(1000 + page)], "links": {"next": f"/api/run?page={page + 1}"}})

    server.route("GET", "/api/run", endless)
    async with make_api(server, clock, max_pages=5) as api:
        await api.authenticate()
        with pytest.raises(ServerError, match="more than 5 pages; not reading further"):
            await api.list_open_runs()
    assert len(server.sent("GET", "/api/run")) == 5


async def test_run_parsing_maps_the_server_shape() -> None:
    body = run_body(
        11,
        task=task_body(
            6,
            job_id=5,
            parent={"id": 5, "link": "/api/task/5", "methods": ["GET"]},
            algorithm_store={"id": 2, "link": "/api/algorithmstore/2", "methods": ["GET"]},
            init_user=None,
            databases=[
                {"label": "default", "parameters": '{"query": "select 1", "sheet_name": "s"}'},
                {"label": "no-params"},
                {"label": "null-params", "parameters": None},
                {"label": "broken", "parameters": "{not json"},
                {"label": "list", "parameters": "[1, 2]"},
            ],
        ),
        status="active",
        started_at="2026-01-01T10:00:01.500000",
        finished_at="2026-01-01T11:00:00.000001+02:00",
    )
    del body["blob_storage_used"]

    run = parse_run(body)

    assert run.id == 11 and run.input == "eyJhIjogMX0=" and run.status is RunStatus.ACTIVE
    assert run.organization_id == ORG_ID
    assert run.blob_storage_used is False
    assert run.started_at == datetime(2026, 1, 1, 10, 0, 1, 500000, tzinfo=timezone.utc)
    assert run.finished_at == datetime(2026, 1, 1, 9, 0, 0, 1, tzinfo=timezone.utc)
    task = run.task
    assert (task.id, task.image, task.collaboration_id, task.name) == (6, "harbor.test/algo:1", COLLAB_ID, "task-6")
    assert (task.job_id, task.parent_id, task.init_org_id, task.init_user_id, task.store_id) == (5, 5, ORG_ID, None, 2)
    assert task.databases == (
        RequestedDatabase("default", {"query": "select 1", "sheet_name": "s"}),
        RequestedDatabase("no-params", {}),
        RequestedDatabase("null-params", {}),
        RequestedDatabase("broken", {}),
        RequestedDatabase("list", {}),
    )
    assert [db.parameters for db in task.databases] == [{"query": "select 1", "sheet_name": "s"}, {}, {}, {}, {}]


async def test_run_without_parent_and_with_blob_storage() -> None:
    run = parse_run(run_body(3, blob_storage_used=True, input=None))
    assert run.task.parent_id is None and run.task.store_id is None
    assert run.blob_storage_used is True
    assert run.input == ""
    assert run.started_at is None and run.finished_at is None


async def test_get_run_asks_for_the_task_included(logged_in: HttpxServerApi, server: FakeServer) -> None:
    server.route("GET", "/api/run/11", lambda r: server.ok(run_body(11)))
    run = await logged_in.get_run(11)
    assert run.task.id == 5
    assert server.requests[0].url.params["include"] == "task"


async def test_a_run_in_an_unexpected_shape_is_a_server_error(logged_in: HttpxServerApi, server: FakeServer) -> None:
    server.route("GET", "/api/run/11", lambda r: server.ok({"id": 11, "task": {"id": 5, "link": "/api/task/5"}}))
    with pytest.raises(ServerError, match="GET run/11: unexpected answer"):
        await logged_in.get_run(11)


UTC = timezone.utc


@pytest.mark.parametrize(
    ("update", "body"),
    [
        (RunUpdate.started(datetime(2026, 1, 1, 12, 0, 0, 0, tzinfo=UTC)), {"started_at": "2026-01-01T12:00:00.000000+00:00"}),
        (RunUpdate.status_change(RunStatus.ACTIVE), {"status": "active"}),
        (
            RunUpdate.finished(RunStatus.KILLED, datetime(2026, 1, 1, 14, 30, 5, 17, tzinfo=timezone(timedelta(hours=2))), "log\n"),
            {"status": "killed by user", "finished_at": "2026-01-01T12:30:05.000017+00:00", "log": "log\n", "result": ""},
        ),
        (RunUpdate(status=RunStatus.NON_EXISTING_IMAGE, log=""), {"status": "non-existing Docker image", "log": ""}),
        (RunUpdate(), {}),
    ],
)
async def test_update_run_sends_exactly_the_fields_it_carries(
    logged_in: HttpxServerApi, server: FakeServer, update: RunUpdate, body: dict[str, str]
) -> None:
    server.route("PATCH", "/api/run/4", lambda r: server.ok({"id": 4}))
    await logged_in.update_run(4, update)
    (request,) = server.requests
    assert json.loads(request.content) == body


async def test_patch_of_a_finished_run_is_run_already_finished(logged_in: HttpxServerApi, server: FakeServer) -> None:
    server.route("PATCH", "/api/run/4", lambda r: server.error(400, "Cannot update an already finished algorithm run!"))
    with pytest.raises(RunAlreadyFinished) as info:
        await logged_in.update_run(4, RunUpdate.status_change(RunStatus.KILLED))
    assert (info.value.status, info.value.method, info.value.path) == (400, "PATCH", "run/4")


async def test_other_400_on_patch_stays_server_rejected(logged_in: HttpxServerApi, server: FakeServer) -> None:
    server.route("PATCH", "/api/run/4", lambda r: server.ok(
        {"msg": "Request body is incorrect", "errors": {"status": ["Must be one of: pending"]}}, 400
    ))
    with pytest.raises(ServerRejected) as info:
        await logged_in.update_run(4, RunUpdate.status_change(RunStatus.ACTIVE))
    assert not isinstance(info.value, RunAlreadyFinished)
    assert "Must be one of" in info.value.message


def streamed(text: bytes, pieces: int = 3) -> tuple[StreamedResult, list[int]]:
    """A streamed result of ``text`` and the list that counts its iterations."""
    started: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        started.append(1)
        step = max(1, len(text) // pieces)
        for start in range(0, len(text), step):
            yield text[start : start + step]

    return StreamedResult(length=len(text), chunks=chunks), started


def read_patch(server: FakeServer, bodies: list[bytes], status: int = 200) -> None:
    async def patch(request: httpx.Request) -> httpx.Response:
        bodies.append(b"".join([chunk async for chunk in request.stream]))
        return server.ok({"id": 4}, status) if status < 400 else server.error(status, "down for maintenance")

    server.route("PATCH", "/api/run/4", patch)


async def test_a_streamed_result_goes_out_as_json_with_its_exact_length(logged_in: HttpxServerApi, server: FakeServer) -> None:
    bodies: list[bytes] = []
    read_patch(server, bodies)
    result, _ = streamed(b"a2V5$aXY=$" + base64.b64encode(os.urandom(3000)))
    at = datetime(2026, 1, 1, 12, 0, 0, 1, tzinfo=timezone.utc)

    await logged_in.update_run(4, RunUpdate.finished(RunStatus.COMPLETED, at, 'log "quoted"\n', result))

    (request,) = server.requests
    assert "Transfer-Encoding" not in request.headers
    assert int(request.headers["Content-Length"]) == len(bodies[0])
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(bodies[0]) == {
        "status": "completed", "finished_at": "2026-01-01T12:00:00.000001+00:00", "log": 'log "quoted"\n',
        "result": (b"".join([c async for c in result.chunks()])).decode(),
    }


async def test_a_streamed_result_is_streamed_again_when_the_server_was_away(
    logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock
) -> None:
    bodies: list[bytes] = []
    read_patch(server, bodies, status=503)
    result, started = streamed(b"cmVzdWx0")
    update = RunUpdate.finished(RunStatus.COMPLETED, datetime.now(timezone.utc), "", result)

    with pytest.raises(ServerUnavailable):
        await drive(clock, logged_in.update_run(4, update))

    assert len(bodies) == len(started) > 1
    assert all(json.loads(body)["result"] == "cmVzdWx0" for body in bodies)


@pytest.mark.parametrize(
    ("text", "length", "problem"),
    [
        (b'abc"}', 5, "outside base64"),
        (b"cmVz", 8, "ended after 4 of the 8 bytes"),
        (b"cmVzdWx0", 4, "longer than the 4 bytes"),
    ],
)
async def test_a_streamed_result_that_is_not_what_it_announced_is_never_sent_whole(
    logged_in: HttpxServerApi, server: FakeServer, text: bytes, length: int, problem: str
) -> None:
    bodies: list[bytes] = []
    read_patch(server, bodies)
    result, _ = streamed(text, pieces=1)
    update = RunUpdate.finished(RunStatus.COMPLETED, datetime.now(timezone.utc), "", StreamedResult(length, result.chunks))

    with pytest.raises(ValueError, match=problem):
        await logged_in.update_run(4, update)


# --- the rest ----------------------------------------------------------------------------------------
async def test_container_token(logged_in: HttpxServerApi, server: FakeServer) -> None:
    server.route("POST", "/api/token/container", lambda r: (
        server.ok({"container_token": "ct"}) if json.loads(r.content) == {"task_id": 5, "image": "harbor.test/algo:1"}
        else server.error(401, "Image and task do no match")
    ))
    assert await logged_in.request_container_token(5, "harbor.test/algo:1") == "ct"
    with pytest.raises(ServerRejected) as info:
        await logged_in.request_container_token(5, "other:1")
    assert info.value.status == 401


async def test_organization_and_collaboration(logged_in: HttpxServerApi, server: FakeServer) -> None:
    server.route("GET", "/api/organization/8", lambda r: server.ok({"id": 8, "name": "org-b", "public_key": None}))
    server.route("GET", "/api/collaboration/3", lambda r: server.ok({"id": 3, "name": "c", "encrypted": False}))
    org = await logged_in.get_organization(8)
    collaboration = await logged_in.get_collaboration(3)
    assert (org.id, org.name, org.public_key) == (8, "org-b", "")
    assert (collaboration.id, collaboration.name, collaboration.encrypted) == (3, "c", False)


async def test_api_path_may_be_empty_and_refresh_url_is_joined_to_the_server_root(server: FakeServer, clock: ManualClock) -> None:
    # Behind a reverse proxy that strips /api the node uses api_path "" (spec §3.1).
    for method, path in [("POST", "/api/token/node"), ("GET", f"/api/node/{NODE_ID}"), ("GET", f"/api/organization/{ORG_ID}")]:
        server.route(method, path.removeprefix("/api"), server.routes[(method, path)])
    async with HttpxServerApi(ROOT + "/", ROOT + "/", API_KEY, clock, transport=httpx.MockTransport(server.handle)) as api:
        await api.authenticate()
        await api.renew_token()
    assert [str(r.url) for r in server.requests] == [
        f"{ROOT}/token/node", f"{ROOT}/node/{NODE_ID}", f"{ROOT}/organization/{ORG_ID}", f"{ROOT}/api/token/refresh"
    ]


async def test_login_waits_longer_than_other_calls(server: FakeServer, clock: ManualClock) -> None:
    # The server bcrypt-checks the key against every node it has: logins can be slow.
    async with make_api(server, clock, timeout=7.0, login_timeout=120.0) as api:
        await api.authenticate()
    login, node, _ = server.requests
    assert login.extensions["timeout"]["read"] == 120.0
    assert node.extensions["timeout"]["read"] == 7.0


async def test_the_context_manager_closes_the_client_and_its_transport(server: FakeServer, clock: ManualClock) -> None:
    class ClosingTransport(httpx.MockTransport):
        closed = 0

        async def aclose(self) -> None:
            self.closed += 1

    transport = ClosingTransport(server.handle)
    async with HttpxServerApi(API, ROOT, API_KEY, clock, transport=transport) as api:
        await api.authenticate()
        assert transport.closed == 0
    assert transport.closed == 1
    await api.aclose()  # a second close is a no-op
    assert transport.closed == 1


# --- organizations and algorithm stores ------------------------------------------------------------------
def org_body(org_id: int, name: str, public_key: str = "") -> dict[str, Any]:
    return {"id": org_id, "name": name, "public_key": public_key, "domain": "", "country": ""}


async def test_public_key_is_patched_onto_the_organization(logged_in: HttpxServerApi, server: FakeServer) -> None:
    server.route("PATCH", f"/api/organization/{ORG_ID}", lambda r: server.ok(org_body(ORG_ID, "org-a", "UEVN")))
    await logged_in.set_organization_public_key(ORG_ID, "UEVN")
    (request,) = server.requests
    assert json.loads(request.content) == {"public_key": "UEVN"}
    assert bearer(request) == f"Bearer {logged_in.access_token()}"


async def test_public_key_of_another_organization_is_rejected(logged_in: HttpxServerApi, server: FakeServer) -> None:
    server.route("PATCH", "/api/organization/8", lambda r: server.error(401, "You lack the permission to do that!"))
    with pytest.raises(ServerRejected) as info:
        await logged_in.set_organization_public_key(8, "UEVN")
    assert (info.value.status, info.value.method, info.value.path) == (401, "PATCH", "organization/8")


async def test_organizations_are_found_by_exact_name_over_every_page(logged_in: HttpxServerApi, server: FakeServer) -> None:
    # The server matches with SQL LIKE: other case and "_" wildcards come back too.
    pages = {
        "1": [org_body(3, "Org_A"), org_body(4, "ORG_A")],
        "2": [org_body(4, "ORG_A"), org_body(5, "OrgXA"), org_body(6, "Org_A")],
        "3": [org_body(9, "org_a")],
    }

    def organizations(request: httpx.Request) -> httpx.Response:
        page = request.url.params.get("page", "1")
        links = {"next": f"/api/organization?page={int(page) + 1}"} if page != "3" else {}
        return server.ok({"data": pages[page], "links": links})

    server.route("GET", "/api/organization", organizations)

    found = await logged_in.find_organizations("Org_A")

    assert found == [Organization(3, "Org_A"), Organization(6, "Org_A")]
    sent = server.sent("GET", "/api/organization")
    assert [r.url.params.get("page") for r in sent] == [None, "2", "3"]
    assert {r.url.params["name"] for r in sent} == {"Org_A"}


async def test_no_organization_of_that_name_is_an_empty_list(logged_in: HttpxServerApi, server: FakeServer) -> None:
    server.route("GET", "/api/organization", lambda r: server.ok({"data": [], "links": {"first": "/api/organization?page=1"}}))
    assert await logged_in.find_organizations("nobody") == []
    assert len(server.requests) == 1


async def test_algorithm_store_url(logged_in: HttpxServerApi, server: FakeServer) -> None:
    store = {"id": 2, "name": "store", "url": "https://store.test/api", "collaborations": "/api/collaboration?algorithm_store_id=2"}
    server.route("GET", "/api/algorithmstore/2", lambda r: server.ok(store))
    server.route("GET", "/api/algorithmstore/3", lambda r: server.ok({"id": 3, "name": "broken"}))

    assert await logged_in.get_algorithm_store_url(2) == "https://store.test/api"
    with pytest.raises(ServerRejected) as info:
        await logged_in.get_algorithm_store_url(4)
    assert (info.value.status, info.value.path) == (404, "algorithmstore/4")
    with pytest.raises(ServerError, match="GET algorithmstore/3: unexpected answer"):
        await logged_in.get_algorithm_store_url(3)


# --- blob store: status ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "enabled"), [({"blob_store_enabled": True}, True), ({"blob_store_enabled": False}, False), ({}, False)])
async def test_blob_store_status_is_read_from_the_server(
    logged_in: HttpxServerApi, server: FakeServer, body: dict[str, Any], enabled: bool
) -> None:
    server.route("GET", "/api/blobstream/status", lambda r: server.ok(body))
    assert await logged_in.blob_store_enabled() is enabled
    (request,) = server.requests
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert bearer(request) == f"Bearer {logged_in.access_token()}"


@pytest.mark.parametrize("status", [404, 400, 403, 501])
async def test_blob_store_is_disabled_when_the_server_refuses_to_say(
    logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock, status: int
) -> None:
    # Servers older than 4.13 have no such endpoint: 404.
    server.route("GET", "/api/blobstream/status", lambda r: server.error(status, "no"))
    assert await logged_in.blob_store_enabled() is False
    assert len(server.requests) == 1
    assert clock.slept == []


async def test_blob_store_status_on_an_unreachable_server_is_unavailable_not_disabled(
    logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    server.route("GET", "/api/blobstream/status", refuse)
    with pytest.raises(ServerUnavailable, match="Connection refused"):
        await drive(clock, logged_in.blob_store_enabled())
    assert len(server.requests) == 5

    server.route("GET", "/api/blobstream/status", lambda r: server.error(503, "maintenance"))
    with pytest.raises(ServerUnavailable, match="503"):
        await drive(clock, logged_in.blob_store_enabled())


async def test_blob_store_status_before_login_is_refused_locally(api: HttpxServerApi, server: FakeServer) -> None:
    with pytest.raises(ServerRejected) as info:
        await api.blob_store_enabled()
    assert info.value.status == 401
    assert server.requests == []


# --- blob store: download ---------------------------------------------------------------------------------------
class ServerStream(httpx.AsyncByteStream):
    """A response body sent in pieces; counts what it produced and whether it was closed."""

    def __init__(self, data: bytes, piece: int = 64 * 1024, fail_after: int | None = None) -> None:
        self.data = data
        self.piece = piece
        self.fail_after = fail_after
        self.produced = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), self.piece):
            if self.fail_after is not None and start >= self.fail_after:
                raise httpx.ReadError("connection reset by peer")
            self.produced += 1
            yield self.data[start : start + self.piece]

    async def aclose(self) -> None:
        self.closed = True


BIG = os.urandom(5 * BLOB_CHUNK_SIZE + 7)
BLOB_ID = "0b7c6d3e-5f1a-4c2b-9e8d-7a6b5c4d3e2f"


def serve_blob(server: FakeServer, stream: ServerStream) -> None:
    server.route("GET", f"/api/blobstream/{BLOB_ID}", lambda r: httpx.Response(
        200, stream=stream, headers={"Content-Type": "application/octet-stream"}
    ))


async def collect(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in chunks]


async def test_a_blob_is_downloaded_in_pieces_of_a_mebibyte_as_it_arrives(logged_in: HttpxServerApi, server: FakeServer) -> None:
    stream = ServerStream(BIG)
    serve_blob(server, stream)
    chunks: list[bytes] = []
    produced_at_first_chunk = None

    async for chunk in logged_in.download_blob(BLOB_ID):
        if not chunks:
            produced_at_first_chunk = stream.produced
        chunks.append(chunk)

    assert b"".join(chunks) == BIG
    assert [len(c) for c in chunks] == [BLOB_CHUNK_SIZE] * 5 + [7]
    # The first mebibyte was handed on while most of the body was still unsent.
    total_pieces = -(-len(BIG) // stream.piece)
    assert produced_at_first_chunk is not None and produced_at_first_chunk < total_pieces // 2
    assert stream.closed
    (request,) = server.requests
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert bearer(request) == f"Bearer {logged_in.access_token()}"


async def test_a_download_waits_long_for_the_body(server: FakeServer, clock: RecordingClock) -> None:
    serve_blob(server, ServerStream(b"data"))
    async with make_api(server, clock, timeout=7.0, blob_timeout=300.0) as api:
        await api.authenticate()
        assert await collect(api.download_blob(BLOB_ID)) == [b"data"]
    timeout = server.sent("GET", f"/api/blobstream/{BLOB_ID}")[0].extensions["timeout"]
    assert (timeout["connect"], timeout["read"]) == (7.0, 300.0)


async def test_an_unknown_blob_is_rejected_with_the_servers_message(logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock) -> None:
    missing = "11111111-2222-3333-4444-555555555555"
    server.route("GET", f"/api/blobstream/{missing}", lambda r: server.error(404, f"No run found with input or result id={missing}"))
    with pytest.raises(ServerRejected) as info:
        await collect(logged_in.download_blob(missing))
    assert (info.value.status, info.value.message) == (404, f"No run found with input or result id={missing}")
    assert len(server.requests) == 1 and clock.slept == []


async def test_a_server_without_blob_store_is_not_asked_again(logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock) -> None:
    server.route("GET", f"/api/blobstream/{BLOB_ID}", lambda r: server.error(501, "The large result store is not set to blob storage"))
    with pytest.raises(ServerRejected) as info:
        await collect(logged_in.download_blob(BLOB_ID))
    assert info.value.status == 501 and not info.value.retryable
    assert len(server.requests) == 1 and clock.slept == []


async def test_a_download_is_retried_until_its_body_starts(logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock) -> None:
    stream = ServerStream(BIG)
    answers: list[Callable[[httpx.Request], httpx.Response]] = [
        lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused", request=r)),
        lambda r: server.error(503, "busy"),
        lambda r: httpx.Response(200, stream=stream),
    ]
    server.route("GET", f"/api/blobstream/{BLOB_ID}", lambda r: answers.pop(0)(r))

    chunks = await drive(clock, collect(logged_in.download_blob(BLOB_ID)))

    assert b"".join(chunks) == BIG
    assert len(server.requests) == 3
    assert clock.slept == [0.5, 1.0]


async def test_a_download_that_breaks_off_is_unavailable_at_once(logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock) -> None:
    stream = ServerStream(BIG, fail_after=BLOB_CHUNK_SIZE + 10)
    serve_blob(server, stream)
    received: list[bytes] = []

    with pytest.raises(ServerUnavailable, match="broke off after 1048576 bytes") as info:
        async for chunk in logged_in.download_blob(BLOB_ID):
            received.append(chunk)

    assert info.value.retryable
    assert received == [BIG[:BLOB_CHUNK_SIZE]]
    assert len(server.requests) == 1 and clock.slept == []
    assert stream.closed


async def test_a_download_given_up_early_closes_the_response(logged_in: HttpxServerApi, server: FakeServer) -> None:
    stream = ServerStream(BIG)
    serve_blob(server, stream)
    async with aclosing(logged_in.download_blob(BLOB_ID)) as chunks:
        first = await anext(chunks)
    assert first == BIG[:BLOB_CHUNK_SIZE]
    assert stream.closed
    assert stream.produced < -(-len(BIG) // stream.piece)


async def test_a_download_with_an_expired_token_is_renewed_and_repeated(logged_in: HttpxServerApi, server: FakeServer) -> None:
    first_token = logged_in.access_token()
    server.route("GET", f"/api/blobstream/{BLOB_ID}", lambda r: (
        server.error(401, "Token has expired") if bearer(r) == f"Bearer {first_token}" else httpx.Response(200, stream=ServerStream(b"blob"))
    ))
    assert await collect(logged_in.download_blob(BLOB_ID)) == [b"blob"]
    assert server.paths == [f"GET /api/blobstream/{BLOB_ID}", "POST /api/token/refresh", f"GET /api/blobstream/{BLOB_ID}"]


# --- blob store: upload ------------------------------------------------------------------------------------------
class Producer:
    """The bytes to upload, made one chunk at a time; logs when each is made."""

    def __init__(self, chunks: list[bytes], events: list[str]) -> None:
        self.chunks = chunks
        self.events = events
        self.made = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.made += 1
            self.events.append(f"made {self.made}")
            yield chunk


def receive_upload(server: FakeServer, events: list[str], answer: Callable[[bytes], httpx.Response] | None = None) -> list[bytes]:
    """Route POST /blobstream to a handler that reads the body piece by piece; returns the bodies received."""
    bodies: list[bytes] = []

    async def upload(request: httpx.Request) -> httpx.Response:
        pieces = []
        async for piece in request.stream:
            events.append(f"received {len(piece)}")
            pieces.append(piece)
        bodies.append(b"".join(pieces))
        if answer is not None:
            return answer(bodies[-1])
        return server.ok({"uuid": BLOB_ID}, 201)

    server.route("POST", "/api/blobstream", upload)
    return bodies


async def test_an_upload_streams_the_chunks_as_they_are_made(logged_in: HttpxServerApi, server: FakeServer) -> None:
    events: list[str] = []
    bodies = receive_upload(server, events)
    chunks = [os.urandom(BLOB_CHUNK_SIZE) for _ in range(3)] + [b"", b"tail"]

    blob_id = await logged_in.upload_blob(Producer(chunks, events))

    assert blob_id == BLOB_ID
    assert bodies == [b"".join(chunks)]
    # Each chunk went out before the next one was made: never more than one in memory.
    assert events == [
        "made 1", f"received {BLOB_CHUNK_SIZE}", "made 2", f"received {BLOB_CHUNK_SIZE}",
        "made 3", f"received {BLOB_CHUNK_SIZE}", "made 4", "made 5", "received 4",
    ]
    (request,) = server.requests
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert request.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in request.headers
    assert bearer(request) == f"Bearer {logged_in.access_token()}"


async def test_an_upload_waits_long_for_the_server(server: FakeServer, clock: RecordingClock) -> None:
    receive_upload(server, [])
    async with make_api(server, clock, timeout=7.0, blob_timeout=300.0) as api:
        await api.authenticate()
        await api.upload_blob(Producer([b"x"], []))
    timeout = server.sent("POST", "/api/blobstream")[0].extensions["timeout"]
    assert (timeout["connect"], timeout["write"], timeout["read"]) == (7.0, 300.0, 300.0)


async def test_an_upload_is_retried_while_no_byte_was_taken(logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock) -> None:
    events: list[str] = []
    bodies = receive_upload(server, events)
    upload = server.routes[("POST", "/api/blobstream")]
    refusals = 2

    def refuse_twice(request: httpx.Request) -> Any:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return upload(request)

    server.route("POST", "/api/blobstream", refuse_twice)
    producer = Producer([b"one", b"two"], events)

    assert await drive(clock, logged_in.upload_blob(producer)) == BLOB_ID

    assert bodies == [b"onetwo"]
    assert producer.made == 2
    assert clock.slept == [0.5, 1.0]


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda body: FakeServer.error(503, "Error uploading result!"), id="5xx-after-the-body"),
        pytest.param(lambda body: FakeServer.error(500, "Error uploading result!"), id="500-after-the-body"),
    ],
)
async def test_an_upload_is_not_repeated_once_the_body_was_sent(
    logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock, answer: Callable[[bytes], httpx.Response]
) -> None:
    receive_upload(server, [], answer)
    with pytest.raises(ServerUnavailable, match="cannot be sent again") as info:
        await logged_in.upload_blob(Producer([b"one", b"two"], []))
    assert info.value.retryable
    assert "Error uploading result!" in str(info.value)
    assert len(server.requests) == 1 and clock.slept == []


async def test_an_upload_that_loses_the_connection_midway_is_unavailable_at_once(
    logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock
) -> None:
    async def drop(request: httpx.Request) -> httpx.Response:
        async for _ in request.stream:
            raise httpx.WriteError("broken pipe", request=request)
        raise AssertionError("the body was empty")

    server.route("POST", "/api/blobstream", drop)
    producer = Producer([b"one", b"two", b"three"], [])

    with pytest.raises(ServerUnavailable, match="broken pipe"):
        await logged_in.upload_blob(producer)

    assert producer.made == 1
    assert len(server.requests) == 1 and clock.slept == []


async def test_an_upload_with_an_expired_token_renews_it_and_asks_to_upload_again(
    logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock
) -> None:
    before = logged_in.access_token()
    receive_upload(server, [], lambda body: FakeServer.error(401, "Token has expired"))

    with pytest.raises(ServerUnavailable, match="expired while the body was sent"):
        await logged_in.upload_blob(Producer([b"one"], []))

    assert server.paths == ["POST /api/blobstream", "POST /api/token/refresh"]
    assert logged_in.access_token() != before


async def test_an_upload_with_a_token_about_to_expire_refreshes_first(
    logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock
) -> None:
    receive_upload(server, [])
    await clock.advance(6 * 3600 - 30)
    await logged_in.upload_blob(Producer([b"one"], []))
    assert server.paths == ["POST /api/token/refresh", "POST /api/blobstream"]
    assert bearer(server.requests[1]) == f"Bearer {logged_in.access_token()}"


async def test_an_upload_to_a_server_without_blob_store_is_rejected(
    logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock
) -> None:
    message = "The large result store is not set to blob storage, result streaming is not available."
    server.route("POST", "/api/blobstream", lambda r: server.error(501, message))
    with pytest.raises(ServerRejected) as info:
        await logged_in.upload_blob(Producer([b"one"], []))
    assert (info.value.status, info.value.message) == (501, message)
    assert len(server.requests) == 1 and clock.slept == []


async def test_an_upload_answer_without_a_uuid_is_a_server_error(logged_in: HttpxServerApi, server: FakeServer) -> None:
    receive_upload(server, [], lambda body: FakeServer.ok({"uuid": "not-a-uuid"}, 201))
    with pytest.raises(ServerError, match="POST blobstream: unexpected answer"):
        await logged_in.upload_blob(Producer([b"one"], []))


async def test_an_error_while_making_the_chunks_reaches_the_caller_unchanged(logged_in: HttpxServerApi, server: FakeServer) -> None:
    receive_upload(server, [])

    async def failing() -> AsyncIterator[bytes]:
        yield b"one"
        raise ValueError("cannot encrypt")

    with pytest.raises(ValueError, match="cannot encrypt"):
        await logged_in.upload_blob(failing())


async def test_its_own_retries_are_quiet_so_one_layer_tells_the_operator(
    logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock, caplog
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    server.route("GET", "/api/task/5", refuse)
    caplog.set_level(logging.DEBUG, logger="v6node")

    with pytest.raises(ServerUnavailable):
        await drive(clock, logged_in.get_task(5))

    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 4 and {r.levelno for r in retries} == {logging.DEBUG}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
