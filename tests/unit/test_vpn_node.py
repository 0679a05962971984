"""The VPN as the Node uses it (``setup_vpn_connection``, per-run forwarding, stop), on the in-memory harness."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from v6node.adapters.memory.harness import MemoryNodeHarness, default_config
from v6node.adapters.vpn.docker_vpn_client import diagnose, read_config, write_config
from v6node.domain.errors import ServerUnavailable
from v6node.domain.events import NewTask
from v6node.domain.vpn import AlgorithmPort, VpnConfig

IMAGE = "127.0.0.1:5999/echo-algo:1"
NETWORK = "vantage6-memnode-user-net"
SUBNET = "10.76.0.0/16"
CONFIG = "client\nremote vpn.example.org 1194\n<key>\nsecret\n</key>\n"
VPN_CALLS = ("vpn_config", "set_vpn_address", "register_port", "remove_ports")


def harness(vpn: VpnConfig | None = VpnConfig(SUBNET), config: str | None = CONFIG, **changes: object) -> MemoryNodeHarness:
    h = MemoryNodeHarness(default_config(vpn=vpn, **changes))
    h.runtime.add_image(IMAGE)
    h.vpn_client.config = config
    return h


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def run_one(h: MemoryNodeHarness, image: str = IMAGE) -> str:
    """Runs a task at this node; returns the network its algorithm was started on."""
    networks: list[str] = []

    async def program(call):  # type: ignore[no-untyped-def]
        networks.append(call.spec.network)
        call.write_output(b"{}")
        return 0

    h.runtime.add_image(image, program)
    task = h.server.create_task(image)
    h.events.push(NewTask(task.id))
    assert (await h.until_run_finished(task.id)).value == "completed"
    return networks[0]


async def test_without_vpn_subnet_nothing_of_the_vpn_is_made_or_asked_for() -> None:
    h = harness(vpn=None)
    async with h:
        network = await run_one(h)
    assert network == NETWORK
    assert h.vpn_client.connects == [] and h.vpn_client.runs == {} and h.vpn_client.released == []
    assert not any(h.server.calls[name] for name in VPN_CALLS)


async def test_with_a_stored_configuration_the_node_connects_forwards_and_publishes_its_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = harness()
    with caplog.at_level(logging.INFO, logger="v6node"):
        async with h:
            assert h.vpn_client.connects == [CONFIG]
            assert h.server.calls["vpn_config"] == 0  # the stored one is used
            assert h.vpn_client.forwarding == (NETWORK, SUBNET)
            assert h.server.state.node_ips == {10: (1, "10.76.0.2")}
            assert h.node.session.vpn is not None and h.node.session.vpn.vpn_address == "10.76.0.2"
    assert "VPN ready: this node's algorithms are reached at 10.76.0.2 (vpn_subnet 10.76.0.0/16)" in caplog.text
    assert errors(caplog) == []


async def test_a_run_joins_its_helper_and_its_ports_are_registered_then_withdrawn(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    h.vpn_client.exposed[IMAGE] = (AlgorithmPort(8888, "message"), AlgorithmPort(9000))
    registered: list[list[tuple[int, str | None]]] = []
    with caplog.at_level(logging.INFO, logger="v6node"):
        async with h:
            networks: list[str] = []
            hosts: list[dict[str, str]] = []

            async def program(call):  # type: ignore[no-untyped-def]
                networks.append(call.spec.network)
                hosts.append(call.spec.extra_hosts)
                registered.append(list(h.server.state.vpn_ports.get(call.run_id, [])))
                call.write_output(b"{}")
                return 0

            h.runtime.add_image(IMAGE, program)
            task = h.server.create_task(IMAGE)
            h.events.push(NewTask(task.id))
            await h.until_run_finished(task.id)
            run_id = h.server.our_run(task.id).id
            addresses = h.vpn_server.vpn_addresses(task.id, organization_id=2)
    assert networks == [f"container:helper-{run_id}-" + networks[0].rsplit("-", 1)[1]]
    assert registered == [[(49152, "message"), (49153, None)]]
    # The engine refuses hosts entries beside a shared namespace: the helper holds the run's.
    assert hosts == [{}] and h.vpn_client.helper_hosts[run_id] == {"proxyserver": h.runtime.gateway}
    assert h.vpn_client.released == [run_id] and h.server.state.vpn_ports == {}
    assert addresses == []  # withdrawn with the run
    assert f"run {run_id}: reached over the VPN at 10.76.0.2:49152 -> 8888 (message), 10.76.0.2:49153 -> 9000" in caplog.text


async def test_peers_find_a_running_algorithm_at_the_nodes_address_and_port() -> None:
    h = harness()
    async with h:
        seen: list[list[dict[str, object]]] = []

        async def program(call):  # type: ignore[no-untyped-def]
            seen.append(h.vpn_server.vpn_addresses(int(call.spec.labels["task_id"]), organization_id=2))
            call.write_output(b"{}")
            return 0

        h.runtime.add_image(IMAGE, program)
        task = h.server.create_task(IMAGE)
        h.events.push(NewTask(task.id))
        await h.until_run_finished(task.id)
    assert seen == [[{"port": 49152, "label": None, "ip": "10.76.0.2", "organization_id": 1, "task_id": task.id,
                      "parent_id": None}]]


async def test_without_a_stored_configuration_the_server_is_asked_and_the_answer_stored() -> None:
    h = harness(config=None)
    h.server.state.ovpn_config = "client\r\nremote vpn.example.org 1194\r\n"
    async with h:
        assert h.server.calls["vpn_config"] == 1
        assert h.vpn_client.connects == ["client\nremote vpn.example.org 1194\n"]


async def test_a_stored_configuration_that_does_not_connect_is_replaced_by_a_fresh_one_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = harness()
    h.vpn_client.refused.add(CONFIG)
    h.server.state.ovpn_config = fresh = "client\nremote vpn.example.org 1194\n<key>\nnew\n</key>\n"
    with caplog.at_level(logging.INFO, logger="v6node"):
        async with h:
            assert h.vpn_client.connects == [CONFIG, fresh]
            assert h.node.session.vpn is not None
    assert "the stored VPN configuration did not connect (the VPN server refused the client's certificate" in caplog.text
    assert errors(caplog) == []


async def test_a_fresh_configuration_that_does_not_connect_either_leaves_the_vpn_off(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    h.vpn_client.refused.add(CONFIG)
    h.server.state.ovpn_config = CONFIG
    with caplog.at_level(logging.INFO, logger="v6node"):
        async with h:
            assert h.vpn_client.connects == [CONFIG, CONFIG]  # fetched and tried once, no more
            assert h.node.session.vpn is None and h.vpn_client.forwarding is None
            assert await run_one(h) == NETWORK
    assert len(errors(caplog)) == 1
    assert errors(caplog)[0].startswith(
        "VPN disabled: the VPN server refused the client's certificate (VERIFY ERROR). Algorithms of this node cannot "
        "reach those of other stations over the VPN (vpn_subnet 10.76.0.0/16); the node goes on without it"
    )


async def test_a_server_without_a_vpn_service_leaves_the_node_running_without_it(caplog: pytest.LogCaptureFixture) -> None:
    h = harness(config=None)
    with caplog.at_level(logging.INFO, logger="v6node"):
        async with h:
            assert await run_one(h) == NETWORK
            assert h.vpn_client.connects == [] and h.server.state.node_ips == {}
            assert h.server.calls["register_port"] == h.server.calls["remove_ports"] == 0
    assert errors(caplog) == [
        "VPN disabled: the server gives no VPN configuration (GET vpn: HTTP 501, This server does not support VPN). "
        "Algorithms of this node cannot reach those of other stations over the VPN (vpn_subnet 10.76.0.0/16); the node "
        "goes on without it"
    ]
    assert "starts without the VPN: the node is not connected to it" in caplog.text


async def test_an_address_outside_vpn_subnet_is_refused_and_the_client_removed(caplog: pytest.LogCaptureFixture) -> None:
    h = harness(vpn=VpnConfig("10.77.0.0/16"))
    with caplog.at_level(logging.INFO, logger="v6node"):
        async with h:
            assert h.vpn_client.connection is None and h.vpn_client.forwarding is None
            assert h.server.state.node_ips == {}
    assert errors(caplog)[0].startswith(
        "VPN disabled: the VPN server gave it the address 10.76.0.2, outside vpn_subnet 10.77.0.0/16."
    )


async def test_an_unreachable_server_when_publishing_the_address_leaves_the_vpn_off(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    h.server.fail_next("set_vpn_address", ServerUnavailable("PATCH node/10: connection refused"))
    with caplog.at_level(logging.INFO, logger="v6node"):
        async with h:
            assert h.vpn_client.connection is None and h.vpn_client.forwarding is None
    assert errors(caplog)[0].startswith("VPN disabled: PATCH node/10: connection refused.")


async def test_a_client_that_stops_is_started_again_and_its_new_address_published(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    with caplog.at_level(logging.INFO, logger="v6node"):
        async with h:
            await h.clock.advance(120)
            h.vpn_client.address = "10.76.0.9"
            h.vpn_client.stop(137, "killed")
            await h.until(lambda: h.node.session.vpn is not None and h.node.session.vpn.vpn_address == "10.76.0.9")
            assert h.server.state.node_ips == {10: (1, "10.76.0.9")}
            assert await run_one(h) != NETWORK  # runs are forwarded again
    assert "the VPN client stopped (exit code 137: killed); starting it again" in caplog.text
    assert "VPN client reconnected as 10.76.0.9 (was 10.76.0.2)" in caplog.text
    assert "the VPN client is ready again (vantage6-memnode-vpn-client)" in caplog.text


async def test_the_stop_withdraws_the_address_and_removes_the_client_and_the_forwarding(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = harness()
    with caplog.at_level(logging.INFO, logger="v6node"):
        async with h:
            pass
    assert h.server.state.node_ips == {} and h.vpn_client.connection is None and h.vpn_client.forwarding is None
    assert "left the VPN: address 10.76.0.2 withdrawn, client stopped, forwarding removed" in caplog.text


async def test_forwarding_a_killed_process_left_is_removed_even_when_vpn_subnet_is_gone_from_the_config() -> None:
    first = harness()
    await first.start()
    await first.crash()
    assert first.vpn_client.forwarding == (NETWORK, SUBNET)  # a killed process leaves its rules

    second = first.restarted(default_config(vpn=None))
    async with second:
        pass
    assert second.vpn_client.forwarding is None
    assert not any(second.server.calls[name] for name in ("vpn_config", "register_port"))


async def test_setup_vpn_connection_is_the_reference_nodes_method() -> None:
    h = harness()
    async with h:
        again = await h.node.setup_vpn_connection()
    assert again is not None and again.vpn_address == "10.76.0.2" and len(h.vpn_client.connects) == 2


def test_the_configuration_is_stored_with_lf_line_ends_and_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "data" / "vpn" / "vpn-config.ovpn.conf"
    assert read_config(str(path)) is None
    write_config(str(path), "client\r\n<key>\r\nsecret\r\n</key>\r\n")
    assert path.read_bytes() == b"client\n<key>\nsecret\n</key>\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    write_config(str(path), "client\n")
    assert read_config(str(path)) == "client\n" and stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_fatal_stop_of_openvpn_names_what_it_said_before() -> None:
    before = ["TUN/TAP device tun0 opened", "ERROR: Cannot ioctl TUNSETIFF tun: Device or resource busy (errno=16)"]
    reason = diagnose("2026-12-06 08:53:25 Exiting due to fatal error", before)
    assert reason is not None and "Exiting due to fatal error" in reason and "TUNSETIFF" in reason
    assert diagnose("Initialization Sequence Completed", before) is None
    assert diagnose("AUTH: Received control message: AUTH_FAILED") == "the VPN server refused the client (AUTH_FAILED)"
