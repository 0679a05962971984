"""The proxy keeps the server facts it needs to encrypt a subtask's inputs (public keys, the
blob store setting) for FACT_TTL seconds, as the run path does, also when they passed by as
the algorithm's own requests (issue 15: the encrypted POST /task cost 1 + N extra round trips)."""
from __future__ import annotations

import httpx

from v6node.adapters.memory.manual_clock import ManualClock
from v6node.app.cache import FACT_TTL
from tests.unit.test_starlette_proxy import (  # noqa: F401 - fixtures
    FakeServer,
    XorCryptor,
    client_of,
    clock,
    reply,
    server,
    start_proxy,
    subtask,
)

LOOKUPS = [("GET", "blobstream/status"), ("GET", "organization/1"), ("GET", "organization/2")]


def _serve(server: FakeServer) -> None:
    server.on("GET", "blobstream/status", reply(200, {"blob_store_enabled": False}))
    server.on("GET", "organization/1", reply(200, {"id": 1, "name": "one", "public_key": "key-one"}))
    server.on("GET", "organization/2", reply(200, {"id": 2, "name": "two", "public_key": "key-two"}))
    server.on("POST", "task", reply(201, {"id": 99}))


def _lookups(server: FakeServer) -> list[tuple[str, str]]:
    return sorted((s.method, s.path) for s in server.seen if s.method == "GET")


async def test_what_the_algorithm_asked_just_before_is_not_asked_again(start_proxy, server: FakeServer) -> None:
    _serve(server)
    proxy = await start_proxy(XorCryptor())
    async with client_of(proxy) as algorithm:
        # What vantage6-algorithm-tools does before it creates a subtask.
        status = await algorithm.get("/blobstream/status")
        one = await algorithm.get("/organization/1")
        two = await algorithm.get("/organization/2")
        created = await algorithm.post("/task", json=subtask(1, 2))
    assert status.json() == {"blob_store_enabled": False}  # the answers pass unchanged
    assert one.json()["public_key"] == "key-one" and two.json()["name"] == "two"
    assert created.status_code == 201
    assert _lookups(server) == LOOKUPS  # each once: the algorithm's own
    by_org = {org["id"]: org["input"] for org in server.to("POST", "task")[0].json()["organizations"]}
    assert by_org[1].startswith("key-one$") and by_org[2].startswith("key-two$")


async def test_facts_are_kept_fact_ttl_seconds_then_asked_again(start_proxy, server: FakeServer) -> None:
    _serve(server)
    time = ManualClock()
    proxy = await start_proxy(XorCryptor(), clock=time)
    async with client_of(proxy) as algorithm:
        for _ in range(3):
            assert (await algorithm.post("/task", json=subtask(1, 2))).status_code == 201
        assert _lookups(server) == LOOKUPS
        await time.advance(FACT_TTL + 1)
        server.on("GET", "organization/2", reply(200, {"id": 2, "public_key": "key-two-renewed"}))
        assert (await algorithm.post("/task", json=subtask(1, 2))).status_code == 201
    assert _lookups(server) == sorted(LOOKUPS * 2)
    last = {org["id"]: org["input"] for org in server.to("POST", "task")[-1].json()["organizations"]}
    assert last[2].startswith("key-two-renewed$")


async def test_a_refusal_or_a_missing_key_is_not_kept(start_proxy, server: FakeServer) -> None:
    _serve(server)
    server.on("GET", "organization/2", reply(403, {"msg": "no"}), reply(200, {"id": 2, "public_key": ""}),
              reply(200, {"id": 2, "public_key": "key-two"}))
    server.on("GET", "blobstream/status", reply(404, {"msg": "no such endpoint"}), reply(200, {"blob_store_enabled": False}))
    proxy = await start_proxy(XorCryptor())
    async with client_of(proxy) as algorithm:
        assert (await algorithm.get("/organization/2")).status_code == 403  # passed by, not kept
        refused = await algorithm.post("/task", json=subtask(1, 2))
        assert refused.status_code == 400 and "Organization 2 has no public key" in refused.json()["msg"]
        assert (await algorithm.post("/task", json=subtask(1, 2))).status_code == 201
    # The status was asked again after its error, the key after the refusal and after the empty one.
    assert [s.path for s in server.seen if s.method == "GET" and s.path != "organization/1"] == [
        "organization/2", "blobstream/status", "organization/2", "blobstream/status", "organization/2",
    ]


async def test_an_answer_that_is_not_json_passes_as_it_came(start_proxy, server: FakeServer) -> None:
    server.on("GET", "organization/1", lambda _request: httpx.Response(200, content=b"not json"))
    proxy = await start_proxy(XorCryptor())
    async with client_of(proxy) as algorithm:
        answer = await algorithm.get("/organization/1")
    assert (answer.status_code, answer.content) == (200, b"not json")
