"""Which algorithm may run here: the reference's policy semantics with its bugs fixed."""
from __future__ import annotations

import re
from collections.abc import Mapping

from attrs import frozen

from v6node.domain.config import PolicyConfig

BASICS_IMAGE_PREFIX = "harbor2.vantage6.ai/algorithms/basics"
# An allowed_algorithms entry is a regular expression when it has one of these.
_REGEX_MARKERS = set("*\\?$^[](){}|+")
_DEFAULT_REGISTRY = "docker.io"


@frozen
class PolicyDecision:
    allowed: bool
    reason: str


def is_regex(entry: str) -> bool:
    return any(ch in _REGEX_MARKERS for ch in entry)


def image_without_tag(image: str) -> str:
    """``registry[:port]/name[:tag][@sha256:..]`` -> ``registry[:port]/name``.

    The default registry is dropped so ``docker.io/library/x`` and ``x`` compare alike.
    """
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    for prefix in (f"{_DEFAULT_REGISTRY}/library/", f"{_DEFAULT_REGISTRY}/", "library/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _matches(entry: str, value: str) -> bool:
    r"""Exact, or a regex that matches all of ``value`` (the reference's ``re.match`` anchors at
    the start only, so ``^reg\.org`` would also allow ``reg.org.evil.com/x``)."""
    if is_regex(entry):
        return re.fullmatch(entry, value) is not None
    return entry == value


def _algorithm_names(image: str) -> tuple[str, ...]:
    """What an entry may match: the image as given, and its name without tag or digest."""
    return (image, image.split("@", 1)[0], image_without_tag(image))


def _listing_entry(entries: tuple[str, ...], image: str) -> str | None:
    """The first ``allowed_algorithms`` entry that lists ``image``."""
    return next((entry for entry in entries if any(_matches(entry, name) for name in _algorithm_names(image))), None)


def _prefix_only(entries: tuple[str, ...], values: tuple[str, ...]) -> str:
    """A hint when a regex matches only the start of a value (it would have passed in the reference)."""
    for entry in entries:
        if is_regex(entry) and any(re.match(entry, value) for value in values):
            return (
                f" (the regex {entry!r} matches only the start of it; v6node matches regexes against the "
                "whole name: end it with '.*' to allow everything that starts so)"
            )
    return ""


def evaluate_policy(
    policy: PolicyConfig,
    image: str,
    init_org_id: int | None,
    init_user_id: int | None,
    store_url: str | None = None,
    organization_names: Mapping[str, int] | None = None,
    equivalent_entries: frozenset[str] = frozenset(),
) -> PolicyDecision:
    """Decide whether a task's image may run, and say which rule decided.

    Rules, in order:
    - basics images are refused when ``allow_basics_algorithm`` is false;
    - with ``allowed_users``/``allowed_organizations`` set, the task's initiating user
      id or organization (id, or a name resolved to an id in ``organization_names``)
      must be listed; ids compare as text, so YAML ints and strings both work;
    - ``allowed_algorithms`` (exact, name without tag, a regex matching the whole image or
      its name without tag, or an entry in ``equivalent_entries``: known to be the same
      image under another tag) and ``allowed_algorithm_stores`` (exact or a regex matching
      the whole store URL) combine with
      AND, or with OR when ``allow_either_whitelist_or_store`` is set. Empty lists
      restrict nothing.
    """
    if image.startswith(BASICS_IMAGE_PREFIX) and not policy.allow_basics_algorithm:
        return PolicyDecision(False, "policy allow_basics_algorithm is false")

    because: list[str] = []
    if policy.allowed_users or policy.allowed_organizations:
        names = organization_names or {}
        user_ok = init_user_id is not None and str(init_user_id) in policy.allowed_users
        org_entry = next(
            (
                entry for entry in policy.allowed_organizations
                if init_org_id is not None and (entry == str(init_org_id) or names.get(entry) == init_org_id)
            ),
            None,
        )
        if not (user_ok or org_entry is not None):
            return PolicyDecision(
                False,
                f"the task's user (id {init_user_id}) is not in allowed_users and its "
                f"organization (id {init_org_id}) is not in allowed_organizations",
            )
        because.append(
            f"user {init_user_id} is in allowed_users" if user_ok
            else f"organization {init_org_id} is in allowed_organizations (entry {org_entry!r})"
        )

    entry = _listing_entry(policy.allowed_algorithms, image) or next(
        (e for e in policy.allowed_algorithms if e in equivalent_entries), None
    )
    listed = entry is not None
    store_entry = next(
        (e for e in policy.allowed_algorithm_stores if store_url is not None and _matches(e, store_url)), None
    )
    from_store = store_entry is not None
    if listed:
        because.append(f"allowed_algorithms entry {entry!r} matches the image")
    if from_store:
        because.append(f"allowed_algorithm_stores entry {store_entry!r} matches its store {store_url}")
    if policy.allow_either_whitelist_or_store:
        # Only a list that is set can grant: the reference's "unset list counts as a
        # match" would let every image through as soon as one of the two lists is empty.
        restricted = bool(policy.allowed_algorithms or policy.allowed_algorithm_stores)
        if not restricted or listed or from_store:
            return _allowed(because)
        return PolicyDecision(
            False,
            f"image {image!r} is neither in allowed_algorithms nor from a store in allowed_algorithm_stores",
        )
    ok_list = not policy.allowed_algorithms or listed
    ok_store = not policy.allowed_algorithm_stores or from_store
    if not ok_list:
        hint = _prefix_only(policy.allowed_algorithms, _algorithm_names(image))
        return PolicyDecision(False, f"image {image!r} is not in allowed_algorithms{hint}")
    if not ok_store:
        hint = _prefix_only(policy.allowed_algorithm_stores, (store_url,) if store_url else ())
        return PolicyDecision(
            False, f"the task's algorithm store ({store_url or 'none'}) is not in allowed_algorithm_stores{hint}"
        )
    return _allowed(because)


def _allowed(because: list[str]) -> PolicyDecision:
    """An allowing decision that names the rules that let the image through."""
    return PolicyDecision(True, "allowed: " + ("; ".join(because) if because else "no policy restricts it"))
