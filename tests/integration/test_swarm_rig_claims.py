"""The swarm rig's claims of address blocks (tests/rig/swarm_claims.py), with real processes
and real locks in a folder of the test's own: one owner per block, a dead owner's block
taken over by exactly one process, and a block free again only once its folder is gone."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rig import swarm_claims
from tests.rig.paths import REPO

BLOCK = 151


@pytest.fixture(autouse=True)
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(swarm_claims, "TMP", tmp_path)
    return tmp_path


def claiming_process(tmp: Path) -> subprocess.Popen[str]:
    """Another test process that claims BLOCK, says so, and then waits to be killed."""
    code = (
        "import sys, pathlib; from tests.rig import swarm_claims as c; "
        f"c.TMP = pathlib.Path({str(tmp)!r}); claim = c.try_claim({BLOCK}); "
        "print('claimed' if claim else 'refused', flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "claimed"
    return child


def never_has_processes() -> bool:
    return False


def test_a_block_has_one_owner_and_is_free_again_once_released(own_tmp):
    first = swarm_claims.try_claim(BLOCK)
    assert first is not None and first.root == own_tmp / f"v6sw{BLOCK}"
    assert (first.root / "lock").exists() and (first.root / "owner").exists()
    assert swarm_claims.try_claim(BLOCK) is None
    assert swarm_claims.take_over_stale(BLOCK, never_has_processes) is None  # its owner lives (this process)

    first.release()
    assert not first.root.exists()
    assert sorted(p.name for p in own_tmp.iterdir()) == []  # no staging or released folder left
    again = swarm_claims.try_claim(BLOCK)
    assert again is not None
    again.release()


def test_the_block_of_a_killed_owner_is_taken_over_by_exactly_one_process(own_tmp):
    child = claiming_process(own_tmp)
    try:
        assert swarm_claims.take_over_stale(BLOCK, never_has_processes) is None  # alive: left alone
        assert swarm_claims.try_claim(BLOCK) is None
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    taker = swarm_claims.take_over_stale(BLOCK, never_has_processes)
    assert taker is not None
    # A second clean-up at the same time (another test session starting) keeps off it,
    # and no new rig gets the block while the dead rig's names are being removed.
    assert swarm_claims.take_over_stale(BLOCK, never_has_processes) is None
    assert swarm_claims.try_claim(BLOCK) is None
    taker.release()
    assert swarm_claims.try_claim(BLOCK) is not None


def test_names_without_a_folder_are_claimed_before_their_removal(own_tmp):
    """A rig that died part-way through its removal: its folder is gone, names may remain."""
    taker = swarm_claims.take_over_stale(BLOCK, never_has_processes)
    assert taker is not None and taker.root.is_dir()
    assert swarm_claims.try_claim(BLOCK) is None
    taker.release()
    assert swarm_claims.take_over_stale(BLOCK, lambda: True) is None  # something runs there: not ours


def test_folders_of_claims_cut_short_are_removed_but_not_those_of_a_claim_under_way(own_tmp):
    dead = own_tmp / "v6sw-claim-dead"
    dead.mkdir()
    (dead / "lock").touch()  # nobody holds it: its process died before the rename
    released = own_tmp / "v6sw-gone-x"
    (released / "rig").mkdir(parents=True)
    starting = own_tmp / "v6sw-claim-starting"  # no lock yet, made a moment ago
    starting.mkdir()
    swarm_claims.remove_stale_staging()
    assert sorted(p.name for p in own_tmp.iterdir()) == ["v6sw-claim-starting"]
