import pytest

from v6node.domain.config import PolicyConfig
from v6node.domain.policy import evaluate_policy, image_without_tag, is_regex

IMAGE = "harbor.example.org/algos/mean:1.2"


@pytest.mark.parametrize(
    ("image", "bare"),
    [
        ("harbor.example.org/algos/mean:1.2", "harbor.example.org/algos/mean"),
        ("localhost:5000/x:tag", "localhost:5000/x"),
        ("localhost:5000/x", "localhost:5000/x"),
        ("127.0.0.1:5999/echo-algo:1@sha256:" + "a" * 64, "127.0.0.1:5999/echo-algo"),
        ("docker.io/library/ubuntu:22.04", "ubuntu"),
        ("ubuntu", "ubuntu"),
        ("docker.io/me/algo:2", "me/algo"),
    ],
)
def test_image_without_tag(image, bare):
    assert image_without_tag(image) == bare


def test_regex_detection():
    assert is_regex("^harbor.example.org/.*")
    assert is_regex("harbor\\.example")
    assert not is_regex("harbor.example.org/algos/mean:1.2")


@pytest.mark.parametrize(
    ("policy", "image", "allowed", "reason"),
    [
        (PolicyConfig(), IMAGE, True, "allowed"),
        (PolicyConfig(allowed_algorithms=(IMAGE,)), IMAGE, True, "allowed"),
        (PolicyConfig(allowed_algorithms=("harbor.example.org/algos/mean",)), IMAGE, True, "allowed"),
        (PolicyConfig(allowed_algorithms=("harbor.example.org/algos/mean:2.0",)), IMAGE, False, "allowed_algorithms"),
        (PolicyConfig(allowed_algorithms=("^harbor.example.org/algos/.*",)), IMAGE, True, "allowed"),
        (PolicyConfig(allowed_algorithms=("^other.org/.*",)), IMAGE, False, "allowed_algorithms"),
        (PolicyConfig(allow_basics_algorithm=False), "harbor2.vantage6.ai/algorithms/basics:1", False, "allow_basics_algorithm"),
        (PolicyConfig(allowed_algorithm_stores=("https://store.example.org",)), IMAGE, False, "allowed_algorithm_stores"),
    ],
)
def test_algorithm_rules(policy, image, allowed, reason):
    decision = evaluate_policy(policy, image, init_org_id=2, init_user_id=5)
    assert decision.allowed is allowed
    assert reason in decision.reason


def test_users_and_organizations_compare_as_text_so_yaml_ints_work():
    # The vantage6 docs' example `allowed_users: [2]` never matches in the reference node.
    by_user = PolicyConfig(allowed_users=("5",))
    assert evaluate_policy(by_user, IMAGE, init_org_id=2, init_user_id=5).allowed
    assert not evaluate_policy(by_user, IMAGE, init_org_id=2, init_user_id=6).allowed
    by_org = PolicyConfig(allowed_organizations=("2",))
    assert evaluate_policy(by_org, IMAGE, init_org_id=2, init_user_id=6).allowed
    by_name = PolicyConfig(allowed_organizations=("Hospital A",))
    assert evaluate_policy(by_name, IMAGE, 2, 6, organization_names={"Hospital A": 2}).allowed
    denied = evaluate_policy(by_name, IMAGE, 3, 6, organization_names={"Hospital A": 2})
    assert not denied.allowed and "allowed_organizations" in denied.reason


def test_store_rules_and_either_or():
    store = "https://store.example.org"
    both = PolicyConfig(allowed_algorithms=("^nothing$",), allowed_algorithm_stores=(store,))
    assert not evaluate_policy(both, IMAGE, 2, 5, store_url=store).allowed
    either = PolicyConfig(
        allowed_algorithms=("^nothing$",), allowed_algorithm_stores=(store,), allow_either_whitelist_or_store=True
    )
    assert evaluate_policy(either, IMAGE, 2, 5, store_url=store).allowed
    assert not evaluate_policy(either, IMAGE, 2, 5, store_url=None).allowed
    # An unset store list must not grant everything when either-or is on.
    only_list = PolicyConfig(allowed_algorithms=("^nothing$",), allow_either_whitelist_or_store=True)
    assert not evaluate_policy(only_list, IMAGE, 2, 5).allowed
