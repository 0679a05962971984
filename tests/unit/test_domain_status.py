from v6node.domain.status import RunStatus, has_failed


def test_status_strings_are_the_servers():
    assert [s.value for s in RunStatus] == [
        "pending", "initializing", "active", "completed", "failed", "start failed",
        "non-existing Docker image", "crashed", "killed by user", "not allowed", "unknown error",
    ]


def test_failed_and_final_follow_the_server():
    happy = {RunStatus.PENDING, RunStatus.INITIALIZING, RunStatus.ACTIVE, RunStatus.COMPLETED}
    for status in RunStatus:
        assert status.has_failed == (status not in happy)
        assert has_failed(status.value) == (status not in happy)
    assert has_failed("something new")
    assert RunStatus.COMPLETED.is_final and RunStatus.CRASHED.is_final
    assert not RunStatus.ACTIVE.is_final and not RunStatus.PENDING.is_final


def test_lifecycle_moves_forward_only():
    assert RunStatus.PENDING.can_become(RunStatus.ACTIVE)
    assert RunStatus.PENDING.can_become(RunStatus.NOT_ALLOWED)
    assert RunStatus.ACTIVE.can_become(RunStatus.COMPLETED)
    assert RunStatus.ACTIVE.can_become(RunStatus.KILLED)
    assert not RunStatus.ACTIVE.can_become(RunStatus.PENDING)
    assert not RunStatus.PENDING.can_become(RunStatus.COMPLETED)
    assert not RunStatus.ACTIVE.can_become(RunStatus.NOT_ALLOWED)
    for final in (s for s in RunStatus if s.is_final):
        assert not any(final.can_become(s) for s in RunStatus)
