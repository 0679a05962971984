"""As operators live: one node config reused against another server, a server reset under a
node, and a second `v6node start` on a data folder that is in use.

Every scenario keeps one node name and one data folder across its steps, as a station
does; each step runs the `v6node start` process against a real vantage6 4.15.2 server.
"""
from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import NO_LEFTOVERS, leftovers
from tests.e2e.test_policies_and_data import as_json, run_task
from tests.rig.node_process import NodeProcess, node_config
from tests.rig.paths import image
from tests.rig.researcher import Researcher
from tests.rig.server import AdminApi, Federation, RealServer, create_federation

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.server]

ECHO, SLEEP = image("echo-algo"), image("sleep-algo")


class Station:
    """One node name and data folder; each step writes the config for a server and starts the node."""

    def __init__(self, home: Path) -> None:
        self.name = f"station-{uuid.uuid4().hex[:6]}"
        self.home = home
        self.processes: list[NodeProcess] = []

    @property
    def data(self) -> Path:
        return self.home / "data"

    def start(self, server: RealServer, federation: Federation, wait: bool = True) -> NodeProcess:
        config = node_config(server, federation.nodes[0], self.home)
        process = NodeProcess.write_config(self.home / f"{self.name}.yaml", config)
        self.processes.append(process)
        process.start(wait=wait)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture
def station(tmp_path: Path, test_images) -> Iterator[Station]:
    made = Station(tmp_path / "station")
    yield made
    made.stop_all()


@pytest.fixture
def fresh_servers(tmp_path: Path) -> Iterator[list[RealServer]]:
    """Servers this test starts itself (fresh databases, so their ids collide)."""
    started: list[RealServer] = []
    yield started
    for server in started:
        server.stop()


def start_server(servers: list[RealServer], workdir: Path, port: int | None = None) -> RealServer:
    server = RealServer(workdir, port=port)
    server.start()
    servers.append(server)
    return server


def federation_on(server: RealServer) -> tuple[Federation, Researcher]:
    admin = AdminApi(server)
    try:
        federation = create_federation(admin, "station", n_orgs=1)
    finally:
        admin.close()
    return federation, Researcher(server, federation.user)


def echo_runs(user: Researcher, federation: Federation, count: int) -> list[dict]:
    runs = []
    for i in range(count):
        run, result = run_task(user, federation, ECHO, {"method": "echo", "kwargs": {"i": i}})
        assert run["status"] == "completed", run
        assert as_json(result["result"])["echo"]["kwargs"] == {"i": i}
        runs.append(run)
    return runs


def test_the_same_config_against_server_a_then_a_fresh_server_b_with_colliding_ids(
    station: Station, fresh_servers, tmp_path: Path, docker_client
) -> None:
    server_a = start_server(fresh_servers, tmp_path / "server-a")
    federation_a, user_a = federation_on(server_a)
    node = station.start(server_a, federation_a)
    on_a = echo_runs(user_a, federation_a, 3)
    assert node.stop() == 0

    server_b = start_server(fresh_servers, tmp_path / "server-b")
    federation_b, user_b = federation_on(server_b)
    assert (federation_b.collaboration_id, federation_b.nodes[0].node_id) == (
        federation_a.collaboration_id, federation_a.nodes[0].node_id,
    )
    node = station.start(server_b, federation_b)
    on_b = echo_runs(user_b, federation_b, 3)

    assert [run["id"] for run in on_b] == [run["id"] for run in on_a]  # the ids collide
    assert "the run journal was written for node" in node.output
    assert f"at http://127.0.0.1:{server_a.port}/api, but this node is" in node.output
    kept = sorted(station.data.glob("journal.*.sqlite"))
    assert len(kept) == 1, kept
    # B's runs carry B's results only, each from one container start on B.
    for run in on_b:
        assert run["log"].count("echo-algo: read") == 1
    assert node.stop() == 0
    assert leftovers(docker_client, station.name) == NO_LEFTOVERS
    user_a.close()
    user_b.close()


def test_a_server_reset_under_a_stopped_node_reaches_nothing_from_before(
    station: Station, fresh_servers, tmp_path: Path, docker_client
) -> None:
    server = start_server(fresh_servers, tmp_path / "server")
    federation, user = federation_on(server)
    node = station.start(server, federation)
    echo_runs(user, federation, 1)
    # A run whose container outlives the node (SIGKILL): the journal records it as started.
    user.create_task(federation.collaboration_id, list(federation.organization_ids), SLEEP, {"method": "sleep"})
    node.wait_for("started:")
    node.stop(signal.SIGKILL)
    user.close()

    # The server is reset: same address, empty database; the operator registers the node again.
    server.stop()
    (server.workdir / "server.sqlite").unlink()
    server.start()
    federation_again, user = federation_on(server)
    node = station.start(server, federation_again)
    after = echo_runs(user, federation_again, 2)

    for run in after:
        assert run["status"] == "completed"
        assert "sleep" not in run["log"]  # not the old run's container, nor its outcome
    assert "left from a reset server?" in node.output or "describes another run" in node.output
    old_containers = docker_client.containers.list(all=True, filters={"label": f"v6node.node={station.name}", "ancestor": SLEEP})
    assert old_containers == []
    assert node.stop() == 0
    assert leftovers(docker_client, station.name) == NO_LEFTOVERS
    user.close()


def test_a_second_node_on_the_same_data_folder_exits_2_and_the_first_keeps_working(
    make_federation, start_node, researcher_for, tmp_path: Path
) -> None:
    federation = make_federation(n_orgs=1)
    first = start_node(federation.nodes[0])
    second = NodeProcess(first.config_file)
    second.start(wait=False)

    assert second.wait_exit(60) == 2
    assert f"a node (PID {first.pid}) is already running with the data folder" in second.output
    run, _ = run_task(researcher_for(federation), federation, ECHO, {"method": "echo"})
    assert run["status"] == "completed"
    assert first.running
