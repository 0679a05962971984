"""CheckPolicy: the lookups the policy rules need, on the memory adapters."""
from v6node.adapters.memory.container_runtime import MemoryContainerRuntime, echo_program
from v6node.adapters.memory.server_api import MemoryServerApi
from v6node.adapters.memory.workspace import MemoryTaskWorkspace
from v6node.app.policy import CheckPolicy
from v6node.domain.config import PolicyConfig
from v6node.domain.errors import ServerUnavailable
from v6node.domain.model import TaskRef

IMAGE = "harbor.example.org/algos/mean:2.0"


async def logged_in_server() -> MemoryServerApi:
    server = MemoryServerApi()
    await server.authenticate()
    server.add_organization(5, "Hospital A")
    server.add_organization(6, "Hospital B")
    return server


def task(**changes) -> TaskRef:
    values = dict(id=1, image=IMAGE, collaboration_id=1, init_org_id=5, init_user_id=9)
    values.update(changes)
    return TaskRef(**values)


async def test_organization_names_are_resolved_on_the_server():
    server = await logged_in_server()
    check = CheckPolicy(PolicyConfig(allowed_organizations=("Hospital A",)), server, None)
    assert (await check(task(init_org_id=5))).allowed
    denied = await check(task(init_org_id=6))
    assert not denied.allowed and "allowed_organizations" in denied.reason


async def test_a_store_url_comes_from_the_server():
    server = await logged_in_server()
    server.algorithm_stores[3] = "https://store.example.org"
    check = CheckPolicy(PolicyConfig(allowed_algorithm_stores=("^https://store\\.example\\.org$",)), server, None)
    assert (await check(task(store_id=3))).allowed
    assert not (await check(task(store_id=None))).allowed


async def test_another_tag_of_the_same_local_image_is_allowed():
    runtime = MemoryContainerRuntime(MemoryTaskWorkspace())
    runtime.add_image(IMAGE, echo_program)
    runtime.add_image("harbor.example.org/algos/mean:latest", echo_program)

    async def other(call):
        return 0

    runtime.add_image("harbor.example.org/algos/mean:1.0", other)
    same = CheckPolicy(PolicyConfig(allowed_algorithms=("harbor.example.org/algos/mean:latest",)), None, runtime)
    assert (await same(task())).allowed
    different = CheckPolicy(PolicyConfig(allowed_algorithms=("harbor.example.org/algos/mean:1.0",)), None, runtime)
    assert not (await different(task())).allowed


async def test_a_failed_lookup_denies_with_the_reason():
    server = await logged_in_server()
    server.fail_next("find_organizations", ServerUnavailable("server down"))
    decision = await CheckPolicy(PolicyConfig(allowed_organizations=("Hospital A",)), server, None)(task())
    assert not decision.allowed
    assert "could not be checked" in decision.reason and "server down" in decision.reason
