"""The Node's use cases on the in-memory harness."""
import asyncio
import base64
import json

import attrs
import pytest
from v6node.adapters.memory.harness import MemoryNodeHarness, default_config
from v6node.app.set_up_encryption import EncryptionMismatch
from v6node.domain.config import AlgorithmLimits, PolicyConfig
from v6node.domain.errors import AuthenticationFailed, NodeError, RuntimeUnavailable, ServerRejected, ServerUnavailable
from v6node.domain.events import KillRequested, NewTask, SyncRequested, TokenExpired, TokenInvalid
from v6node.domain.journal import RunStep
from v6node.domain.status import RunStatus

IMAGE = "127.0.0.1:5999/echo-algo:1"


@pytest.fixture
async def harness():
    h = MemoryNodeHarness()
    h.runtime.add_image(IMAGE)
    async with h:
        yield h


def add_blocking_image(h, image):
    """An image whose algorithm runs until it is killed; returns the event it sets on starting."""
    started = asyncio.Event()

    async def forever(call):
        started.set()
        await asyncio.Event().wait()
        return 0

    h.runtime.add_image(image, forever)
    return started


async def start_blocking_run(h):
    """Give the running node a task whose algorithm runs until killed; returns once it runs."""
    started = add_blocking_image(h, "sleep:1")
    task = h.server.create_task("sleep:1")
    h.events.push(NewTask(task.id))
    await started.wait()
    return task


def statuses_emitted(h, run_id):
    return [data["status"] for name, data in h.events.emitted if name == "algorithm_status_change" and data["run_id"] == run_id]


async def run_one(h, image, *args, **task):
    """Create a task for our organization, announce it, and wait until its run ended."""
    created = h.server.create_task(image, *args, **task)
    h.events.push(NewTask(created.id))
    status = await h.until_run_finished(created.id)
    return status, h.server.our_run(created.id)


async def test_a_task_arriving_by_new_task_completes_with_the_output_as_result(harness):
    h = harness
    status, run = await run_one(h, IMAGE, {"method": "echo", "args": [1], "kwargs": {}})
    assert status == RunStatus.COMPLETED
    # The echo image writes its input back: the result is base64 of those bytes.
    assert json.loads(base64.b64decode(run.result)) == {"method": "echo", "args": [1], "kwargs": {}}
    assert run.log == "echo algorithm\n"
    assert run.started_at is not None and run.finished_at is not None
    assert [p.status for p in run.patches] == [None, RunStatus.ACTIVE, RunStatus.COMPLETED]
    await h.until(lambda: statuses_emitted(h, run.id) == ["active", "completed"])
    assert len(h.runtime.started) == 1
    entry = await h.journal.get(run.id)
    assert entry.step is RunStep.REPORTED and entry.container_starts == 1
    # Nothing left behind once reported.
    assert h.runtime.alive() == [] and h.workspace.folders == {}


async def test_a_task_arriving_by_sync_runs_and_details_are_shared(harness):
    h = harness
    task = h.server.create_task(IMAGE)
    h.events.push(SyncRequested())
    assert await h.until_run_finished(task.id) == RunStatus.COMPLETED
    await h.until(lambda: any(name == "node_info_update" for name, _ in h.events.emitted))
    details = next(data for name, data in h.events.emitted if name == "node_info_update")
    assert details["encryption"] is False
    assert details["allowed_algorithms"] == "all"
    assert details["database_labels"] == []


async def test_sync_and_new_task_together_start_the_run_once(harness):
    h = harness
    task = h.server.create_task(IMAGE)
    for _ in range(3):
        h.events.push(SyncRequested())
        h.events.push(NewTask(task.id))
    await h.until_run_finished(task.id)
    h.events.push(SyncRequested())
    await h.until(lambda: h.server.calls["list_open_runs"] >= 4)
    assert len(h.runtime.started) == 1
    assert h.server.calls["request_container_token"] == 1


async def test_a_run_of_another_organization_is_not_ours():
    h = MemoryNodeHarness()
    h.runtime.add_image(IMAGE)
    h.server.add_organization(2, "other")
    task = h.server.create_task(IMAGE, organization_ids=(1, 2))
    async with h:
        h.events.push(NewTask(task.id))
        await h.until_run_finished(task.id)
    other = next(r for r in h.server.runs_of(task.id) if r.organization_id == 2)
    assert other.status == RunStatus.PENDING and other.started_at is None
    assert len(h.runtime.started) == 1


async def test_a_crashing_algorithm_is_reported_crashed_with_its_log(harness):
    async def crash(call):
        call.log("crash-algo: failing on purpose")
        return 3

    h = harness
    h.runtime.add_image("crash:1", crash)
    status, run = await run_one(h, "crash:1")
    assert status == RunStatus.CRASHED
    assert "crash-algo: failing on purpose" in run.log
    assert run.result == ""


async def test_an_unknown_image_ends_as_non_existing_docker_image(harness):
    h = harness
    status, run = await run_one(h, "127.0.0.1:5999/does-not-exist:1")
    assert status == RunStatus.NON_EXISTING_IMAGE
    assert "127.0.0.1:5999/does-not-exist:1" in run.log
    assert h.runtime.started == []


async def test_a_local_image_is_not_used_when_a_pull_is_required():
    h = MemoryNodeHarness(default_config(policies=PolicyConfig(require_algorithm_pull=True)))
    h.runtime.add_image(IMAGE)
    async with h:
        status, run = await run_one(h, IMAGE)
        assert status == RunStatus.NON_EXISTING_IMAGE
    assert "require_algorithm_pull" in run.log
    assert h.runtime.started == []


async def test_a_denied_image_is_not_allowed_never_started_and_finished():
    policies = PolicyConfig(allowed_algorithms=("^127\\.0\\.0\\.1:5999/approved-.*",), require_algorithm_pull=False)
    h = MemoryNodeHarness(default_config(policies=policies))
    h.runtime.add_image(IMAGE)
    async with h:
        status, run = await run_one(h, IMAGE)
        assert status == RunStatus.NOT_ALLOWED
    assert "allowed_algorithms" in run.log
    assert run.finished_at is not None
    assert h.runtime.started == []
    assert h.server.calls["request_container_token"] == 0


async def test_input_that_is_not_base64_fails_the_run_and_never_reaches_the_algorithm(harness):
    h = harness
    status, run = await run_one(h, IMAGE, input="this is not base64!!")
    assert status == RunStatus.FAILED
    assert "input could not be decoded" in run.log
    assert h.runtime.started == []


async def test_no_container_token_fails_the_run_with_the_reason(harness):
    h = harness
    h.server.fail_next("request_container_token", ServerRejected(401, "Image and task do no match"))
    task = h.server.create_task(IMAGE)
    h.events.push(NewTask(task.id))
    assert await h.until_run_finished(task.id) == RunStatus.FAILED
    log = h.server.our_run(task.id).log
    assert "Could not obtain algorithm container token" in log and "Image and task do no match" in log


async def test_an_engine_that_cannot_start_the_container_gives_start_failed(harness):
    h = harness
    h.runtime.fail_start.add(IMAGE)
    status, run = await run_one(h, IMAGE)
    assert status == RunStatus.START_FAILED
    assert "could not be started" in run.log


async def test_a_bad_algorithm_env_name_fails_the_run():
    h = MemoryNodeHarness(default_config(algorithm_env={"PKG_NAME": "evil"}, policies=PolicyConfig(require_algorithm_pull=False)))
    h.runtime.add_image(IMAGE)
    async with h:
        status, run = await run_one(h, IMAGE)
        assert status == RunStatus.FAILED
    assert "PKG_NAME" in run.log
    assert h.runtime.started == []


async def test_an_algorithm_without_output_file_fails(harness):
    async def no_output(call):
        call.write_output(None)
        return 0

    h = harness
    h.runtime.add_image("noout:1", no_output)
    status, run = await run_one(h, "noout:1")
    assert status == RunStatus.FAILED
    assert "wrote no output file" in run.log


async def test_an_output_past_the_limit_fails_with_the_reason():
    async def big(call):
        call.write_output(b"x" * 2048)
        return 0

    h = MemoryNodeHarness(default_config(max_output_size=1024, policies=PolicyConfig(require_algorithm_pull=False)))
    h.runtime.add_image("big:1", big)
    async with h:
        status, run = await run_one(h, "big:1")
        assert status == RunStatus.FAILED
    assert "more than the limit of 1024" in run.log


async def test_algorithm_gets_the_proxy_address_and_its_files(harness):
    h = harness
    seen = {}

    async def inspect(call):
        seen.update(call.env)
        seen["token"] = h.workspace.folders[call.run_id].token
        call.write_output(b"{}")
        return 0

    h.runtime.add_image("inspect:1", inspect)
    task = h.server.create_task("inspect:1")
    h.events.push(NewTask(task.id))
    await h.until_run_finished(task.id)
    run_id = h.server.our_run(task.id).id
    assert seen["HOST"] == f"http://{h.runtime.gateway}"
    assert seen["PORT"] == str(h.proxy.port)
    assert seen["INPUT_FILE"] == f"/mnt/data/task-{run_id:09d}/input"
    assert seen["token"] == f"container-token-{task.id}"
    assert h.proxy.host == h.runtime.gateway
    # The proxy accepted the run's token only while it ran.
    assert h.proxy.ever_authorized == [f"container-token-{task.id}"]
    await h.until(lambda: h.proxy.tokens == set())


async def test_ten_tasks_at_once_all_complete(harness):
    h = harness
    tasks = [h.server.create_task(IMAGE) for _ in range(10)]
    for task in tasks:
        h.events.push(NewTask(task.id))
    for task in tasks:
        assert await h.until_run_finished(task.id) == RunStatus.COMPLETED
    assert len(h.runtime.started) == 10


async def test_concurrency_is_bounded_by_max_concurrent_runs():
    release = asyncio.Event()
    running = []
    peak = 0

    async def blocking(call):
        nonlocal peak
        running.append(call.run_id)
        peak = max(peak, len(running))
        await release.wait()
        running.remove(call.run_id)
        call.write_output(b"1")
        return 0

    h = MemoryNodeHarness(default_config(max_concurrent_runs=2, policies=PolicyConfig(require_algorithm_pull=False)))
    h.runtime.add_image("block:1", blocking)
    async with h:
        tasks = [h.server.create_task("block:1") for _ in range(5)]
        h.events.push(SyncRequested())
        await h.until(lambda: len(running) == 2)
        await asyncio.sleep(0)
        assert len(running) == 2
        release.set()
        for task in tasks:
            assert await h.until_run_finished(task.id) == RunStatus.COMPLETED
    assert peak == 2


async def test_a_killed_run_is_reported_killed_not_crashed_and_its_container_removed(harness):
    h = harness
    task = await start_blocking_run(h)
    run = h.server.our_run(task.id)
    order = h.server.kill_task(task.id, h.clock.now())  # the server finishes the run itself
    h.events.push(KillRequested(order))
    await h.until(lambda: h.runtime.alive() == [])
    await h.until(lambda: statuses_emitted(h, run.id)[-1:] == ["killed by user"])
    assert run.status == RunStatus.KILLED
    entry = await h.journal.get(run.id)
    assert entry.step is RunStep.REPORTED and entry.status is RunStatus.KILLED


async def test_kill_orders_for_other_collaborations_or_orgs_are_ignored(harness):
    from v6node.domain.kill import KillOrder, KillTarget

    h = harness
    task = await start_blocking_run(h)
    run_id = h.server.our_run(task.id).id
    assert await h.node.kill_containers(KillOrder(collaboration_id=99, targets=(KillTarget(run_id, task.id, 1),))) == []
    assert await h.node.kill_containers(KillOrder(collaboration_id=1, targets=(KillTarget(run_id, task.id, 2),))) == []
    assert await h.node.kill_containers(KillOrder(collaboration_id=1, node_id=999, node_wide=True)) == []
    assert len(h.runtime.alive()) == 1
    assert await h.node.kill_containers(KillOrder(collaboration_id=1, targets=())) == []  # empty list: nothing
    killed = await h.node.kill_containers(KillOrder(collaboration_id=1, node_id=h.server.identity.node_id, node_wide=True))
    assert [(k.run_id, k.task_id) for k in killed] == [(run_id, task.id)]
    # A node-wide kill is not marked by the server; the node finishes the run itself.
    assert await h.until_run_finished(task.id) == RunStatus.KILLED


async def test_the_result_survives_a_server_outage_while_reporting(harness):
    h = harness
    task = h.server.create_task(IMAGE)
    down = ServerUnavailable("connection refused")
    # started + active go through; the final report meets a server that is down twice.
    original = h.server.update_run
    calls = 0

    async def flaky(run_id, update):
        nonlocal calls
        calls += 1
        if update.finished_at is not None and calls <= 4:
            raise down
        await original(run_id, update)

    h.server.update_run = flaky
    h.events.push(NewTask(task.id))
    await h.until(lambda: h.clock.sleepers >= 1 and calls >= 3)
    for _ in range(10):  # each backoff sleep is at most 30 s; a few suffice
        if calls > 4:
            break
        await h.clock.advance(30)
    # The accepted report streams the result (through a thread) before it is stored.
    assert await h.until_run_finished(task.id) == RunStatus.COMPLETED
    assert len(h.runtime.started) == 1


async def test_stop_removes_every_container_and_network_of_the_node():
    h = MemoryNodeHarness()
    await h.start()
    await start_blocking_run(h)
    assert h.runtime.networks
    await h.stop()
    assert h.runtime.alive() == []
    assert h.runtime.networks == {} and h.runtime.volumes == {}
    assert h.events.closed
    assert not h.proxy.running


async def test_wrong_api_key_is_fatal_and_not_retried():
    h = MemoryNodeHarness()
    h.server.accepted_api_key = "another key"
    with pytest.raises(AuthenticationFailed):
        await h.start()
    assert h.server.calls["authenticate"] == 1


async def test_login_is_retried_while_the_server_is_down():
    h = MemoryNodeHarness()
    h.server.fail_next("authenticate", ServerUnavailable("connection refused"), times=3)
    start = asyncio.create_task(h.start())
    for _ in range(3):
        await h.until(lambda: h.clock.sleepers == 1)
        await h.clock.advance(30)
    await start
    assert h.server.calls["authenticate"] == 4
    await h.stop()


async def test_encryption_mismatch_refuses_to_start_and_says_how_to_fix():
    h = MemoryNodeHarness(encrypted=True)
    with pytest.raises(EncryptionMismatch) as info:
        await h.start()
    message = str(info.value)
    assert "is encrypted on the server" in message
    assert "encryption.enabled: false" in message
    assert "Set encryption.enabled to true" in message


async def test_expired_token_refreshes_and_reconnects_with_the_new_token(harness):
    h = harness
    first = h.events.tokens[-1]
    h.events.push(TokenExpired())
    await h.until(lambda: h.events.reconnects == 1)
    assert h.server.calls["renew_token"] == 1
    await h.until(lambda: len(h.events.tokens) == 2)
    assert h.events.tokens[-1] != first


async def test_invalid_token_logs_in_again_and_reconnects(harness):
    h = harness
    h.events.push(TokenInvalid())
    await h.until(lambda: h.events.reconnects == 1)
    assert h.server.calls["authenticate"] == 2


async def test_a_reconnect_triggers_a_resync(harness):
    h = harness
    task = h.server.create_task(IMAGE)
    h.events.drop("network glitch")
    assert await h.until_run_finished(task.id) == RunStatus.COMPLETED


async def test_heartbeat_pings_every_30_seconds(harness):
    h = harness
    await h.clock.advance(30)
    await h.clock.advance(30)
    # One ping on connecting, then one every 30 s.
    assert [name for name, _ in h.events.emitted].count("ping") == 3


async def test_the_access_token_is_refreshed_before_it_expires():
    h = MemoryNodeHarness()
    h.server.token_lifetime = 3600
    async with h:
        assert h.server.calls["renew_token"] == 0
        await h.clock.advance(3600 - 600 + 1)
        await h.until(lambda: h.server.calls["renew_token"] == 1)


async def test_periodic_sync_picks_up_runs_whose_event_was_lost(harness):
    h = harness
    task = h.server.create_task(IMAGE)  # no new_task event arrives
    await h.clock.advance(300)  # sync_interval's default
    assert await h.until_run_finished(task.id) == RunStatus.COMPLETED


async def test_the_periodic_sync_follows_sync_interval():
    h = MemoryNodeHarness(default_config(sync_interval=20))
    h.runtime.add_image(IMAGE)
    async with h:
        task = h.server.create_task(IMAGE)  # no new_task event arrives
        await h.clock.advance(19)
        for _ in range(20):
            await asyncio.sleep(0)
        assert h.server.calls["list_open_runs"] == 0
        await h.clock.advance(1)
        assert await h.until_run_finished(task.id) == RunStatus.COMPLETED


async def test_logs_are_withheld_when_sharing_is_off():
    h = MemoryNodeHarness(default_config(share_algorithm_logs=False, policies=PolicyConfig(require_algorithm_pull=False)))
    h.runtime.add_image(IMAGE)
    async with h:
        task = h.server.create_task(IMAGE)
        h.events.push(NewTask(task.id))
        await h.until_run_finished(task.id)
    assert h.server.our_run(task.id).log == "Node does not allow sharing algorithm logs"


async def test_share_config_false_sends_no_node_details():
    h = MemoryNodeHarness(default_config(share_config=False))
    async with h:
        h.events.push(SyncRequested())
        await h.until(lambda: h.server.calls["list_open_runs"] == 1)
        await asyncio.sleep(0)
    assert not any(name == "node_info_update" for name, _ in h.events.emitted)


def test_private_key_filename_is_relative_to_the_data_folder():
    from v6node.app.node import Node

    h = MemoryNodeHarness(default_config(data_dir="/srv/node"))
    assert h.node.private_key_filename() == "/srv/node/private_key.pem"
    h2 = MemoryNodeHarness(default_config(data_dir="/srv/node", private_key="/keys/k.pem"))
    assert h2.node.private_key_filename() == "/keys/k.pem"
    assert isinstance(h.node, Node)


async def test_a_run_finished_on_the_server_while_starting_is_stopped_and_not_reported(harness):
    from v6node.domain.errors import RunAlreadyFinished

    h = harness
    add_blocking_image(h, "sleep:1")
    h.server.fail_next("update_run", RunAlreadyFinished(400, "Cannot update an already finished algorithm run!"))
    task = h.server.create_task("sleep:1")
    h.events.push(NewTask(task.id))
    run = h.server.our_run(task.id)
    await h.until(lambda: len(h.runtime.started) == 1 and h.runtime.alive() == [])
    entry = await h.journal.get(run.id)
    await h.until(lambda: h.workspace.folders == {})
    assert run.patches == []  # only the refused start PATCH was tried
    assert statuses_emitted(h, run.id) == []
    assert entry.step is RunStep.REPORTED


async def test_a_database_the_node_lacks_fails_the_run_and_lists_what_it_has():
    from v6node.domain.config import DatabaseConfig
    from v6node.domain.model import RequestedDatabase

    dbs = (DatabaseConfig(label="default", uri="/data/a.csv"), DatabaseConfig(label="omop", uri="pg://x", type="sql"))
    h = MemoryNodeHarness(default_config(databases=dbs, policies=PolicyConfig(require_algorithm_pull=False)))
    h.runtime.add_image(IMAGE)
    async with h:
        status, run = await run_one(h, IMAGE, databases=(RequestedDatabase("imaging"),))
    assert status == RunStatus.FAILED
    assert "imaging" in run.log and "configured: default, omop" in run.log
    assert h.runtime.started == []


async def test_input_that_is_not_json_fails_before_the_algorithm(harness):
    import base64 as b64

    status, run = await run_one(harness, IMAGE, input=b64.b64encode(b"not json at all").decode())
    assert status == RunStatus.FAILED
    assert "input is not JSON" in run.log
    assert harness.runtime.started == []


async def test_copy_mode_databases_are_copied_into_the_runs_own_folder():
    from v6node.domain.config import DatabaseConfig

    dbs = (
        DatabaseConfig(label="default", uri="/data/a.csv", mount_mode="copy"),
        DatabaseConfig(label="ro_db", uri="/data/b.csv"),
    )
    seen = {}

    async def inspect(call):
        seen.update(call.env)
        seen["copies"] = dict(h.workspace.folders[call.run_id].copies)
        seen["mounts"] = [(m.source, m.target, m.read_only) for m in call.spec.mounts]
        call.write_output(b"{}")
        return 0

    h = MemoryNodeHarness(default_config(databases=dbs, policies=PolicyConfig(require_algorithm_pull=False)))
    h.runtime.add_image("inspect:1", inspect)
    async with h:
        status, run = await run_one(h, "inspect:1")
    assert status == RunStatus.COMPLETED
    assert seen["copies"] == {"databases/default.csv": "/data/a.csv"}
    assert seen["DEFAULT_DATABASE_URI"] == f"/mnt/data/task-{run.id:09d}/databases/default.csv"
    assert seen["RO_DB_DATABASE_URI"] == "/mnt/ro_db.csv"
    assert ("/data/b.csv", "/mnt/ro_db.csv", True) in seen["mounts"]
    assert not any(source == "/data/a.csv" for source, _, _ in seen["mounts"])


async def test_run_context_file_is_written_when_asked():
    import json as js

    from v6node.domain.config import DatabaseConfig
    from v6node.domain.model import RequestedDatabase

    seen = {}

    async def inspect(call):
        seen["file"] = js.loads(h.workspace.folders[call.run_id].files["run_context.json"])
        seen["env"] = call.spec.environment["RUN_CONTEXT_FILE"]
        call.write_output(b"{}")
        return 0

    dbs = (DatabaseConfig(label="default", uri="/data/a.csv"),)
    h = MemoryNodeHarness(default_config(databases=dbs, run_context_file=True, policies=PolicyConfig(require_algorithm_pull=False)))
    h.runtime.add_image("inspect:1", inspect)
    async with h:
        status, run = await run_one(
            h, "inspect:1", input={"method": "avg", "args": [1], "kwargs": {"c": "age"}}, databases=(RequestedDatabase("default"),)
        )
    assert status == RunStatus.COMPLETED
    folder = f"/mnt/data/task-{run.id:09d}"
    assert seen["env"] == f"{folder}/run_context.json"  # not base32-encoded
    context = seen["file"]
    assert context["entrypoint"] == {"name": "avg"}
    assert context["arguments"] == {"positional": [1], "named": {"c": "age"}}
    assert context["inputs"] == [{"id": "default", "uri": "/mnt/default.csv", "type": "csv"}]
    assert context["executor"] == {"id": h.server.identity.node_id, "kind": "vantage6-node"}
    assert context["x-vantage6"]["token_file"] == f"{folder}/token"


async def test_an_algorithm_past_its_time_limit_is_stopped_and_fails_with_the_reason():
    from v6node.domain.config import AlgorithmLimits

    h = MemoryNodeHarness(default_config(limits=AlgorithmLimits(seconds=60), policies=PolicyConfig(require_algorithm_pull=False)))
    async with h:
        task = await start_blocking_run(h)
        await h.clock.advance(61)
        assert await h.until_run_finished(task.id) == RunStatus.FAILED
    assert "stopped after 60 s (algorithm_time_limit)" in h.server.our_run(task.id).log
    assert h.runtime.alive() == []


async def test_an_out_of_memory_kill_says_so():
    from v6node.domain.config import AlgorithmLimits

    async def hungry(call):
        call.oom_killed = True
        return 137

    h = MemoryNodeHarness(default_config(limits=AlgorithmLimits(memory=64 * 1024 * 1024), policies=PolicyConfig(require_algorithm_pull=False)))
    h.runtime.add_image("hungry:1", hungry)
    async with h:
        status, run = await run_one(h, "hungry:1")
    assert status == RunStatus.FAILED
    assert "ran out of memory of 67108864 bytes (algorithm_memory)" in run.log
    assert h.runtime.started[0].mem_limit == 64 * 1024 * 1024


async def test_start_checks_that_algorithms_reach_the_proxy():
    async def probe(call):
        assert call.spec.command[-1].endswith(f"http://{h.runtime.gateway}:{h.proxy.port}/health")
        call.log('{"status": "ok"}')
        return 0

    h = MemoryNodeHarness(default_config(proxy_check_image="probe:1"))
    h.runtime.add_image("probe:1", probe)
    async with h:
        assert [spec.name for spec in h.runtime.started] == ["vantage6-memnode-proxy-check"]
        assert h.runtime.alive() == []


async def test_a_check_image_that_is_not_local_is_never_pulled_and_the_ready_line_says_so(caplog):
    caplog.set_level("INFO", logger="v6node")
    h = MemoryNodeHarness(default_config(proxy_check_image="busybox:stable"))
    async with h:
        pass
    assert h.runtime.pull_attempts == [] and h.runtime.started == []
    assert "proxy reachability check skipped: the image busybox:stable is not present locally" in caplog.text
    assert "(reachability not checked: busybox:stable is not present locally)" in caplog.text


async def test_the_ready_line_says_the_proxy_was_checked(caplog):
    caplog.set_level("INFO", logger="v6node")

    async def probe(call):
        call.log('{"status": "ok"}')
        return 0

    h = MemoryNodeHarness(default_config(proxy_check_image="probe:1"))
    h.runtime.add_image("probe:1", probe)
    async with h:
        pass
    assert h.runtime.pull_attempts == []
    assert "ready; algorithm proxy at " in caplog.text
    assert "(reachable from a container on the algorithm network)" in caplog.text


async def test_start_fails_clearly_when_algorithms_cannot_reach_the_proxy():
    async def unreachable(call):
        call.log("wget: can't connect to remote host: Connection refused")
        return 1

    h = MemoryNodeHarness(default_config(proxy_check_image="probe:1"))
    h.runtime.add_image("probe:1", unreachable)
    with pytest.raises(NodeError, match="cannot reach the node's proxy") as info:
        await h.start()
    assert "Connection refused" in str(info.value)
    assert h.runtime.alive() == []


def encrypted_harness(**changes):
    h = MemoryNodeHarness(default_config(encryption_enabled=True, **changes), encrypted=True)
    h.runtime.add_image(IMAGE)
    return h


async def test_an_encrypted_run_decrypts_its_input_and_encrypts_the_result_for_the_initiator():
    import json as js

    from v6node.adapters.crypto.rsa_cryptor import RsaCryptor
    from v6node.adapters.memory.harness import test_private_key

    ours = RsaCryptor(test_private_key())
    h = encrypted_harness()
    async with h:
        org = h.server.organizations[h.server.identity.organization_id]
        assert org.public_key == ours.own_public_key()  # uploaded at start
        task_input = {"method": "echo", "kwargs": {"x": 1}}
        secret = ours.encrypt_to_str(js.dumps(task_input).encode(), org.public_key)
        status, run = await run_one(h, IMAGE, input=secret)
    assert status == RunStatus.COMPLETED
    assert run.result.count("$") == 2
    assert js.loads(ours.decrypt_str(run.result)) == task_input


async def test_an_encrypted_input_for_another_key_fails_the_run():
    from v6node.adapters.crypto.rsa_cryptor import RsaCryptor, create_private_key_pem

    other = RsaCryptor(create_private_key_pem(2048))
    h = encrypted_harness()
    async with h:
        secret = other.encrypt_to_str(b'{"method": "echo"}', other.own_public_key())
        status, run = await run_one(h, IMAGE, input=secret)
    assert status == RunStatus.FAILED
    # Usually the key does not unwrap; rarely (AES-CTR has no integrity check) it decrypts to noise.
    assert "could not be decrypted for this organization" in run.log or "encrypted for another organization's key" in run.log
    assert h.runtime.started == []


async def test_the_public_key_is_only_uploaded_when_the_server_lacks_it_or_has_another():
    from v6node.adapters.crypto.rsa_cryptor import RsaCryptor
    from v6node.adapters.memory.harness import test_private_key

    h = encrypted_harness()
    org_id = h.server.identity.organization_id
    h.server.add_organization(org_id, "org-1", RsaCryptor(test_private_key()).own_public_key())
    async with h:
        pass
    assert h.server.calls["set_organization_public_key"] == 0
    h2 = encrypted_harness()
    h2.server.add_organization(org_id, "org-1", "bm90IGEga2V5")  # some other value
    async with h2:
        pass
    assert h2.server.calls["set_organization_public_key"] == 1


async def test_results_for_another_initiator_use_its_public_key_and_are_cached():
    from v6node.adapters.crypto.rsa_cryptor import RsaCryptor, create_private_key_pem

    initiator = RsaCryptor(create_private_key_pem(2048))
    h = encrypted_harness()
    h.server.add_organization(7, "initiator", initiator.own_public_key())
    async with h:
        ours = h.server.organizations[h.server.identity.organization_id].public_key
        results = []
        for i in range(3):
            secret = initiator.encrypt_to_str(b'{"method": "echo", "kwargs": {"i": %d}}' % i, ours)
            status, run = await run_one(h, IMAGE, input=secret, init_org_id=7)
            assert status == RunStatus.COMPLETED
            results.append(initiator.decrypt_str(run.result))
    assert [r.endswith(b"%d}}" % i) for i, r in enumerate(results)] == [True, True, True]
    # One lookup of the initiator's key for three runs (start-up read our own org once).
    assert h.server.calls["get_organization"] == 2


# --- restarts and reconciliation --------------------------------------------------------
async def crash_while_running(h, image, running):
    """Start the node, give it a task, and kill it (no clean-up) once ``running()`` returns."""
    await h.start()
    task = h.server.create_task(image)
    h.events.push(NewTask(task.id))
    await running()
    await h.crash()
    return task


async def test_a_run_whose_container_survived_a_crash_is_waited_for_again_not_rerun():
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(call):
        started.set()
        await release.wait()
        call.write_output(b'{"done": true}')
        return 0

    h = MemoryNodeHarness()
    h.runtime.add_image("slow:1", slow)
    task = await crash_while_running(h, "slow:1", started.wait)
    run = h.server.our_run(task.id)
    assert run.finished_at is None and len(h.runtime.alive()) == 1

    h2 = h.restarted()
    async with h2:
        h2.events.push(SyncRequested())
        await h2.until(lambda: run.id in h2.node.active._runs)  # noqa: SLF001
        # While it runs again under the new process, its token is accepted by the proxy.
        assert h2.proxy.tokens == {f"container-token-{task.id}"}
        release.set()
        assert await h2.until_run_finished(task.id) == RunStatus.COMPLETED
    assert json.loads(base64.b64decode(run.result)) == {"done": True}
    entry = await h2.journal.get(run.id)
    assert entry.container_starts == 1 and len(h2.runtime.started) == 1


async def test_a_run_that_exited_while_the_node_was_down_is_reported_not_rerun():
    release = asyncio.Event()

    async def short(call):
        await release.wait()
        call.write_output(b'{"answer": 42}')
        return 0

    h = MemoryNodeHarness()
    h.runtime.add_image("short:1", short)
    task = await crash_while_running(h, "short:1", lambda: h.until(lambda: len(h.runtime.started) == 1))
    release.set()
    await h.until(lambda: not h.runtime.alive()[0].running)

    h2 = h.restarted()
    async with h2:
        h2.events.push(SyncRequested())
        assert await h2.until_run_finished(task.id) == RunStatus.COMPLETED
    run = h.server.our_run(task.id)
    assert json.loads(base64.b64decode(run.result)) == {"answer": 42}
    assert len(h2.runtime.started) == 1 and h2.runtime.alive() == []


async def test_a_run_the_node_lost_is_failed_with_a_log_not_rerun():
    h = MemoryNodeHarness()
    started = add_blocking_image(h, "sleep:1")
    task = await crash_while_running(h, "sleep:1", started.wait)
    # The container and the task folder vanish while the node is down.
    for container in h.runtime.alive():
        await h.runtime.remove(container.id)
    h.workspace.folders.clear()

    h2 = h.restarted()
    async with h2:
        h2.events.push(SyncRequested())
        assert await h2.until_run_finished(task.id) == RunStatus.FAILED
    run = h.server.our_run(task.id)
    assert "lost" in run.log
    assert len(h2.runtime.started) == 1  # never started again


async def test_a_run_received_but_never_started_is_started_after_a_restart():
    h = MemoryNodeHarness(default_config(max_concurrent_runs=1, policies=PolicyConfig(require_algorithm_pull=False)))
    started = add_blocking_image(h, "sleep:1")
    h.runtime.add_image(IMAGE)
    await h.start()
    first = h.server.create_task("sleep:1")
    second = h.server.create_task(IMAGE)
    h.events.push(NewTask(first.id))
    await started.wait()
    h.events.push(NewTask(second.id))  # queued behind the first: received, never started
    await h.until(lambda: h.server.calls["list_open_runs"] >= 2)
    await asyncio.sleep(0)
    await h.crash()

    # The first run is waited for again and takes one executor; give the second its own.
    h2 = h.restarted(attrs.evolve(h.config, max_concurrent_runs=2))
    async with h2:
        h2.events.push(SyncRequested())
        assert await h2.until_run_finished(second.id) == RunStatus.COMPLETED
    assert [spec.image for spec in h2.runtime.started].count(IMAGE) == 1


async def test_leftover_containers_and_folders_of_finished_runs_are_removed_at_start():
    h = MemoryNodeHarness()
    started = add_blocking_image(h, "sleep:1")
    task = await crash_while_running(h, "sleep:1", started.wait)
    h.server.kill_task(task.id, h.clock.now())  # finished on the server while the node was down

    h2 = h.restarted()
    async with h2:
        h2.events.push(SyncRequested())
        await h2.until(lambda: h2.runtime.alive() == [] and h2.workspace.folders == {})


async def test_a_graceful_stop_reports_the_running_runs_as_failed():
    h = MemoryNodeHarness()
    await h.start()
    task = await start_blocking_run(h)
    await h.stop()
    run = h.server.our_run(task.id)
    assert run.status == RunStatus.FAILED and run.finished_at is not None
    assert "the node was stopped" in run.log and "not started again" in run.log
    assert h.runtime.alive() == []


async def test_a_jobs_temporary_volume_is_removed_once_the_job_is_finished(harness):
    h = harness
    task = h.server.create_task(IMAGE)
    h.events.push(NewTask(task.id))
    await h.until_run_finished(task.id)
    await h.until(lambda: not any(name.endswith(f"-{task.job_id}-tmpvol") for name in h.runtime.volumes))


async def test_keep_task_folders_keeps_folders_and_volumes():
    h = MemoryNodeHarness(default_config(keep_task_folders=True, policies=PolicyConfig(require_algorithm_pull=False)))
    h.runtime.add_image(IMAGE)
    async with h:
        task = h.server.create_task(IMAGE)
        h.events.push(NewTask(task.id))
        await h.until_run_finished(task.id)
        await asyncio.sleep(0)
        assert h.server.our_run(task.id).id in h.workspace.folders
        assert any(name.endswith(f"-{task.job_id}-tmpvol") for name in h.runtime.volumes)


async def test_registry_logins_are_tried_and_a_refusal_does_not_stop_the_node():
    from v6node.domain.config import RegistryLogin

    registries = (RegistryLogin("registry.a.org", "alice", "pw"), RegistryLogin("registry.b.org", "bob", "pw"))
    h = MemoryNodeHarness(default_config(docker_registries=registries))
    h.runtime.refused_registries.add("registry.a.org")
    async with h:
        assert h.node.connected.is_set()
    assert h.runtime.logins == [("registry.b.org", "bob")]


# --- faults found by the e2e fault-injection suite ------------------------------------------------
async def test_a_stop_during_the_clean_up_of_a_reported_run_does_not_report_it_again():
    h = MemoryNodeHarness()
    h.runtime.add_image(IMAGE)
    await h.start()
    removing = asyncio.Event()
    remove = h.runtime.remove

    async def slow_remove(container_id):
        removing.set()
        await asyncio.Event().wait()  # the engine takes its time; the node is stopped meanwhile

    h.runtime.remove = slow_remove
    task = h.server.create_task(IMAGE)
    h.events.push(NewTask(task.id))
    await removing.wait()
    run = h.server.our_run(task.id)
    assert run.status == RunStatus.COMPLETED
    h.runtime.remove = remove
    await h.stop()
    # Not "failed: the node was stopped while it ran": it had ended and was reported.
    assert [p.status for p in run.patches] == [None, RunStatus.ACTIVE, RunStatus.COMPLETED]
    assert h.server.calls["update_run"] == 3
    entry = await h.journal.get(run.id)
    assert entry.status is RunStatus.COMPLETED
    assert h.runtime.alive() == []


async def test_finished_jobs_are_looked_up_once_each_however_many_executors_finish_together():
    h = MemoryNodeHarness()
    h.runtime.add_image(IMAGE)
    get_task = h.server.get_task

    async def slow_get_task(task_id):
        for _ in range(5):  # a real server answers later; other executors run meanwhile
            await asyncio.sleep(0)
        return await get_task(task_id)

    h.server.get_task = slow_get_task
    async with h:
        tasks = [h.server.create_task(IMAGE) for _ in range(8)]
        for task in tasks:
            h.events.push(NewTask(task.id))
        for task in tasks:
            await h.until_run_finished(task.id)
        await h.until(lambda: not any(name.endswith("-tmpvol") for name in h.runtime.volumes))
    # One look-up per job, not one per job for every executor that finished meanwhile.
    assert h.server.calls["get_task"] == len(tasks)


def add_image_stopped_by_sigterm(h, image):
    """An image that runs until SIGTERM (exit 143); returns (started, sigterm) events."""
    started, sigterm = asyncio.Event(), asyncio.Event()

    async def until_sigterm(call):
        started.set()
        call.log("sleeping")
        await sigterm.wait()
        return 143

    h.runtime.add_image(image, until_sigterm)
    return started, sigterm


def engine_that_can_go_away(h):
    """Lets the test take the memory engine away: calls fail as when dockerd is down, and open
    waits break off. Returns the event that breaks the waits; ``h.runtime.available`` is the switch."""
    gone = asyncio.Event()
    wait, ensure_image = h.runtime.wait, h.runtime.ensure_image

    def check() -> None:
        if not h.runtime.available:
            raise RuntimeUnavailable("the Docker engine cannot be reached (memory engine switched off)")

    async def breakable_wait(container_id):
        check()
        waiting = asyncio.ensure_future(wait(container_id))
        breaking = asyncio.ensure_future(gone.wait())
        done, _ = await asyncio.wait({waiting, breaking}, return_when=asyncio.FIRST_COMPLETED)
        if waiting in done:
            breaking.cancel()
            return waiting.result()
        waiting.cancel()
        raise RuntimeUnavailable("waiting for the container: the Docker engine cannot be reached")

    async def checked_ensure_image(image, require_pull):
        check()
        return await ensure_image(image, require_pull)

    h.runtime.wait, h.runtime.ensure_image = breakable_wait, checked_ensure_image
    return gone


async def test_a_docker_engine_restart_during_a_run_ends_it_crashed_saying_so_and_the_node_goes_on():
    # No time limit: its timer would be one more sleeper in the count below.
    h = MemoryNodeHarness(default_config(limits=AlgorithmLimits(seconds=None)))
    started, sigterm = add_image_stopped_by_sigterm(h, "sleep:1")
    h.runtime.add_image(IMAGE)
    gone = engine_that_can_go_away(h)
    async with h:
        task = h.server.create_task("sleep:1")
        h.events.push(NewTask(task.id))
        await started.wait()
        # dockerd stops: the node's wait breaks off, and the engine SIGTERMs the container.
        asleep = h.clock.sleepers  # the node's own loops
        h.runtime.available = False
        gone.set()
        await h.until(lambda: h.clock.sleepers > asleep)  # the node waits for the engine, it does not give up
        sigterm.set()
        assert h.server.our_run(task.id).finished_at is None
        gone.clear()
        h.runtime.available = True
        await h.clock.advance(1)
        assert await h.until_run_finished(task.id) == RunStatus.CRASHED
        run = h.server.our_run(task.id)
        assert "sleeping" in run.log
        assert "the Docker engine could not be reached" in run.log and "exit code 143 (SIGTERM)" in run.log
        # And it goes on serving.
        later = h.server.create_task(IMAGE)
        h.events.push(NewTask(later.id))
        assert await h.until_run_finished(later.id) == RunStatus.COMPLETED
    assert [spec.image for spec in h.runtime.started] == ["sleep:1", IMAGE]


async def test_a_run_that_arrives_while_the_docker_engine_is_away_starts_when_it_is_back():
    h = MemoryNodeHarness()
    h.runtime.add_image(IMAGE)
    engine_that_can_go_away(h)
    async with h:
        asleep = h.clock.sleepers  # the node's own loops
        h.runtime.available = False
        task = h.server.create_task(IMAGE)
        h.events.push(NewTask(task.id))
        await h.until(lambda: h.clock.sleepers > asleep)
        assert h.runtime.started == []
        h.runtime.available = True
        await h.clock.advance(1)
        assert await h.until_run_finished(task.id) == RunStatus.COMPLETED
    assert len(h.runtime.started) == 1


async def test_an_algorithm_stopped_from_outside_the_node_says_so_but_a_kill_does_not(harness):
    h = harness
    started, sigterm = add_image_stopped_by_sigterm(h, "sleep:1")
    task = h.server.create_task("sleep:1")
    h.events.push(NewTask(task.id))
    await started.wait()
    sigterm.set()  # `docker stop`: the engine's SIGTERM, not the node's kill
    assert await h.until_run_finished(task.id) == RunStatus.CRASHED
    assert "ended by SIGTERM (exit code 143) from outside the node" in h.server.our_run(task.id).log

    blocked = add_blocking_image(h, "forever:1")
    killed = h.server.create_task("forever:1")
    h.events.push(NewTask(killed.id))
    await blocked.wait()
    h.events.push(KillRequested(h.server.kill_task(killed.id, h.clock.now())))
    await h.until(lambda: h.runtime.alive() == [])
    entry = await h.journal.get(h.server.our_run(killed.id).id)
    assert entry.status is RunStatus.KILLED


async def test_a_run_killed_while_the_websocket_was_down_is_stopped_at_the_next_sync(harness):
    h = harness
    task = await start_blocking_run(h)
    run = h.server.our_run(task.id)
    h.events.drop(reconnect=False)
    h.server.kill_task(task.id, h.clock.now())  # its kill order goes nowhere
    await h.events.reconnect()  # Connected(reconnect=True): the node re-syncs
    await h.until(lambda: h.runtime.alive() == [])
    await h.until(lambda: statuses_emitted(h, run.id)[-1:] == ["killed by user"])
    assert run.status == RunStatus.KILLED and len(h.runtime.started) == 1
    entry = await h.journal.get(run.id)
    assert entry.step is RunStep.REPORTED and entry.status is RunStatus.KILLED




async def test_node_details_include_the_columns_of_file_databases():
    from v6node.domain.config import DatabaseConfig

    dbs = (DatabaseConfig(label="default", uri="/data/a.csv"), DatabaseConfig(label="omop", uri="pg://x", type="sql"))
    h = MemoryNodeHarness(default_config(databases=dbs))
    h.catalog.columns_by_label = {"default": ["age", "weight"]}
    async with h:
        h.events.push(SyncRequested())
        await h.until(lambda: any(name == "node_info_update" for name, _ in h.events.emitted))
    details = next(data for name, data in h.events.emitted if name == "node_info_update")
    assert details["database_labels"] == ["default", "omop"]
    assert details["database_types"] == {"db_type_default": "csv", "db_type_omop": "sql"}
    assert details["database_columns"] == {"columns_default": ["age", "weight"]}


async def test_a_denied_task_learns_nothing_about_the_databases():
    from v6node.domain.model import RequestedDatabase

    h = MemoryNodeHarness(default_config(policies=PolicyConfig(allowed_users=("1",), require_algorithm_pull=False)))
    h.runtime.add_image(IMAGE)
    async with h:
        status, run = await run_one(h, IMAGE, init_user_id=2, databases=(RequestedDatabase("secret_registry"),))
    assert status == RunStatus.NOT_ALLOWED
    assert "configured" not in run.log



async def test_the_proxy_keeps_its_port_across_restarts_and_falls_back_when_taken():
    from v6node.domain.containers import stable_proxy_port

    h = MemoryNodeHarness()
    async with h:
        assert h.proxy.port == stable_proxy_port("memnode")
    again = h.restarted()
    async with again:
        assert again.proxy.port == stable_proxy_port("memnode")
    busy = MemoryNodeHarness()
    busy.proxy.taken_ports.add(stable_proxy_port("memnode"))
    async with busy:
        assert busy.proxy.port != stable_proxy_port("memnode")
    fixed = MemoryNodeHarness(default_config(proxy_port=4321))
    async with fixed:
        assert fixed.proxy.port == 4321


# --- hostile and large outputs -------------------------------------------------------------------------
@pytest.mark.parametrize("what", ["a symbolic link", "a named pipe (FIFO)", "a directory"])
async def test_an_output_that_is_not_a_plain_file_fails_the_run_and_the_node_goes_on(what):
    h = MemoryNodeHarness()
    h.runtime.add_image(IMAGE)

    async def hostile(call):
        call.workspace.write_unsafe_output(call.run_id, what)
        return 0

    h.runtime.add_image("hostile:1", hostile)
    async with h:
        status, run = await run_one(h, "hostile:1")
        assert status == RunStatus.FAILED
        assert f"[v6node] the output is {what}, not a regular file; nothing of it was read" in run.log
        assert run.result == ""
        later, _ = await run_one(h, IMAGE)
        assert later == RunStatus.COMPLETED


def writes_output(data: bytes):
    async def program(call):
        call.write_output(data)
        return 0

    return program


async def test_a_large_output_is_sent_whole_and_in_pieces():
    output = bytes(range(256)) * (3 * 4096 + 1)  # 3 MiB and a bit: several pieces, not a multiple of 3
    h = MemoryNodeHarness()
    h.runtime.add_image("big:1", writes_output(output))
    async with h:
        status, run = await run_one(h, "big:1")
    assert status == RunStatus.COMPLETED
    assert base64.b64decode(run.result) == output


async def test_a_large_encrypted_output_decrypts_to_what_the_algorithm_wrote():
    from v6node.adapters.crypto.rsa_cryptor import RsaCryptor
    from v6node.adapters.memory.harness import test_private_key

    output = b"\x00\xff" * (1024 * 1024 + 7)
    h = encrypted_harness()
    h.runtime.add_image("big:1", writes_output(output))
    ours = RsaCryptor(test_private_key())
    async with h:
        org = h.server.organizations[h.server.identity.organization_id]
        secret = ours.encrypt_to_str(b'{"method": "x"}', org.public_key)
        status, run = await run_one(h, "big:1", input=secret)
    assert status == RunStatus.COMPLETED
    assert ours.decrypt_str(run.result) == output


async def test_an_output_over_max_output_size_fails_the_run_with_its_size():
    h = MemoryNodeHarness(default_config(max_output_size=100))
    h.runtime.add_image("big:1", writes_output(b"x" * 101))
    async with h:
        status, run = await run_one(h, "big:1")
    assert status == RunStatus.FAILED
    assert "the output file is 101 bytes, more than the limit of 100 (max_output_size)" in run.log


async def test_an_input_over_max_input_size_fails_the_run_without_starting_it():
    h = MemoryNodeHarness(default_config(max_input_size=64))
    h.runtime.add_image(IMAGE)
    async with h:
        status, run = await run_one(h, IMAGE, {"method": "x", "kwargs": {"pad": "p" * 100}})
        small, _ = await run_one(h, IMAGE, {"method": "x"})
    assert status == RunStatus.FAILED
    assert "the run's input is larger than this node takes (64 bytes, max_input_size)" in run.log
    assert small == RunStatus.COMPLETED
    assert len(h.runtime.started) == 1


# --- the journal belongs to one server and node -----------------------------------------------------------
def fresh_server(h):
    """Another server as a re-install leaves it: empty, handing out the same ids again."""
    from v6node.adapters.memory.server_api import MemoryServerApi

    return MemoryServerApi(api_key=h.config.api_key, clock=h.clock)


async def test_the_same_node_against_another_server_with_the_same_ids_runs_its_tasks(caplog):
    h = MemoryNodeHarness()
    h.runtime.add_image(IMAGE)
    async with h:
        first = [(await run_one(h, IMAGE))[1].id for _ in range(3)]
    server_b = fresh_server(h)
    h2 = h.restarted(attrs.evolve(h.config, server_url="http://server-b.invalid", port=7602), server=server_b)
    async with h2:
        again = [await run_one(h2, IMAGE) for _ in range(3)]
    assert [status for status, _ in again] == [RunStatus.COMPLETED] * 3
    assert [run.id for _, run in again] == first  # the ids collide
    # B's runs carry B's results only: each was started and reported once, on B.
    assert all([p.status for p in run.patches] == [None, RunStatus.ACTIVE, RunStatus.COMPLETED] for _, run in again)
    assert all([p.status for p in h.server.runs[run_id].patches][-1] == RunStatus.COMPLETED for run_id in first)
    assert len(h.runtime.started) == 6
    (previous, entries), = h.journal.set_aside
    assert previous.server == "http://server.invalid:80/api" and [e.run_id for e in entries] == first
    warning = next(r.getMessage() for r in caplog.records if "the run journal was written for" in r.getMessage())
    assert "at http://server.invalid:80/api" in warning and "at http://server-b.invalid:7602/api" in warning
    assert "none of its 3 record(s) is reported to this server" in warning


async def test_a_server_reset_at_the_same_address_is_told_apart_run_by_run():
    h = MemoryNodeHarness()
    h.runtime.add_image(IMAGE)
    async with h:
        before = [(await run_one(h, IMAGE))[1].id for _ in range(2)]
    await h.clock.advance(3600)  # the reset server creates its runs later
    h2 = h.restarted(server=fresh_server(h))
    async with h2:
        after = [await run_one(h2, IMAGE) for _ in range(2)]
    assert [run.id for _, run in after] == before
    assert [status for status, _ in after] == [RunStatus.COMPLETED] * 2
    assert h.journal.set_aside == []  # same server and node: the journal stays, its stale records do not
    assert len(h.runtime.started) == 4


async def test_a_new_task_for_a_run_known_from_before_is_left_to_a_sync_and_logged(caplog):
    caplog.set_level("INFO", logger="v6node")
    h = MemoryNodeHarness()
    h.runtime.add_image(IMAGE)
    async with h:
        task = h.server.create_task(IMAGE)
        run_id = h.server.our_run(task.id).id
        await h.journal.claim(run_id, task.id, job_id=task.job_id, assigned_at=h.server.runs[run_id].assigned_at)
        h.events.push(NewTask(task.id))
        # Received but never started: the reconciliation the node asks for starts it.
        assert await h.until_run_finished(task.id) == RunStatus.COMPLETED
    assert f"run {run_id} is in the journal from before (received)" in caplog.text


async def test_a_run_the_server_says_was_started_but_the_journal_never_saw_is_failed_not_rerun():
    from datetime import timedelta

    from v6node.domain.events import SyncRequested

    h = MemoryNodeHarness()
    h.runtime.add_image(IMAGE)
    task = h.server.create_task(IMAGE)
    stored = h.server.our_run(task.id)
    stored.started_at, stored.status = h.clock.now() - timedelta(minutes=5), RunStatus.ACTIVE
    async with h:
        h.events.push(SyncRequested())
        assert await h.until_run_finished(task.id) == RunStatus.FAILED
    assert "the node has no record of it" in stored.log
    assert h.runtime.started == []


def engine_away_at_start(h, after_start: bool):
    """The engine goes away during the first container start: before creating it, or after
    starting it with the answer lost. It is back at the next ping."""
    run = h.runtime.run
    calls = 0

    async def flaky_run(spec):
        nonlocal calls
        calls += 1
        if calls == 1 and spec.labels.get("run_id"):
            if after_start:
                await run(spec)
            h.runtime.available = False
            raise RuntimeUnavailable("starting the container: the Docker engine cannot be reached")
        return await run(spec)

    h.runtime.run = flaky_run


@pytest.mark.parametrize("after_start", [False, True], ids=["before-it-was-created", "after-it-started"])
async def test_an_engine_outage_during_a_container_start_is_waited_out_and_the_run_completes(after_start):
    h = MemoryNodeHarness()
    h.runtime.add_image(IMAGE)
    engine_away_at_start(h, after_start)
    async with h:
        asleep = h.clock.sleepers
        task = h.server.create_task(IMAGE)
        h.events.push(NewTask(task.id))
        await h.until(lambda: h.clock.sleepers > asleep)  # waiting for the engine, not giving up
        h.runtime.available = True
        await h.clock.advance(1)
        assert await h.until_run_finished(task.id) == RunStatus.COMPLETED
    assert len(h.runtime.started) == 1  # one container, never a second start
    assert (await h.journal.get(h.server.our_run(task.id).id)).container_starts == 1


async def test_the_time_limit_counts_from_the_first_start_across_a_node_restart():
    limits = AlgorithmLimits(seconds=60)
    started = asyncio.Event()

    async def endless(call):
        started.set()
        await asyncio.Event().wait()
        return 0

    h = MemoryNodeHarness(default_config(limits=limits))
    h.runtime.add_image("endless:1", endless)
    task = await crash_while_running(h, "endless:1", started.wait)
    await h.clock.advance(45)  # the node is down for 45 of the run's 60 seconds
    h2 = h.restarted()
    async with h2:
        asleep = h2.clock.sleepers  # the node's own loops
        h2.events.push(SyncRequested())
        run = h.server.our_run(task.id)
        await h2.until(lambda: h2.clock.sleepers > asleep)  # re-attached, and its deadline set
        await h2.clock.advance(16)  # 61 s after the first start, 16 s after the restart
        assert await h2.until_run_finished(task.id) == RunStatus.FAILED
    assert "stopped after 60 s (algorithm_time_limit)" in run.log


# --- an honest stop ---------------------------------------------------------------------------------------
async def test_a_clean_up_that_leaves_something_says_what_and_fails_the_stop():
    from v6node.domain.errors import CleanupIncomplete, ResourcesLeft

    h = MemoryNodeHarness()
    h.runtime.add_image(IMAGE)

    async def stuck(labels):
        raise ResourcesLeft(["network vantage6-memnode-user-net (has active endpoints)"], removed=2)

    await h.start()
    await run_one(h, IMAGE)
    h.runtime.remove_labelled = stuck
    with pytest.raises(CleanupIncomplete) as info:
        await h.stop()
    assert "could not remove: network vantage6-memnode-user-net (has active endpoints)" in str(info.value)
    assert "The next start removes these leftovers" in str(info.value)


async def test_volumes_an_earlier_process_left_go_once_their_job_is_finished():
    h = MemoryNodeHarness()
    h.runtime.add_image(IMAGE)
    finished = h.server.create_task(IMAGE)
    h.server.our_run(finished.id).finished_at = h.clock.now()
    h.server.our_run(finished.id).status = RunStatus.COMPLETED
    add_blocking_image(h, "sleep:1")
    going_on = h.server.create_task("sleep:1")  # its run starts and keeps running
    labels = {"v6node.node": "memnode"}
    for job in (finished.job_id, going_on.job_id, 999):  # 999: a job the server does not know
        await h.runtime.ensure_volume(f"vantage6-memnode-user-{job}-tmpvol", labels)
    async with h:
        h.events.push(SyncRequested())  # as the server does on every connect
        await h.until(lambda: sorted(h.runtime.volumes) == [f"vantage6-memnode-user-{going_on.job_id}-tmpvol"])


# --- live algorithm logs -----------------------------------------------------------------------------
def streamed(h, run_id):
    return [data["log"] for name, data in h.events.emitted if name == "algorithm_log" and data["run_id"] == run_id]


async def test_an_algorithms_output_is_streamed_while_it_runs_and_reported_once_at_the_end():
    h = MemoryNodeHarness()
    go_on = asyncio.Event()

    async def talkative(call):
        call.log("first line")
        await go_on.wait()
        call.log("second line")
        call.write_output(b"{}")
        return 0

    h.runtime.add_image("talk:1", talkative)
    async with h:
        asleep = h.clock.sleepers  # the node's own loops
        task = h.server.create_task("talk:1")
        h.events.push(NewTask(task.id))
        run_id = h.server.our_run(task.id).id
        # Running: its time limit and the log stream's pause are asleep; the pause's end
        # sends what was read so far, before the run ends.
        await h.until(lambda: h.clock.sleepers == asleep + 2)
        await h.clock.advance(1)
        await h.until(lambda: streamed(h, run_id) == ["first line"])
        assert h.server.our_run(task.id).finished_at is None
        go_on.set()
        assert await h.until_run_finished(task.id) == RunStatus.COMPLETED
    assert "\n".join(streamed(h, run_id)) == "first line\nsecond line"
    assert h.server.our_run(task.id).log == "first line\nsecond line\n"  # the report's whole log, once
    payload = next(data for name, data in h.events.emitted if name == "algorithm_log")
    assert set(payload) == {"collaboration_id", "run_id", "task_id", "log"}


async def test_a_chatty_algorithm_is_streamed_within_the_rate_limit():
    h = MemoryNodeHarness()

    async def chatty(call):
        for i in range(5000):
            call.log(f"line {i:05d} " + "x" * 100)
        call.write_output(b"{}")
        return 0

    h.runtime.add_image("chatty:1", chatty)
    async with h:
        status, run = await run_one(h, "chatty:1")
    assert status == RunStatus.COMPLETED
    sent = streamed(h, run.id)
    assert sum(len(batch.encode()) for batch in sent) <= 64 * 1024 + 200
    assert "bytes of output were not streamed (rate limit); the result carries them" in sent[-1]
    assert run.log.count("\n") == 5000  # the report carries the whole log


async def test_nothing_is_streamed_when_logs_may_not_be_shared():
    h = MemoryNodeHarness(default_config(share_algorithm_logs=False))
    h.runtime.add_image(IMAGE)
    async with h:
        status, run = await run_one(h, IMAGE)
    assert status == RunStatus.COMPLETED and streamed(h, run.id) == []


async def test_metrics_go_to_the_server_every_report_interval_when_prometheus_is_enabled():
    from v6node.domain.config import Monitoring

    h = MemoryNodeHarness(default_config(monitoring=Monitoring(server_metrics=True, server_metrics_interval=45)))
    async with h:
        await h.clock.advance(45)
        await h.until(lambda: any(name == "node_metrics_update" for name, _ in h.events.emitted))
    (payload,) = [data for name, data in h.events.emitted if name == "node_metrics_update"]
    assert payload == {
        "cpu_percent": 12.5, "memory_percent": 40.0, "cpu_count": 2, "memory_total": 8 * 2**30,
        "memory_available": 5 * 2**30, "os": "Linux", "platform": "Linux-memory", "num_algorithm_containers": 0,
    }


async def test_no_metrics_are_sent_unless_prometheus_is_enabled(harness):
    await harness.clock.advance(3600)
    assert not any(name == "node_metrics_update" for name, _ in harness.events.emitted)


# --- the local monitoring endpoint --------------------------------------------------------------------
async def test_health_is_ok_when_logged_in_connected_and_the_engine_answers_and_says_what_is_not():
    from v6node.domain.config import Monitoring

    h = MemoryNodeHarness(default_config(monitoring=Monitoring(endpoint=True)))
    h.runtime.add_image(IMAGE)
    monitoring = h.adapters.monitoring()
    async with h:
        assert monitoring.running
        healthy = await monitoring.health()
        assert healthy.ok and healthy.parts == {"server": "logged in", "websocket": "connected", "docker": "answers"}
        h.runtime.available = False
        sick = await monitoring.health()
        assert not sick.ok and sick.parts["docker"].startswith("does not answer")
        h.runtime.available = True
        h.events.drop("network glitch", reconnect=False)
        assert (await monitoring.health()).parts["websocket"] == "not connected"
    assert not monitoring.running


async def test_metrics_count_runs_and_are_fresh_at_each_scrape():
    from v6node.domain.config import Monitoring
    from v6node.domain.run_events import Stage

    h = MemoryNodeHarness(default_config(monitoring=Monitoring(endpoint=True)))
    h.runtime.add_image(IMAGE)
    metrics = h.adapters.node_metrics()
    async with h:
        await run_one(h, IMAGE)
        await h.adapters.monitoring().refresh()
    assert [e.stage for e in metrics.events] == [Stage.RECEIVED, Stage.STARTED, Stage.FINISHED]
    assert metrics.gauges == {"queue_depth": 0, "journal_size": 1}


# --- the audit log -------------------------------------------------------------------------------------
async def test_the_audit_log_records_decisions_starts_and_ends_without_data():
    import hashlib

    h = MemoryNodeHarness(default_config(policies=PolicyConfig(allowed_algorithms=(IMAGE, "crash:1", "sleep:1"), require_algorithm_pull=False)))
    h.runtime.add_image(IMAGE)
    h.runtime.add_image("denied:1")

    async def crash(call):
        call.log("boom")
        return 1

    h.runtime.add_image("crash:1", crash)
    async with h:
        completed, done = await run_one(h, IMAGE, {"method": "echo", "kwargs": {"secret": "patient-data"}})
        crashed, failed = await run_one(h, "crash:1")
        denied, refused = await run_one(h, "denied:1")
        task = await start_blocking_run(h)
        killed = h.server.our_run(task.id)
        await h.node.kill_containers(h.server.kill_task(task.id, h.clock.now()))
        await h.until(lambda: any(e["event"] == "finished" and e["run_id"] == killed.id for e in h.adapters.audit_log().entries_now()))
    audit = h.adapters.audit_log()
    assert (await audit.verify()).ok
    entries = await audit.entries()
    by_run = {run.id: [(e["event"], e.get("status"), e.get("allowed")) for e in entries if e["run_id"] == run.id]
              for run in (done, failed, refused, killed)}
    assert by_run[done.id] == [("decided", None, True), ("started", None, None), ("finished", "completed", None)]
    assert by_run[failed.id] == [("decided", None, True), ("started", None, None), ("finished", "crashed", None)]
    assert by_run[refused.id] == [("decided", None, False), ("finished", "not allowed", None)]
    assert by_run[killed.id][-1] == ("finished", "killed by user", None)
    decided = next(e for e in entries if e["run_id"] == done.id and e["event"] == "decided")
    assert decided["reason"].startswith("allowed: allowed_algorithms entry") and decided["image"] == IMAGE
    assert decided["input_sha256"] == hashlib.sha256(json.dumps({"method": "echo", "kwargs": {"secret": "patient-data"}}).encode()).hexdigest()
    finished = next(e for e in entries if e["run_id"] == done.id and e["event"] == "finished")
    assert finished["result_sha256"] == hashlib.sha256(base64.b64decode(done.result)).hexdigest()
    assert "patient-data" not in "\n".join(audit.lines) and "container-token" not in "\n".join(audit.lines)


async def test_the_audit_log_keeps_the_end_the_server_holds_when_it_refused_the_nodes_report():
    """Killed on the server, but the node stopped before the kill order reached it: the node
    reports the interrupted run failed, the server keeps 'killed by user', and so does the audit."""
    h = MemoryNodeHarness(default_config(policies=PolicyConfig(require_algorithm_pull=False)))
    async with h:
        task = await start_blocking_run(h)
        run = h.server.our_run(task.id)
        h.server.kill_task(task.id, h.clock.now())  # the kill_containers event never arrives
    finished = [e for e in await h.adapters.audit_log().entries() if e["event"] == "finished"]
    assert [(e["run_id"], e["status"], e.get("reported")) for e in finished] == [(run.id, "killed by user", "failed")]
    assert run.status is RunStatus.KILLED


async def test_a_run_killed_when_the_node_stops_is_reported_killed_not_failed():
    h = MemoryNodeHarness(default_config(policies=PolicyConfig(require_algorithm_pull=False)))
    async with h:
        task = await start_blocking_run(h)
        run = h.server.our_run(task.id)
        h.node.active.mark_killed(run.id)  # the order was applied, the container not yet gone
    assert run.status is RunStatus.KILLED
    finished = [e for e in await h.adapters.audit_log().entries() if e["event"] == "finished"]
    assert [(e["status"], e.get("reported")) for e in finished] == [("killed by user", None)]


async def test_start_up_shows_a_checklist_line_per_step_in_order(caplog):
    caplog.set_level("INFO", logger="v6node.startup")
    async with MemoryNodeHarness(default_config()):
        pass
    steps = [r.getMessage().split()[1] for r in caplog.records if r.name == "v6node.startup"]
    assert steps == ["engine", "login", "encryption", "journal", "proxy", "websocket", "reach", "ready"]
    assert all(r.getMessage().startswith("[ok] ") for r in caplog.records if r.name == "v6node.startup")
