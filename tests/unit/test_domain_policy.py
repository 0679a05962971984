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


STORE = "https://store.example.org"
BASICS = "harbor2.vantage6.ai/algorithms/basics:4.15"


@pytest.mark.parametrize(
    ("policy", "image", "store_url", "allowed", "reason"),
    [
        # Basics image allowed by allow_basics_algorithm still has to pass allowed_algorithms (§7.4 step 1).
        (PolicyConfig(allowed_algorithms=("^other.org/.*",)), BASICS, None, False, "allowed_algorithms"),
        (PolicyConfig(allowed_algorithms=("^harbor2.vantage6.ai/.*",)), BASICS, None, True, "allowed"),
        # ... and allow_basics_algorithm: false wins over a listing.
        (PolicyConfig(allowed_algorithms=(BASICS,), allow_basics_algorithm=False), BASICS, None, False, "allow_basics_algorithm"),
        # A dot is not a regex marker: a plain entry is compared literally.
        (PolicyConfig(allowed_algorithms=("harbor.example.org/algos/mean",)), "harborXexample.org/algos/mean:1", None, False, "allowed_algorithms"),
        # Backslash-dot makes a regex.
        (PolicyConfig(allowed_algorithms=(r"harbor\.example\.org/algos/.*",)), IMAGE, None, True, "allowed"),
        # Regexes match the whole image (or its name without tag); the reference's re.match
        # anchors at the start only, so a prefix regex let look-alike registries through.
        (PolicyConfig(allowed_algorithms=(r"mean:1\.2$",)), IMAGE, None, False, "allowed_algorithms"),
        (PolicyConfig(allowed_algorithms=(r".*/mean:1\.2$",)), IMAGE, None, True, "allowed"),
        (PolicyConfig(allowed_algorithms=(r"^harbor\.example\.org/algos/m",)), IMAGE, None, False, "matches only the start"),
        (PolicyConfig(allowed_algorithms=(r"^harbor\.example\.org/algos/m.*",)), IMAGE, None, True, "allowed"),
        (PolicyConfig(allowed_algorithms=(r"^harbor\.example\.org",)), "harbor.example.org.evil.com/x:1", None, False, "allowed_algorithms"),
        # The vantage6 docs' example: a regex for the name, which the tag does not spoil.
        (PolicyConfig(allowed_algorithms=(r"^harbor\.example\.org/[a-zA-Z]+/[a-zA-Z]+",)), IMAGE, None, True, "allowed"),
        # A digest-pinned image (store-resolved tasks carry one) matches its name without tag.
        (PolicyConfig(allowed_algorithms=("harbor.example.org/algos/mean",)), IMAGE + "@sha256:" + "b" * 64, None, True, "allowed"),
        # Stores: exact or regex on the URL; a task without a store never matches.
        (PolicyConfig(allowed_algorithm_stores=(STORE,)), IMAGE, STORE, True, "allowed"),
        (PolicyConfig(allowed_algorithm_stores=(r"^https://store\.example\.org.*",)), IMAGE, STORE + "/api", True, "allowed"),
        (PolicyConfig(allowed_algorithm_stores=(r"^https://store\.example\.org",)), IMAGE, STORE + ".evil.com", False, "matches only the start"),
        (PolicyConfig(allowed_algorithm_stores=(STORE,)), IMAGE, "https://evil.example.org", False, "allowed_algorithm_stores"),
        (PolicyConfig(allowed_algorithm_stores=(STORE,)), IMAGE, None, False, "(none) is not in allowed_algorithm_stores"),
        # Both lists set, without either-or: both must match.
        (PolicyConfig(allowed_algorithms=(IMAGE,), allowed_algorithm_stores=(STORE,)), IMAGE, STORE, True, "allowed"),
        (PolicyConfig(allowed_algorithms=(IMAGE,), allowed_algorithm_stores=(STORE,)), IMAGE, None, False, "allowed_algorithm_stores"),
        # Either-or with only the store list set: the reference counts the unset algorithm list as
        # a match and so lets every image through; here only a list that is set can grant.
        (PolicyConfig(allowed_algorithm_stores=(STORE,), allow_either_whitelist_or_store=True), IMAGE, "https://evil.example.org", False, "neither"),
        (PolicyConfig(allowed_algorithm_stores=(STORE,), allow_either_whitelist_or_store=True), IMAGE, STORE, True, "allowed"),
        # Either-or with nothing set restricts nothing.
        (PolicyConfig(allow_either_whitelist_or_store=True), IMAGE, None, True, "allowed"),
    ],
)
def test_reference_semantics_and_fixed_quirks(policy, image, store_url, allowed, reason):
    decision = evaluate_policy(policy, image, init_org_id=2, init_user_id=5, store_url=store_url)
    assert decision.allowed is allowed
    assert reason in decision.reason


@pytest.mark.parametrize(
    ("policy", "store_url", "reason"),
    [
        (PolicyConfig(), None, "allowed: no policy restricts it"),
        (PolicyConfig(allowed_algorithms=("x", r"harbor\.example\.org/.*")), None,
         "allowed: allowed_algorithms entry 'harbor\\\\.example\\\\.org/.*' matches the image"),
        (PolicyConfig(allowed_algorithm_stores=(STORE,)), STORE,
         f"allowed: allowed_algorithm_stores entry '{STORE}' matches its store {STORE}"),
        (PolicyConfig(allowed_users=("5",), allowed_algorithms=(IMAGE,)), None,
         f"allowed: user 5 is in allowed_users; allowed_algorithms entry '{IMAGE}' matches the image"),
        (PolicyConfig(allowed_organizations=("org-two",)), None,
         "allowed: organization 2 is in allowed_organizations (entry 'org-two')"),
    ],
)
def test_an_allowing_decision_names_the_rule(policy, store_url, reason):
    decision = evaluate_policy(
        policy, IMAGE, init_org_id=2, init_user_id=5, store_url=store_url, organization_names={"org-two": 2}
    )
    assert (decision.allowed, decision.reason) == (True, reason)


@pytest.mark.parametrize(
    ("users", "orgs", "org_id", "user_id", "allowed"),
    [
        (("5",), ("9",), 2, 5, True),  # the user is listed, the organization is not: OR
        (("7",), ("2",), 2, 5, True),  # the organization is listed, the user is not
        (("7",), ("9",), 2, 5, False),
        (("5",), (), None, None, False),  # a task without an initiator is never allowed by a user list
        (("05",), (), 2, 5, False),  # ids compare as text: "05" is not user 5
    ],
)
def test_users_or_organizations(users, orgs, org_id, user_id, allowed):
    policy = PolicyConfig(allowed_users=users, allowed_organizations=orgs)
    decision = evaluate_policy(policy, IMAGE, init_org_id=org_id, init_user_id=user_id)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason == (
            f"the task's user (id {user_id}) is not in allowed_users and its "
            f"organization (id {org_id}) is not in allowed_organizations"
        )


def test_user_and_organization_rules_come_before_the_algorithm_rules():
    # A listed image does not help a user who may not send tasks (the reason names the user rule).
    policy = PolicyConfig(allowed_algorithms=(IMAGE,), allowed_users=("7",))
    decision = evaluate_policy(policy, IMAGE, init_org_id=2, init_user_id=5)
    assert not decision.allowed and "allowed_users" in decision.reason
