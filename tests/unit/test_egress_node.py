"""Squid, SSH tunnels and linked containers as the Node uses them, on the in-memory harness."""
from __future__ import annotations

import json
import logging

import attrs
import pytest
from dependency_injector import providers

from v6node.adapters.memory.harness import MemoryNodeHarness, default_config
from v6node.adapters.memory.sidecars import MemoryServiceLinker
from v6node.app.container_memory import MemoryAdapters
from v6node.domain.egress import EgressConfig, ServiceLink, SshTunnelConfig, WhitelistConfig
from v6node.domain.errors import ConfigError, NodeError
from v6node.domain.events import NewTask, SyncRequested

IMAGE = "127.0.0.1:5999/echo-algo:1"
NETWORK = "vantage6-memnode-user-net"


def tunnel(hostname: str, bind_port: int = 8000) -> SshTunnelConfig:
    return SshTunnelConfig(
        hostname=hostname, ssh_host="ssh.example.org", username="tunnel", key_file="/keys/tunnel.pem",
        fingerprint="ssh-ed25519 AAAAsecretlooking", dest_ip="127.0.0.1", dest_port=5432, bind_port=bind_port,
    )


EGRESS = EgressConfig(
    whitelist=WhitelistConfig(domains=("data.example.org",), ips=("10.1.2.3",), ports=(443,)),
    tunnels=(tunnel("db"), tunnel("warehouse", 8001)),
    services=(ServiceLink("my-postgres", ("pg",)),),
)


def harness(egress: EgressConfig = EGRESS, containers: dict[str, bool] | None = None) -> MemoryNodeHarness:
    """A node whose engine has the operator's ``containers`` (name -> running)."""
    config = default_config(egress=egress)
    adapters = MemoryAdapters(config=config)
    operators = MemoryServiceLinker(containers if containers is not None else {"my-postgres": True})
    adapters.service_linker.override(providers.Object(operators))
    h = MemoryNodeHarness(config, adapters=adapters)
    h.runtime.add_image(IMAGE)
    return h


async def algorithm_env(h: MemoryNodeHarness) -> dict[str, str]:
    seen: dict[str, str] = {}

    async def program(call):  # type: ignore[no-untyped-def]
        seen.update(call.env)
        call.write_output(b"{}")
        return 0

    h.runtime.add_image("env:1", program)
    task = h.server.create_task("env:1")
    h.events.push(NewTask(task.id))
    await h.until_run_finished(task.id)
    return seen


async def test_without_egress_nothing_starts_and_algorithms_get_no_proxy_variables() -> None:
    h = harness(EgressConfig())
    async with h:
        env = await algorithm_env(h)
    assert h.whitelist_proxy.starts == [] and h.tunnels.starts == [] and h.service_linker.links == {}
    assert h.service_firewall.calls[0] == "close"  # an exception an earlier run left goes
    assert h.service_firewall.opened_for is None
    assert not any("PROXY" in key.upper() for key in env)


async def test_the_start_opens_the_firewall_tunnels_squid_and_links(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    with caplog.at_level(logging.INFO, logger="v6node"):
        async with h:
            assert h.service_firewall.opened_for == NETWORK
            assert sorted(h.tunnels.running) == ["db", "warehouse"]
            assert list(h.whitelist_proxy.running) == ["squid"]
            assert h.service_linker.links == {"my-postgres": ("pg",)}
            env = await algorithm_env(h)
    assert env["HTTP_PROXY"] == env["https_proxy"] == "http://squid:3128"
    assert env["NO_PROXY"] == env["no_proxy"] == f"localhost,127.0.0.1,{h.runtime.gateway},proxyserver,db,warehouse,pg"
    assert "whitelist proxy ready: algorithms reach domains [data.example.org], ips [10.1.2.3], ports [443]" in caplog.text
    assert "ssh tunnel 'db' ready: algorithms reach db:8000, forwarded through tunnel@ssh.example.org:22 to 127.0.0.1:5432" in caplog.text
    assert "linked docker service: algorithms reach container my-postgres as pg" in caplog.text


async def test_algorithm_env_may_override_the_proxy_variables() -> None:
    h = MemoryNodeHarness(default_config(egress=EgressConfig(whitelist=WhitelistConfig(ports=(443,))), algorithm_env={"HTTP_PROXY": "mine"}))
    h.runtime.add_image(IMAGE)
    async with h:
        env = await algorithm_env(h)
    assert env["HTTP_PROXY"] == "mine" and env["HTTPS_PROXY"] == "http://squid:3128"


async def test_a_failing_tunnel_is_logged_with_its_reason_and_the_node_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    h.tunnels.fail("db", "the SSH server's host key does not match ssh.fingerprint (host key verification failed)")
    with caplog.at_level(logging.INFO, logger="v6node"):
        async with h:
            assert list(h.tunnels.running) == ["warehouse"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "ssh tunnel 'db' (ssh-tunnels[0], tunnel@ssh.example.org:22) failed: the SSH server's host key does not match "
        "ssh.fingerprint (host key verification failed). Algorithms cannot reach db:8000; the node goes on without "
        "this tunnel"
    ]


async def test_a_squid_that_cannot_start_stops_the_start_with_the_reason() -> None:
    h = harness()
    h.whitelist_proxy.fail("squid", "the image x is not present locally and could not be pulled")
    with pytest.raises(NodeError, match="the whitelist proxy \\(squid\\): the image x is not present locally"):
        await h.start()
    assert h.service_firewall.opened_for is None  # the clean-up after the failed start removed it


async def test_a_linked_container_that_does_not_exist_is_a_config_error_naming_the_key() -> None:
    h = harness(containers={})
    with pytest.raises(ConfigError) as error:
        await h.start()
    assert error.value.key == "docker_services.pg" and "no container named 'my-postgres'" in error.value.problem


async def test_a_linked_container_that_is_not_running_is_linked_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    h = harness(containers={"my-postgres": False})
    with caplog.at_level(logging.WARNING, logger="v6node"):
        async with h:
            assert h.service_linker.links == {"my-postgres": ("pg",)}
    assert "container my-postgres is not running; algorithms reach it as pg once it runs" in caplog.text


async def test_a_sidecar_that_stops_is_started_again(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    with caplog.at_level(logging.INFO, logger="v6node"):
        async with h:
            await h.clock.advance(120)  # it ran for a while: started again at once
            h.whitelist_proxy.stop("squid", 1, "FATAL: out of memory")
            await h.until(lambda: "squid" in h.whitelist_proxy.running)
            h.tunnels.stop("db", 255, "Connection closed by remote host")
            await h.until(lambda: "db" in h.tunnels.running)
    assert h.whitelist_proxy.starts == ["squid", "squid"] and h.tunnels.starts.count("db") == 2
    assert "the whitelist proxy (squid) stopped (exit code 1: FATAL: out of memory); starting it again" in caplog.text
    assert "ssh tunnel 'db' is ready again (db:8000)" in caplog.text


async def test_a_sidecar_that_keeps_failing_is_tried_again_after_growing_pauses(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    async with h:
        loops = h.clock.sleepers  # the node's other loops, asleep
        h.tunnels.fail("db", "the SSH server refused the key of user tunnel (permission denied)")
        h.tunnels.stop("db")  # right after its start: the next start waits a moment
        await h.until(lambda: h.clock.sleepers > loops)
        await h.clock.advance(1)
        await h.until(lambda: h.tunnels.starts.count("db") == 2)
        await h.until(lambda: h.clock.sleepers > loops)  # failed again: a longer pause
        await h.clock.advance(1)
        assert h.tunnels.starts.count("db") == 2
        h.tunnels.heal("db")
        await h.clock.advance(1)
        await h.until(lambda: "db" in h.tunnels.running)
    assert h.tunnels.starts.count("db") == 3


async def test_the_stop_lets_go_of_linked_containers_and_removes_the_firewall_exception() -> None:
    h = harness()
    async with h:
        pass
    assert h.service_linker.unlinked == ["my-postgres"]
    assert h.service_firewall.opened_for is None and h.service_firewall.calls[-1] == "close"


async def test_a_firewall_exception_that_cannot_be_removed_is_reported_as_left() -> None:
    h = harness()
    await h.start()
    h.service_firewall.fail_close = "iptables: no chain DOCKER-USER"
    with pytest.raises(NodeError, match="could not remove: the firewall exception for the algorithm network"):
        await h.stop()


async def test_after_a_crash_the_next_process_replaces_the_firewall_exception_and_links() -> None:
    first = harness()
    await first.start()
    await first.crash()
    assert first.service_firewall.opened_for == NETWORK  # a killed process leaves it

    second = first.restarted()
    async with second:
        assert second.service_firewall.calls[-1] == f"open {NETWORK}"
        assert second.service_linker.links == {"my-postgres": ("pg",)}
    assert second.service_firewall.opened_for is None and second.service_linker.links == {}


async def test_node_details_name_what_algorithms_may_reach_and_nothing_secret() -> None:
    h = harness()
    async with h:
        h.events.push(SyncRequested())
        await h.until(lambda: any(name == "node_info_update" for name, _ in h.events.emitted))
    details = next(data for name, data in h.events.emitted if name == "node_info_update")
    assert details["whitelist"] == {"domains": ["data.example.org"], "ips": ["10.1.2.3"], "ports": [443]}
    assert details["ssh_tunnels"] == ["db:8000", "warehouse:8001"]
    assert details["docker_services"] == ["pg"]
    shared = json.dumps(details)
    for secret in ("tunnel.pem", "AAAAsecretlooking", "ssh.example.org", "tunnel@"):
        assert secret not in shared


async def test_the_nodes_public_methods_delegate_to_the_use_cases() -> None:
    h = harness()
    async with h:
        squid = await h.node.setup_squid_proxy()
        tunnels = await h.node.setup_ssh_tunnels()
        linked = await h.node.link_docker_services()
    assert squid is not None and squid.alias == "squid" and squid.port == 3128
    assert [t.alias for t in tunnels] == ["db", "warehouse"]
    assert [(s.container, s.aliases) for s in linked] == [("my-postgres", ("pg",))]
    assert attrs.asdict(squid)["kind"] == "squid"
