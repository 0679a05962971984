"""CheckPolicy: the lookups the policy rules need, on the memory adapters."""
import logging

import pytest
import yaml

from v6node.adapters.memory.container_runtime import MemoryContainerRuntime, echo_program
from v6node.adapters.memory.server_api import MemoryServerApi
from v6node.adapters.memory.workspace import MemoryTaskWorkspace
from v6node.app.config import parse_config
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


DOCS_EXAMPLE = """
api_key: 00000000-0000-0000-0000-000000000000
server_url: https://v6.example.org
port: 443
api_path: /api
policies:
  allowed_users:
    - 2
  allowed_organizations:
    - 3
    - Hospital A
"""


def policy_from_yaml(text: str) -> PolicyConfig:
    data = yaml.safe_load(text)
    return parse_config(data, file="alpha.yaml", name="alpha", default_data_dir="/tmp/alpha").policies


@pytest.mark.parametrize(
    ("org_id", "user_id", "allowed"),
    [
        (6, 2, True),  # user 2, a YAML integer: never matches in the reference node (spec §13 item 1)
        (3, 9, True),  # organization 3, a YAML integer
        (5, 9, True),  # organization "Hospital A", by name, resolved on the server
        (6, 9, False),
    ],
)
async def test_the_docs_example_with_integer_ids(org_id, user_id, allowed):
    policy = policy_from_yaml(DOCS_EXAMPLE)
    assert policy.allowed_users == ("2",) and policy.allowed_organizations == ("3", "Hospital A")
    decision = await CheckPolicy(policy, await logged_in_server(), None)(task(init_org_id=org_id, init_user_id=user_id))
    assert decision.allowed is allowed
    if not allowed:
        assert "allowed_users" in decision.reason and "allowed_organizations" in decision.reason


async def test_an_unknown_or_ambiguous_organization_name_denies_without_crashing(caplog):
    # The reference's name fallback iterates the keys of the paginated reply and crashes the run.
    caplog.set_level(logging.WARNING, "v6node.policy")
    server = await logged_in_server()
    server.add_organization(7, "Twin")
    server.add_organization(8, "Twin")
    check = CheckPolicy(PolicyConfig(allowed_organizations=("Nowhere", "Twin")), server, None)
    for org_id in (5, 7, 8):
        decision = await check(task(init_org_id=org_id))
        assert not decision.allowed and "allowed_organizations" in decision.reason
    assert "'Twin' matches 2 organizations" in caplog.text
    assert "'Nowhere' matches 0 organizations" in caplog.text


async def test_numeric_entries_are_ids_and_need_no_lookup():
    server = await logged_in_server()
    server.fail_next("find_organizations", ServerUnavailable("server down"), times=10)
    decision = await CheckPolicy(PolicyConfig(allowed_organizations=("5",)), server, None)(task(init_org_id=5))
    assert decision.allowed
