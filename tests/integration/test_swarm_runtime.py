"""What the Swarm adapter does beyond the ContainerRuntime contract, on the rig's three-host swarm:
the relay to the node's proxy, a command on every host, and images that only some hosts have."""
from __future__ import annotations

import asyncio
import contextlib
import http.server
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from v6node.adapters.docker.swarm_container_runtime import SwarmContainerRuntime
from v6node.adapters.docker.swarm_specs import Placement
from v6node.domain.containers import ContainerSpec, managed_labels, network_name, proxy_check_spec
from v6node.domain.errors import ImageNotFound
from tests.rig.paths import image
from tests.rig.swarm import SwarmRig

pytestmark = [pytest.mark.docker, pytest.mark.swarm]

ECHO = image("echo-algo")
SLEEP = image("sleep-algo")


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy_stand_in(swarm_rig: SwarmRig) -> Iterator[int]:
    """An HTTP server answering /health where the node's proxy would listen (the rig's link)."""
    server = http.server.ThreadingHTTPServer((swarm_rig.host_address, 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
async def swarm(swarm_rig: SwarmRig, tmp_path: Path) -> AsyncIterator[tuple[SwarmContainerRuntime, str]]:
    node = f"it-{uuid.uuid4().hex[:8]}"
    runtime = SwarmContainerRuntime(
        swarm_rig.manager.url, proxy_address=swarm_rig.host_address, relay_image=ECHO,
        volumes_dir=str(tmp_path / "tasks" / ".volumes"),
    )
    try:
        yield runtime, node
    finally:
        await runtime.remove_labelled(managed_labels(node))
        runtime.close()


async def test_every_host_reaches_the_proxy_through_the_relay_also_after_the_checks_are_cleaned_up(
    swarm, swarm_rig, proxy_stand_in
):
    runtime, node = swarm
    network, labels = network_name(node), managed_labels(node)
    listening = await runtime.ensure_network(network, labels)
    assert listening == swarm_rig.host_address
    host, port = await runtime.expose_proxy(network, listening, proxy_stand_in, labels)
    assert (host, port) == ("v6node-proxy", proxy_stand_in)
    check = proxy_check_spec(node, ECHO, network, host, port)
    # What the node does before each check: remove earlier checks only (the relay stays).
    await runtime.remove_labelled({**labels, "vantage6-type": "proxy-check"})
    results = await runtime.run_on_every_host(check)
    assert [result.host for result in results] == sorted(h.name for h in swarm_rig.hosts)
    assert all(result.exit_code == 0 and '"ok"' in result.output for result in results), results
    # Idempotent: the same relay again, and it still answers.
    assert await runtime.expose_proxy(network, listening, proxy_stand_in, labels) == (host, port)
    assert all(r.exit_code == 0 for r in await runtime.run_on_every_host(check))
    # The reference's name of the proxy is the relay's second alias.
    by_name = proxy_check_spec(node, ECHO, network, "proxyserver", port)
    assert all(r.exit_code == 0 for r in await runtime.run_on_every_host(by_name))


async def test_a_command_on_every_host_says_where_it_ran_and_leaves_no_job(swarm, swarm_rig):
    runtime, node = swarm
    spec = ContainerSpec(
        name=f"vantage6-{node}-hostname", image=ECHO, network="", labels=managed_labels(node),
        command=("sh", "-c", "cat /etc/hostname; exit 3"),
    )
    results = await runtime.run_on_every_host(spec)
    assert [(r.host, r.exit_code) for r in results] == [(h.name, 3) for h in sorted(swarm_rig.hosts, key=lambda h: h.name)]
    assert await runtime.list_containers(managed_labels(node)) == []
    assert await until_no_container(swarm_rig, node) == {}


async def test_removed_jobs_leave_no_container_on_any_host_also_when_killed(swarm, swarm_rig, tmp_path):
    """Engine 20.10 keeps the exited containers of a removed ``replicated-job`` (moby#42789):
    the adapter's jobs are one-replica services, whose containers go with them."""
    runtime, node = swarm
    labels = managed_labels(node)
    done = await runtime.run(ContainerSpec(
        name=f"vantage6-{node}-done", image=ECHO, network="", labels=labels, command=("sh", "-c", "echo done"),
    ))
    killed = await runtime.run(ContainerSpec(
        name=f"vantage6-{node}-killed", image=SLEEP, network="", labels=labels,
        command=("sh", "-c", "echo sleeping; exec sleep 600"),
    ))
    assert (await runtime.wait(done)).exit_code == 0
    await runtime.kill(killed)
    assert (await runtime.wait(killed)).exit_code == 137
    assert sorted((c.name, c.running, c.exit_code) for c in await runtime.list_containers(labels)) == [
        (f"vantage6-{node}-done", False, 0), (f"vantage6-{node}-killed", False, 137),
    ]
    # Exited, not yet removed: each container is still on its host.
    assert sum(len(names) for names in (await containers_left(swarm_rig, node)).values()) == 2
    for job in (done, killed):
        await runtime.remove(job)
    assert await until_no_container(swarm_rig, node) == {}


async def containers_left(swarm_rig: SwarmRig, node: str) -> dict[str, list[str]]:
    """Host -> the node's containers on it, in any state."""
    found = await asyncio.to_thread(swarm_rig.containers, f"v6node.node={node}")
    return {host: names for host, names in found.items() if names}


async def until_no_container(swarm_rig: SwarmRig, node: str) -> dict[str, list[str]]:
    """A host removes the container of a removed job when the manager tells it (no event of
    it reaches the test: polled, and what stayed after the timeout is returned)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while (left := await containers_left(swarm_rig, node)) and loop.time() < deadline:
        await asyncio.sleep(0.5)
    return left


async def test_an_image_that_only_some_hosts_have_names_the_hosts_without_it(swarm, swarm_rig):
    runtime, node = swarm
    only_here = image(f"only-on-manager-{node}")
    with contextlib.closing(swarm_rig.manager.client()) as manager:
        manager.images.get(ECHO).tag(only_here)
        try:
            with pytest.raises(ImageNotFound) as refused:
                await runtime.ensure_image(only_here, require_pull=False)
            lacking = sorted(h.name for h in swarm_rig.workers)
            assert f"these swarm hosts have no local copy: {', '.join(lacking)}" in str(refused.value)
            with pytest.raises(ImageNotFound, match="require_algorithm_pull is true"):
                await runtime.ensure_image(only_here, require_pull=True)
            # Every host has the test images: usable without a pull.
            assert await runtime.ensure_image(ECHO, require_pull=False) == "local"
        finally:
            manager.images.remove(only_here)


async def test_the_hosts_pull_from_the_registry_the_operator_names(swarm, swarm_rig):
    runtime, node = swarm
    pushed = await asyncio.to_thread(swarm_rig.push, swarm_rig.manager, ECHO)
    with contextlib.closing(swarm_rig.manager.client()) as manager:
        manager.images.remove(pushed)  # no host has it now: only the registry
    worker = swarm_rig.workers[0]
    on_worker = SwarmContainerRuntime(
        swarm_rig.manager.url, placement=Placement(constraints=(f"node.hostname == {worker.name}",)),
        relay_image=ECHO, volumes_dir=runtime._volumes.source(""),
    )
    try:
        assert await on_worker.ensure_image(pushed, require_pull=True) == "pulled"
        spec = ContainerSpec(
            name=f"vantage6-{node}-pulled", image=pushed, network="", labels=managed_labels(node),
            command=("sh", "-c", "echo pulled and ran"),
        )
        job = await on_worker.run(spec)
        assert (await on_worker.wait(job)).exit_code == 0
        assert "pulled and ran" in await on_worker.logs(job)
        await on_worker.remove(job)
        repository = pushed.rpartition(":")[0]
        with contextlib.closing(worker.client()) as client:
            digests = [d for image in client.images.list(all=True) for d in image.attrs.get("RepoDigests") or []]
        assert any(d.startswith(f"{repository}@sha256:") for d in digests), digests  # pulled by its digest
    finally:
        on_worker.close()
