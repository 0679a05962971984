"""Fault injection: the `v6node start` process against the real server and dockerd, with the
server restarted, the websocket cut or silenced, the node SIGKILLed, 200 tasks waiting for an
offline node, kills of running tasks and subtasks, and the Docker engine restarted. The engine
that is restarted is a private one this module starts (``tests/rig/dockerd.py``), never the
machine's: the node under that test gets ``DOCKER_HOST`` pointing at it.

After every scenario: no run is left open on the server, none was executed twice (the
journal's container starts and the node's log both say once), and once the nodes stop
nothing labelled with them is left in Docker.
"""
from __future__ import annotations

import base64
import contextlib
import json
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest
import requests
import yaml
from attrs import define, field

from tests.e2e.conftest import NO_LEFTOVERS, leftovers
from tests.rig.dockerd import PrivateEngine, machine_engine_pid, running_private_engine
from tests.rig.journal_reader import container_starts
from tests.rig.node_process import NodeProcess
from tests.rig.paths import image
from tests.rig.relay import TcpRelay
from tests.rig.user_api import UserApi

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.server]

STARTED = re.compile(r"run (\d+) \(task \d+\) started")
SLEEP, ECHO, SHELL = image("sleep-algo"), image("echo-algo"), image("shell-algo")


# --- what every scenario checks at its end ---------------------------------------------------
# Names of the nodes the current test ran; what a failed test leaves of them is removed.
NODES_OF_THE_TEST: list[str] = []


@define
class NodeUnderTest:
    """One node identity and every `v6node start` process that ran it (restarts included)."""

    processes: list[NodeProcess]

    def __attrs_post_init__(self) -> None:
        NODES_OF_THE_TEST.append(self.name)

    @property
    def name(self) -> str:
        return self.processes[0].name

    @property
    def data_dir(self) -> Path:
        config = yaml.safe_load(self.processes[0].config_file.read_text())
        return Path(config["directories"]["data"])

    @property
    def output(self) -> str:
        return "".join(process.output for process in self.processes)

    def restart(self) -> NodeProcess:
        """The same config file again, as an operator would after a crash."""
        process = NodeProcess(self.processes[0].config_file, self.processes[0].env)
        process.name = self.name
        self.processes.append(process)
        process.start()
        return process

    def log_starts(self) -> Counter[int]:
        return Counter(int(run_id) for run_id in STARTED.findall(self.output))


@define
class Scenario:
    name: str
    began: float = field(factory=time.monotonic)
    created: int = 0
    statuses: Counter[str] = field(factory=Counter)
    twice: int = 0
    leftovers: int = 0
    seconds: float = 0.0


REPORT: list[Scenario] = []


@pytest.fixture(scope="module", autouse=True)
def scenario_table(request: pytest.FixtureRequest) -> Iterator[None]:
    """The figures of every scenario that got to its end checks, as a table after the module."""
    REPORT.clear()
    yield
    plugins = request.config.pluginmanager
    terminal, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if not REPORT or terminal is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line("\nscenario | runs created | runs ended (status) | executed twice | leftovers | seconds")
        for s in REPORT:
            ended = ", ".join(f"{n} {status}" for status, n in sorted(s.statuses.items()))
            terminal.write_line(f"{s.name} | {s.created} | {ended} | {s.twice} | {s.leftovers} | {s.seconds:.1f}")


@pytest.fixture(autouse=True)
def remove_what_a_failed_test_left(docker_client) -> Iterator[None]:
    NODES_OF_THE_TEST.clear()
    yield
    api = docker_client.api
    for name in NODES_OF_THE_TEST:
        label = {"label": f"v6node.node={name}"}
        removals = [(api.remove_container, c["Id"], {"force": True}) for c in api.containers(all=True, filters=label)]
        removals += [(api.remove_network, n["Id"], {}) for n in api.networks(filters=label)]
        removals += [(api.remove_volume, v["Name"], {"force": True}) for v in api.volumes(filters=label).get("Volumes") or []]
        for remove, what, options in removals:  # in this order: containers hold networks and volumes
            with contextlib.suppress(docker.errors.APIError):
                remove(what, **options)


def runs_of(admin, collaboration_id: int) -> list[dict]:
    return admin.get("/run", collaboration_id=collaboration_id, per_page=1000)["data"]


def results_of(admin, collaboration_id: int) -> dict[int, object]:
    """Run id -> the decoded JSON result (unencrypted collaborations: base64 of the output)."""
    items = admin.get("/result", collaboration_id=collaboration_id, per_page=1000)["data"]
    return {item["id"]: json.loads(base64.b64decode(item["result"])) for item in items if item.get("result")}


def end_scenario(scenario: Scenario, admin, collaboration_id: int, nodes: list[NodeUnderTest], docker_client) -> list[dict]:
    """Stop the nodes, then check: nothing open, nothing run twice, nothing left behind.

    Every run of these scenarios had its container started (kills come after the start),
    so each must show exactly one start in the journal and in the node's log.
    """
    for node in nodes:
        for process in node.processes:
            if process.running:
                assert process.stop(signal.SIGTERM) == 0, process.output[-3000:]
    runs = runs_of(admin, collaboration_id)
    scenario.created = len(runs)
    scenario.statuses = Counter(run["status"] for run in runs)
    journal: Counter[int] = Counter()
    logged: Counter[int] = Counter()
    for node in nodes:
        journal.update(container_starts(node.data_dir))
        logged.update(node.log_starts())
    twice = sorted({run_id for run_id, n in (journal | logged).items() if n > 1})
    scenario.twice = len(twice)
    left = {node.name: leftovers(docker_client, node.name) for node in nodes}
    scenario.leftovers = sum(len(names) for found in left.values() for names in found.values())
    scenario.seconds = time.monotonic() - scenario.began
    REPORT.append(scenario)

    assert [run["id"] for run in runs if not run["finished_at"]] == [], "runs left open on the server"
    assert twice == [], f"runs executed twice: {twice}"
    for run in runs:
        assert journal[run["id"]] == 1, f"run {run['id']}: {journal[run['id']]} container start(s) in the journal"
        assert logged[run["id"]] == 1, f"run {run['id']}: {logged[run['id']]} start(s) in the node's log"
    assert left == {node.name: NO_LEFTOVERS for node in nodes}
    return runs


def until_containers_removed(docker_client, node_name: str, timeout: float = 30) -> None:
    """Wait (on the engine, no polling) until the node has removed its containers."""
    # The low-level API: the high-level list inspects each container, which may be gone by then.
    api = docker_client.api
    for container in api.containers(all=True, filters={"label": f"v6node.node={node_name}"}):
        try:
            api.wait(container["Id"], timeout=timeout, condition="removed")
        except docker.errors.NotFound:
            pass  # removed before the wait began
        except requests.exceptions.RequestException:
            pass  # still there after the timeout: the caller's assertion names it


def run_ids(admin, task: dict) -> list[int]:
    return sorted(run["id"] for run in admin.runs_of_task(task["id"]))


def sleep_input(seconds: int) -> dict:
    return {"method": "sleep", "kwargs": {"seconds": seconds}}


@pytest.fixture
def user_api(real_server):
    opened: list[UserApi] = []

    def make(federation) -> UserApi:
        api = UserApi(real_server, federation.user)
        opened.append(api)
        return api

    yield make
    for api in opened:
        api.close()


# --- 1. the server restarts while runs are active ----------------------------------------------
def test_server_restarted_while_runs_are_active(real_server, admin, make_federation, start_node, user_api, docker_client):
    scenario = Scenario("server restarted while 3 runs are active")
    federation = make_federation(n_orgs=1)
    node = NodeUnderTest([start_node(federation.nodes[0])])
    user = user_api(federation)
    org, collab = federation.organization_ids[0], federation.collaboration_id
    durations = {}  # run id -> seconds
    process = node.processes[0]
    tasks = [user.create_task(collab, [org], SLEEP, sleep_input(seconds)) for seconds in (3, 4, 12)]
    for task, seconds in zip(tasks, (3, 4, 12)):
        (run_id,) = run_ids(admin, task)
        durations[run_id] = seconds
        process.wait_for(f"run {run_id} (task {task['id']}) started")
    mark = process.mark()
    # The server restarts (same port, database and jwt secret), staying down until the two
    # short runs have ended and the node has tried in vain to reach the server about them;
    # the long one ends after the server is back.
    real_server.stop()
    try:
        for run_id, seconds in durations.items():
            if seconds < 10:
                process.wait_until(
                    lambda out, r=run_id: re.search(rf"run {r} exited with code 0[\s\S]* failed \(", out) is not None,
                    f"fail to report run {run_id} while the server is down", timeout=30, since=mark,
                )
    finally:
        real_server.start()  # the module's other tests need it, whatever happened here
    process.wait_for("websocket reconnected; synchronising", timeout=90, since=mark)
    for run_id in durations:
        process.wait_for(f"run {run_id} reported: completed", timeout=90, since=mark)

    runs = end_scenario(scenario, admin, collab, [node], docker_client)
    assert {run["status"] for run in runs} == {"completed"}
    results = results_of(admin, collab)
    assert {run_id: results[run_id]["slept"] for run_id in durations} == durations
    for run_id in durations:
        # Reported once: no second report, and no reconciliation re-sent or failed it.
        assert node.output.count(f"run {run_id} reported:") == 1
        # (An INFO note "run N is already queued or running in this process" may appear: no action.)
        assert f"run {run_id}: " not in node.output


# --- 2. the websocket is cut, or dies silently, while a task is created --------------------------
def test_websocket_cut_while_a_task_is_created(real_server, admin, make_federation, start_node, user_api, docker_client):
    scenario = Scenario("websocket cut while a task is created")
    federation = make_federation(n_orgs=1)
    org, collab = federation.organization_ids[0], federation.collaboration_id
    user = user_api(federation)
    with TcpRelay(real_server.host, real_server.port) as relay:
        node = NodeUnderTest([start_node(federation.nodes[0], server_url=relay.url, port=relay.port)])
        process = node.processes[0]
        assert relay.websockets_seen == 1
        mark = process.mark()
        assert relay.cut() >= 1
        process.wait_for("websocket disconnected", since=mark)
        task = user.create_task(collab, [org], ECHO, {"method": "echo", "kwargs": {"cut": True}})
        (run_id,) = run_ids(admin, task)
        # The node tried and failed to come back while the task was created: new_task was lost.
        process.wait_for("cannot connect to", since=mark)
        assert relay.refused >= 1
        assert f"run {run_id} (task" not in process.output
        relay.restore()
        process.wait_for("websocket reconnected; synchronising", since=mark)
        process.wait_for(f"run {run_id} reported: completed", since=mark)
        assert relay.websockets_seen == 2
        runs = end_scenario(scenario, admin, collab, [node], docker_client)
    assert [run["status"] for run in runs] == ["completed"]
    assert results_of(admin, collab)[run_id] == {"echo": {"method": "echo", "kwargs": {"cut": True}}}


def test_a_silently_dead_websocket_is_covered_by_the_periodic_sync(real_server, admin, make_federation, start_node, user_api, docker_client):
    scenario = Scenario("websocket silently dead; periodic sync (2 s)")
    federation = make_federation(n_orgs=1)
    org, collab = federation.organization_ids[0], federation.collaboration_id
    user = user_api(federation)
    with TcpRelay(real_server.host, real_server.port) as relay:
        node = NodeUnderTest([start_node(federation.nodes[0], server_url=relay.url, port=relay.port, sync_interval=2)])
        process = node.processes[0]
        mark = process.mark()
        assert relay.silence_websockets() == 1
        task = user.create_task(collab, [org], ECHO, {"method": "echo", "kwargs": {"silent": True}})
        (run_id,) = run_ids(admin, task)
        # The socket looks alive to the node (no disconnect for its 60 s ping timeout), so
        # only the periodic re-sync can find the run.
        process.wait_for(f"run {run_id} reported: completed", timeout=30, since=mark)
        since = process.output_since(mark)
        assert "websocket disconnected" not in since
        assert "queued 1 run(s)" in since and "new run(s)" not in since
        relay.cut()
        runs = end_scenario(scenario, admin, collab, [node], docker_client)
    assert [run["status"] for run in runs] == ["completed"]


# --- 3. the node is SIGKILLed mid-run and started again ------------------------------------------
def test_node_sigkilled_mid_run_and_restarted(real_server, admin, make_federation, start_node, user_api, docker_client):
    scenario = Scenario("node SIGKILLed mid-run, restarted")
    federation = make_federation(n_orgs=1)
    org, collab = federation.organization_ids[0], federation.collaboration_id
    node = NodeUnderTest([start_node(federation.nodes[0])])
    first = node.processes[0]
    user = user_api(federation)
    # The long run must outlast the short one plus the second node's start (seconds on a loaded
    # machine: at 10 s it once ended before the restart and was found exited, not running).
    long = user.create_task(collab, [org], SLEEP, sleep_input(40))
    short = user.create_task(collab, [org], SLEEP, sleep_input(3))
    (short_run,), (long_run,) = run_ids(admin, short), run_ids(admin, long)
    for task, run_id in ((long, long_run), (short, short_run)):
        first.wait_for(f"run {run_id} (task {task['id']}) started")
    # Killed right after the short one started: both containers are running.
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    label = {"label": [f"v6node.node={node.name}", "vantage6-type=algorithm"]}
    containers = {c.labels["run_id"]: c for c in docker_client.containers.list(all=True, filters=label)}
    assert sorted(containers) == sorted([str(short_run), str(long_run)])
    # The short run ends while no node is there to see it.
    assert containers[str(short_run)].wait(timeout=30)["StatusCode"] == 0

    second = node.restart()
    second.wait_for(f"run {short_run} reported: completed")
    second.wait_for(f"run {long_run} reported: completed", timeout=90)
    # Re-attached and reported, both decided by the reconciliation, neither started again.
    assert re.search(rf"run {long_run}: container \w+ is still running; waiting for it again", second.output)
    assert re.search(rf"run {short_run}: container \w+ exited \(code 0\) but it was never reported", second.output)
    assert not STARTED.search(second.output)

    runs = end_scenario(scenario, admin, collab, [node], docker_client)
    assert {run["status"] for run in runs} == {"completed"}
    results = results_of(admin, collab)
    assert results[short_run] == {"slept": 3} and results[long_run] == {"slept": 40}


# --- 5. 200 tasks wait for an offline node -----------------------------------------------------
def wait_for_completed_reports(process: NodeProcess, total: int, stall: float = 120.0) -> None:
    """Until ``total`` runs are reported completed. It fails when no run is for ``stall``
    seconds, not after a total time: a loaded machine drains slowly (two suites at once
    took over 240 s for 200), a stuck node not at all."""
    done = 0
    while done < total:
        process.wait_until(
            lambda out, done=done: out.count("reported: completed") > done,
            f"report another run completed ({done} of {total} so far)", timeout=stall,
        )
        done = process.output.count("reported: completed")


def test_two_hundred_tasks_created_while_the_node_is_offline(real_server, admin, make_federation, start_node, user_api, docker_client):
    scenario = Scenario("200 tasks created while the node is offline")
    federation = make_federation(n_orgs=1)
    org, collab = federation.organization_ids[0], federation.collaboration_id
    tasks = user_api(federation).create_tasks(200, collab, [org], ECHO)
    assert len({task["id"] for task in tasks}) == 200
    node = NodeUnderTest([start_node(federation.nodes[0])])
    wait_for_completed_reports(node.processes[0], 200)
    runs = end_scenario(scenario, admin, collab, [node], docker_client)
    assert len(runs) == 200 and {run["status"] for run in runs} == {"completed"}
    results = results_of(admin, collab)
    echoed = sorted(result["echo"]["kwargs"]["i"] for result in results.values())
    assert echoed == list(range(200))


# --- 6. kills: a running task, and a task with running subtasks ----------------------------------
def test_a_running_task_killed_by_the_user(real_server, admin, make_federation, start_node, user_api, docker_client):
    scenario = Scenario("running task killed by the user")
    federation = make_federation(n_orgs=1)
    org, collab = federation.organization_ids[0], federation.collaboration_id
    node = NodeUnderTest([start_node(federation.nodes[0])])
    process = node.processes[0]
    user = user_api(federation)
    task = user.create_task(collab, [org], SLEEP, sleep_input(600))
    (run_id,) = run_ids(admin, task)
    process.wait_for(f"run {run_id} (task {task['id']}) started")
    user.kill_task(task["id"])
    process.wait_for(f"killed run {run_id} of task {task['id']}")
    process.wait_for(f"run {run_id} reported: killed by user")
    # Gone while the node still runs, not only at its stop.
    until_containers_removed(docker_client, node.name)
    assert leftovers(docker_client, node.name)["containers"] == []
    runs = end_scenario(scenario, admin, collab, [node], docker_client)
    assert [run["status"] for run in runs] == ["killed by user"]


def test_a_task_killed_while_the_websocket_is_cut(real_server, admin, make_federation, start_node, user_api, docker_client):
    scenario = Scenario("running task killed while the websocket is cut")
    federation = make_federation(n_orgs=1)
    org, collab = federation.organization_ids[0], federation.collaboration_id
    user = user_api(federation)
    with TcpRelay(real_server.host, real_server.port) as relay:
        node = NodeUnderTest([start_node(federation.nodes[0], server_url=relay.url, port=relay.port)])
        process = node.processes[0]
        task = user.create_task(collab, [org], SLEEP, sleep_input(600))
        (run_id,) = run_ids(admin, task)
        process.wait_for(f"run {run_id} (task {task['id']}) started")
        mark = process.mark()
        relay.cut()
        process.wait_for("websocket disconnected", since=mark)
        # The server finishes the run at once; its kill_containers event reaches nobody.
        user.kill_task(task["id"])
        assert admin.run(run_id)["status"] == "killed by user"
        relay.restore()
        process.wait_for("websocket reconnected; synchronising", since=mark)
        process.wait_for(f"run {run_id} reported: killed by user", since=mark, timeout=30)
        until_containers_removed(docker_client, node.name)
        assert leftovers(docker_client, node.name)["containers"] == []
        runs = end_scenario(scenario, admin, collab, [node], docker_client)
    assert [run["status"] for run in runs] == ["killed by user"]


# A central run creates, through the node's proxy, one subtask for each organization, then
# sleeps; the subtask's runs sleep too. HOST, PORT, API_PATH and TOKEN_FILE come base32-encoded.
PARENT_AND_CHILDREN = r"""
if grep -q central "$INPUT_FILE"; then
  url="$(decode "$HOST"):$(decode "$PORT")$(decode "$API_PATH")/task"
  token=$(cat "$(decode "$TOKEN_FILE")")
  body='{"name": "child", "description": "", "image": "IMAGE", "collaboration_id": COLLAB, "databases": [], "organizations": ORGS}'
  timeout 20 wget -q -O- --header "Authorization: Bearer $token" --header "Content-Type: application/json" --post-data "$body" "$url" || exit 3
  echo "central: subtask created"
fi
echo "sleeping"
sleep 600 &
child=$!
trap 'kill "$child"; exit 143' TERM INT
wait "$child"
"""


def test_a_task_with_running_subtasks_killed_by_the_user(real_server, admin, make_federation, start_node, user_api, docker_client):
    scenario = Scenario("task with running subtasks killed (2 nodes)")
    federation = make_federation(n_orgs=2)
    collab, orgs = federation.collaboration_id, list(federation.organization_ids)
    child_input = base64.b64encode(json.dumps({"method": "partial"}).encode()).decode()
    script = (
        PARENT_AND_CHILDREN.replace("IMAGE", SHELL).replace("COLLAB", str(collab))
        .replace("ORGS", json.dumps([{"id": org, "input": child_input} for org in orgs]))
    )
    nodes = [NodeUnderTest([start_node(n, algorithm_env={"SCRIPT": script})]) for n in federation.nodes]
    user = user_api(federation)
    parent = user.create_task(collab, [orgs[0]], SHELL, {"method": "central"})
    (parent_run,) = run_ids(admin, parent)
    central = nodes[0].processes[0]
    central.wait_for(f"run {parent_run} (task {parent['id']}) started")
    # The other node has nothing to run but the subtask: its first start is the child's.
    nodes[1].processes[0].wait_until(lambda out: STARTED.search(out) is not None, "start the subtask's run")
    (child,) = admin.get("/task", parent_id=parent["id"])["data"]
    child_runs = {run["organization"]["id"]: run["id"] for run in admin.runs_of_task(child["id"])}
    for node, org in zip(nodes, orgs):
        node.processes[0].wait_for(f"run {child_runs[org]} (task {child['id']}) started")

    user.kill_task(parent["id"])
    central.wait_for(f"run {parent_run} reported: killed by user")
    for node, org in zip(nodes, orgs):
        node.processes[0].wait_for(f"run {child_runs[org]} reported: killed by user")
        until_containers_removed(docker_client, node.name)
        assert leftovers(docker_client, node.name)["containers"] == []
    runs = end_scenario(scenario, admin, collab, nodes, docker_client)
    assert len(runs) == 3 and {run["status"] for run in runs} == {"killed by user"}


# --- 4. dockerd restarts (a private engine: the machine's is never stopped) -----------------------
PROXY_HEALTH = 'timeout 10 wget -q -O "$OUTPUT_FILE" "$(decode "$HOST"):$(decode "$PORT")/health"'


@pytest.fixture(scope="module")
def private_engine(docker_client, test_images) -> Iterator[PrivateEngine]:
    """A dockerd of this module's own, with the test images copied from the machine engine;
    stopped and removed (data root, exec root, socket, bridges) after the module."""
    with running_private_engine([SLEEP, ECHO, SHELL], source=docker_client) as engine:
        yield engine


def test_dockerd_restarted_while_idle_and_while_a_run_is_active(real_server, admin, make_federation, start_node, user_api, private_engine):
    machine_pid = machine_engine_pid()
    # The machine engine's bridge: a private engine's restart once deleted it (see tests/rig/dockerd.py).
    machine_bridge = Path("/sys/class/net/docker0").exists()
    scenario = Scenario("dockerd restarted idle, then with a run active")
    federation = make_federation(n_orgs=1)
    org, collab = federation.organization_ids[0], federation.collaboration_id
    node = NodeUnderTest([start_node(
        federation.nodes[0], env={"DOCKER_HOST": private_engine.url},
        sync_interval=1, algorithm_env={"SCRIPT": PROXY_HEALTH},
    )])
    process = node.processes[0]
    user = user_api(federation)

    # Idle: the node's periodic sync finds the engine gone, and it carries on when it is back.
    mark = process.mark()
    private_engine.stop()
    try:
        process.wait_for("Docker engine cannot be reached", since=mark)
    finally:
        private_engine.start()
    after_idle = user.create_task(collab, [org], SHELL, {"method": "health"})
    (after_idle_run,) = run_ids(admin, after_idle)
    process.wait_for(f"run {after_idle_run} reported: completed", since=mark, timeout=90)

    # Active: the engine stops the algorithm's container when it shuts down. Depending on
    # whether the node's wait breaks off first or returns the exit code first, the log says
    # that the engine was away, or that a SIGTERM from outside ended the algorithm.
    active = user.create_task(collab, [org], SLEEP, sleep_input(600))
    (active_run,) = run_ids(admin, active)
    process.wait_for(f"run {active_run} (task {active['id']}) started")
    mark = process.mark()
    private_engine.restart()
    process.wait_for(f"run {active_run} reported:", since=mark, timeout=90)
    (stopped,) = admin.runs_of_task(active["id"])
    assert stopped["status"] == "crashed"
    # The engine stops its containers with SIGTERM (143) and, past its shutdown timeout (a loaded machine), SIGKILL (137).
    assert "Docker engine" in stopped["log"] and ("exit code 143" in stopped["log"] or "exit code 137" in stopped["log"])

    # And it goes on serving, its algorithms still reaching the proxy.
    later = user.create_task(collab, [org], SHELL, {"method": "health"})
    (later_run,) = run_ids(admin, later)
    process.wait_for(f"run {later_run} reported: completed", since=mark, timeout=90)
    assert process.running

    # Leftovers are looked for on the engine the node used.
    with contextlib.closing(private_engine.client()) as engine_docker:
        runs = end_scenario(scenario, admin, collab, [node], engine_docker)
    assert Counter(run["status"] for run in runs) == {"completed": 2, "crashed": 1}
    results = results_of(admin, collab)
    assert results[after_idle_run] == results[later_run] == {"status": "ok"}
    # The machine's engine ran throughout: the same process before and after.
    assert machine_pid is not None and machine_engine_pid() == machine_pid
    assert Path("/sys/class/net/docker0").exists() == machine_bridge


def test_a_run_started_while_dockerd_is_down_completes_once_it_is_back(real_server, admin, make_federation, start_node, user_api, private_engine):
    scenario = Scenario("dockerd down while a run is started")
    federation = make_federation(n_orgs=1)
    org, collab = federation.organization_ids[0], federation.collaboration_id
    node = NodeUnderTest([start_node(federation.nodes[0], env={"DOCKER_HOST": private_engine.url})])
    process = node.processes[0]
    user = user_api(federation)

    mark = process.mark()
    private_engine.stop()
    try:
        task = user.create_task(collab, [org], ECHO, {"method": "echo"})
        (run_id,) = run_ids(admin, task)
        # Its image and its temporary volume wait for the engine; the run does not end.
        process.wait_until(
            lambda out: re.search(rf"of run {run_id} failed \(.*Docker engine cannot be reached.*trying again", out) is not None,
            f"wait for the engine while starting run {run_id}", since=mark,
        )
        assert admin.runs_of_task(task["id"])[0]["finished_at"] is None
    finally:
        private_engine.start()
    process.wait_for(f"run {run_id} reported: completed", since=mark, timeout=90)

    with contextlib.closing(private_engine.client()) as engine_docker:
        runs = end_scenario(scenario, admin, collab, [node], engine_docker)
    assert [run["status"] for run in runs] == ["completed"]
    assert node.log_starts()[run_id] == 1
