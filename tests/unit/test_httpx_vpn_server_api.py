"""HttpxVpnServerApi against the answers the server's VPN resources document (no EduVPN portal here)."""
from __future__ import annotations

import json

import pytest

from tests.unit.test_httpx_server_api import NODE_ID, FakeServer, RecordingClock, api, clock, drive, logged_in, server  # noqa: F401
from v6node.adapters.http.httpx_server_api import HttpxServerApi
from v6node.adapters.http.httpx_vpn_server_api import HttpxVpnServerApi
from v6node.domain.errors import ServerError, ServerRejected, ServerUnavailable


async def test_get_vpn_gives_the_ovpn_config_as_the_server_sends_it(logged_in: HttpxServerApi, server: FakeServer) -> None:
    server.route("GET", "/api/vpn", lambda r: server.ok({"ovpn_config": "client\r\nremote vpn.example.org 1194\r\n"}))
    assert await HttpxVpnServerApi(logged_in).vpn_config() == "client\r\nremote vpn.example.org 1194\r\n"
    assert server.paths == ["GET /api/vpn"]


@pytest.mark.parametrize("body", [{"msg": "ok"}, {"ovpn_config": ""}, {"ovpn_config": None}])
async def test_an_answer_without_a_configuration_is_an_unexpected_answer(
    logged_in: HttpxServerApi, server: FakeServer, body: dict[str, object]
) -> None:
    server.route("GET", "/api/vpn", lambda r: server.ok(body))
    with pytest.raises(ServerError, match="GET vpn: unexpected answer"):
        await HttpxVpnServerApi(logged_in).vpn_config()


async def test_no_vpn_service_501_is_refused_at_once(logged_in: HttpxServerApi, server: FakeServer) -> None:
    server.route("GET", "/api/vpn", lambda r: server.error(501, "This server does not support VPN"))
    with pytest.raises(ServerRejected) as refused:
        await HttpxVpnServerApi(logged_in).vpn_config()
    assert (refused.value.status, refused.value.message) == (501, "This server does not support VPN")
    assert server.paths == ["GET /api/vpn"]  # never retried


async def test_a_portal_that_refuses_the_server_500_is_retried_then_unavailable(
    logged_in: HttpxServerApi, server: FakeServer, clock: RecordingClock
) -> None:
    server.route("GET", "/api/vpn", lambda r: server.error(500, "Could not obtain VPN configuration ..."))

    with pytest.raises(ServerUnavailable):
        await drive(clock, HttpxVpnServerApi(logged_in).vpn_config())
    assert server.paths.count("GET /api/vpn") == 5


async def test_the_address_the_ports_and_their_removal_are_sent_as_the_server_reads_them(
    logged_in: HttpxServerApi, server: FakeServer
) -> None:
    server.route("PATCH", f"/api/node/{NODE_ID}", lambda r: server.ok({"id": NODE_ID}))
    server.route("POST", "/api/port", lambda r: server.ok({"id": 1}, 201))
    server.route("DELETE", "/api/port", lambda r: server.ok({"msg": "Ports removed from the database."}))
    vpn = HttpxVpnServerApi(logged_in)
    await vpn.set_vpn_address(NODE_ID, "10.76.0.2")
    await vpn.set_vpn_address(NODE_ID, None)
    await vpn.register_port(42, 49152, "message")
    await vpn.remove_ports(42)
    patches = [json.loads(r.content) for r in server.sent("PATCH", f"/api/node/{NODE_ID}")]
    assert patches == [{"ip": "10.76.0.2"}, {"clear_ip": True}]
    assert json.loads(server.sent("POST", "/api/port")[0].content) == {"port": 49152, "run_id": 42, "label": "message"}
    assert server.sent("DELETE", "/api/port")[0].url.params["run_id"] == "42"
