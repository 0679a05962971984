"""Reconciliation decides per open run, and removes what belongs to none, without I/O."""
from __future__ import annotations

import ast
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from attrs import frozen

from v6node.domain.containers import (
    LABEL_IDENTITY,
    LABEL_MANAGED_BY,
    LABEL_NODE,
    LABEL_RUN,
    LABEL_TASK,
    LABEL_TYPE,
    ContainerInfo,
)
from v6node.domain.journal import JournalEntry, RunStep
from v6node.domain.model import Run, TaskRef
from v6node.domain.reconcile import ActionKind, Reconciliation, RunAction, reconcile
from v6node.domain.status import RunStatus

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
R = 7  # the run most cases are about


def task_of(run_id: int) -> int:
    return run_id + 1000


def run(run_id: int = R, status: RunStatus = RunStatus.PENDING, task_id: int | None = None) -> Run:
    task = TaskRef(id=task_id or task_of(run_id), image="algo:1", collaboration_id=1)
    return Run(id=run_id, task=task, input="e30=", status=status, organization_id=2)


def entry(step: RunStep, run_id: int = R, **fields: object) -> JournalEntry:
    fields.setdefault("task_id", task_of(run_id))
    return JournalEntry(run_id=run_id, step=step, **fields)  # type: ignore[arg-type]


def container(
    cid: str, run_id: int = R, *, running: bool = False, exit_code: int | None = None, task_id: int | None = None
) -> ContainerInfo:
    labels = {
        LABEL_TYPE: "algorithm",
        LABEL_NODE: "alpha",
        LABEL_MANAGED_BY: "alpha",
        LABEL_RUN: str(run_id),
        LABEL_TASK: str(task_id or task_of(run_id)),
    }
    name = f"vantage6-alpha-run-{run_id}"
    return ContainerInfo(id=cid, name=name, labels=labels, running=running, exit_code=exit_code)


def running(cid: str = "c-run", run_id: int = R) -> ContainerInfo:
    return container(cid, run_id, running=True)


def exited(code: int, cid: str = "c-exit", run_id: int = R) -> ContainerInfo:
    return container(cid, run_id, exit_code=code)


def created(cid: str = "c-new", run_id: int = R) -> ContainerInfo:
    """Created but never started (or otherwise without an exit code and not running)."""
    return container(cid, run_id)


@frozen
class Case:
    """One open run (``R``) and what is known about it locally; the expected decision."""

    name: str
    journal: JournalEntry | None
    containers: tuple[ContainerInfo, ...]
    output: bool
    kind: ActionKind
    container_id: str | None = None
    exit_code: int | None = None
    status: RunStatus | None = None
    send_output: bool = False
    claim: bool = False
    record_start: bool = False
    removed: tuple[str, ...] = ()
    reason: str = ""
    log: str = ""
    server_status: RunStatus = RunStatus.PENDING


S, E, REP, RECV = RunStep.STARTED, RunStep.EXITED, RunStep.REPORTED, RunStep.RECEIVED

CASES = [
    # START: nothing can have run yet
    Case("never received", None, (), False, ActionKind.START, claim=True, reason="never received; safe to run"),
    Case("received, never started", entry(RECV), (), False, ActionKind.START, reason="received but never started"),
    Case("received, container created but never started", entry(RECV), (created(),), False, ActionKind.START,
         removed=("c-new",)),
    # REATTACH: a container still runs, whatever the journal got to record
    Case("started, running", entry(S, container_id="c-run"), (running(),), False, ActionKind.REATTACH,
         container_id="c-run", reason="still running; waiting for it again"),
    Case("received, running: the start was not recorded", entry(RECV), (running(),), False, ActionKind.REATTACH,
         container_id="c-run", record_start=True, reason="started before the journal recorded it"),
    Case("unknown to the journal, running", None, (running(),), False, ActionKind.REATTACH,
         container_id="c-run", claim=True, record_start=True),
    Case("exited in the journal, yet running again", entry(E, container_id="c-run", exit_code=0), (running(),), True,
         ActionKind.REATTACH, container_id="c-run"),
    # REPORT: it ran to an end nobody reported
    Case("started, container exited 0", entry(S, container_id="c-exit"), (exited(0),), True, ActionKind.REPORT,
         container_id="c-exit", exit_code=0, reason="container c-exit exited (code 0) but it was never reported"),
    Case("started, container crashed", entry(S, container_id="c-exit"), (exited(2),), False, ActionKind.REPORT,
         container_id="c-exit", exit_code=2),
    Case("received, container exited: the start was not recorded", entry(RECV), (exited(0),), True,
         ActionKind.REPORT, container_id="c-exit", exit_code=0, record_start=True),
    Case("unknown to the journal, container exited", None, (exited(1),), False, ActionKind.REPORT,
         container_id="c-exit", exit_code=1, claim=True, record_start=True),
    Case("exited in the journal and the container", entry(E, container_id="c-exit", exit_code=4), (exited(4),), False,
         ActionKind.REPORT, container_id="c-exit", exit_code=4),
    Case("exited in the journal, container gone, output", entry(E, container_id="gone", exit_code=0), (), True,
         ActionKind.REPORT, exit_code=0, reason="the journal recorded its exit (code 0)",
         log="the container's log was lost"),
    Case("exited in the journal, container gone, no output", entry(E, container_id="gone", exit_code=1), (), False,
         ActionKind.REPORT, exit_code=1),
    Case("exited in the journal, container without exit code", entry(E, container_id="c-new", exit_code=3),
         (created(),), False, ActionKind.REPORT, container_id="c-new", exit_code=3),
    Case("started, container gone, output", entry(S, container_id="gone"), (), True, ActionKind.REPORT,
         status=RunStatus.UNKNOWN_ERROR, send_output=True, reason="exit code unknown",
         log="the output it wrote is attached"),
    Case("received, no container, output: it ran anyway", entry(RECV), (), True, ActionKind.REPORT,
         status=RunStatus.UNKNOWN_ERROR, send_output=True),
    # FAIL_LOST: it started, and no trace of how it ended is left; never re-run it
    Case("started, container gone, no output", entry(S, container_id="gone0123456789"), (), False,
         ActionKind.FAIL_LOST, status=RunStatus.FAILED, reason="started in container gone01234567 but",
         log="the node lost this run"),
    Case("started, container without exit code, no output", entry(S, container_id="c-new"), (created(),), False,
         ActionKind.FAIL_LOST, container_id="c-new", status=RunStatus.FAILED, log="It was not run again"),
    # REREPORT: the end was decided before; send it again
    Case("reported completed, output still here", entry(REP, status=RunStatus.COMPLETED), (exited(0),), True,
         ActionKind.REREPORT, container_id="c-exit", status=RunStatus.COMPLETED, send_output=True,
         reason="sending the result again", log="the result was sent again"),
    Case("reported completed, result gone", entry(REP, status=RunStatus.COMPLETED), (), False, ActionKind.REREPORT,
         status=RunStatus.FAILED, reason="the result is no longer here", log="run the task again"),
    Case("reported crashed", entry(REP, status=RunStatus.CRASHED), (), False, ActionKind.REREPORT,
         status=RunStatus.CRASHED, log="ended 'crashed'"),
    Case("reported crashed, output irrelevant", entry(REP, status=RunStatus.CRASHED), (), True, ActionKind.REREPORT,
         status=RunStatus.CRASHED, send_output=False),
    Case("reported without status", entry(REP), (), False, ActionKind.REREPORT, status=RunStatus.UNKNOWN_ERROR),
    # The server already has a final status (a node-wide kill of a reference node leaves no finished_at)
    Case("killed without finished_at, container running", entry(S, container_id="c-run"), (running(),), False,
         ActionKind.REREPORT, container_id="c-run", status=RunStatus.KILLED, server_status=RunStatus.KILLED,
         reason="closing it, not running it"),
    Case("killed without finished_at, never received", None, (), False, ActionKind.REREPORT,
         status=RunStatus.KILLED, claim=True, server_status=RunStatus.KILLED),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_one_decision_per_open_run(case: Case):
    result = reconcile(
        [run(status=case.server_status)],
        [case.journal] if case.journal else [],
        list(case.containers),
        [R] if case.output else [],
        task_folders=[R],
    )
    assert len(result.actions) == 1
    action = result.actions[0]
    assert action.kind is case.kind
    assert action.run == run(status=case.server_status)
    assert action.entry == case.journal
    assert (action.container_id, action.exit_code, action.status, action.send_output) == (
        case.container_id, case.exit_code, case.status, case.send_output
    )
    assert (action.needs_claim, action.needs_start_recorded) == (case.claim, case.record_start)
    assert action.reason.startswith(f"run {R}: ")
    assert case.reason in action.reason
    assert case.log in action.log
    if action.status is not None:
        assert action.status.is_final and action.log.startswith("[v6node]")
    assert result.containers_to_remove == case.removed
    assert result.folders_to_remove == ()  # the run is open: its folder is the action's
    assert result.entries_to_forget == ()


def test_a_run_is_never_started_once_a_container_may_have_run():
    """Whatever else is known, any trace of a start rules START out."""
    traces = [
        (entry(S, container_id="gone"), (), False),
        (entry(E, exit_code=0), (), False),
        (entry(REP, status=RunStatus.COMPLETED), (), False),
        (None, (exited(0),), False),
        (None, (running(),), False),
        (None, (), True),
    ]
    for journal, containers, output in traces:
        action = reconcile([run()], [journal] if journal else [], list(containers), [R] if output else []).actions[0]
        assert action.kind is not ActionKind.START, (journal, containers, output)


# --- what belongs to no open run --------------------------------------------------------------------
def test_containers_of_runs_the_server_no_longer_lists_are_removed():
    result = reconcile(
        [run(1)],
        [entry(S, run_id=2, container_id="c2"), entry(S, run_id=3, container_id="c3")],
        [running("c1", 1), exited(0, "c2", 2), running("c3", 3)],
    )
    assert [a.run_id for a in result.actions] == [1]
    assert result.containers_to_remove == ("c2", "c3")  # exited or still running: finished/killed elsewhere
    assert any("c2" in note and "no open run 2" in note for note in result.notes)


def test_two_containers_of_one_run_keep_the_journals_and_remove_the_other():
    result = reconcile([run()], [entry(S, container_id="c-b")], [running("c-a"), exited(0, "c-b")])
    action = result.actions[0]
    assert (action.kind, action.container_id, action.exit_code) == (ActionKind.REPORT, "c-b", 0)
    assert result.containers_to_remove == ("c-a",)
    assert any("second container of run 7; keeping c-b" in note for note in result.notes)


@pytest.mark.parametrize(
    ("containers", "kept", "removed"),
    [
        ((exited(0, "c-a"), running("c-b")), "c-b", ("c-a",)),  # the running one
        ((created("c-a"), exited(3, "c-b")), "c-b", ("c-a",)),  # one with an exit code over one without
        ((exited(1, "c-b"), exited(0, "c-a")), "c-a", ("c-b",)),  # else the first by id: stable
    ],
)
def test_two_containers_the_journal_does_not_name(containers, kept, removed):
    result = reconcile([run()], [entry(RECV)], list(containers))
    assert result.actions[0].container_id == kept
    assert result.containers_to_remove == removed


def test_containers_without_a_run_label_are_not_judged():
    sidecar = ContainerInfo(id="squid", name="vantage6-alpha-squid", labels={LABEL_MANAGED_BY: "alpha"}, running=True)
    odd = ContainerInfo(id="odd", name="x", labels={LABEL_MANAGED_BY: "alpha", LABEL_RUN: "not-a-number"})
    result = reconcile([run()], [], [sidecar, odd])
    assert result.containers_to_remove == ()
    assert result.actions[0].kind is ActionKind.START


def test_a_container_labelled_with_another_task_is_not_the_runs():
    result = reconcile([run()], [entry(RECV)], [container("c-old", exit_code=0, task_id=999)])
    assert result.actions[0].kind is ActionKind.START
    assert result.containers_to_remove == ("c-old",)
    assert any("task 999" in note for note in result.notes)


def test_a_container_of_another_server_or_node_is_no_evidence_and_is_removed():
    theirs = running("c-theirs")
    theirs.labels[LABEL_IDENTITY] = "0123456789abcdef"
    ours = exited(0, "c-ours", run_id=8)
    ours.labels[LABEL_IDENTITY] = "fedcba9876543210"
    result = reconcile([run(), run(8)], [entry(RECV)], [theirs, ours], identity="fedcba9876543210")
    assert result.action_for(R).kind is ActionKind.START  # the same run id elsewhere is not ours
    assert result.containers_to_remove == ("c-theirs",)
    assert any("another server or node" in note and "0123456789abcdef" in note for note in result.notes)
    assert result.action_for(8).container_id == "c-ours"


def test_a_journal_entry_of_another_task_is_forgotten_and_the_run_starts_fresh():
    stale = entry(REP, task_id=999, status=RunStatus.COMPLETED)
    result = reconcile([run()], [stale], [], [R], task_folders=[R])
    action = result.actions[0]
    assert (action.kind, action.entry, action.needs_claim) == (ActionKind.START, None, True)
    assert result.entries_to_forget == (R,)  # forget first, then claim
    assert result.folders_to_remove == ()  # START overwrites it


def test_entries_of_runs_no_longer_open_are_forgotten_unless_recent():
    old = entry(REP, run_id=1, status=RunStatus.COMPLETED, updated_at=T0 - timedelta(days=8))
    recent = entry(REP, run_id=2, status=RunStatus.COMPLETED, updated_at=T0 - timedelta(hours=1))
    undated = entry(S, run_id=3)
    everything = reconcile([], [old, recent, undated], [])
    assert everything.entries_to_forget == (1, 2, 3)
    kept_recent = reconcile([], [old, recent, undated], [], keep_entries_since=T0 - timedelta(days=7))
    assert kept_recent.entries_to_forget == (1, 3)
    assert kept_recent.actions == ()


def test_task_folders_of_runs_no_longer_open_are_removed():
    result = reconcile([run(1)], [], [], outputs=[3], task_folders=[1, 2, 4])
    assert result.folders_to_remove == (2, 3, 4)
    assert sum("task folder" in note for note in result.notes) == 3


def test_runs_this_process_is_handling_are_left_alone():
    """A reconnect happens while runs execute: their containers, folders and entries are not stale."""
    result = reconcile(
        [run(1), run(2)],
        [entry(S, run_id=1, container_id="c1"), entry(RECV, run_id=5), entry(S, run_id=6, container_id="c6")],
        [running("c1", 1), running("c6", 6)],
        outputs=[6],
        task_folders=[1, 5, 6],
        in_process=[1, 5, 6],  # 5 and 6: claimed after the server's list was read
    )
    assert [a.run_id for a in result.actions] == [2]
    assert result.containers_to_remove == ()
    assert result.folders_to_remove == ()
    assert result.entries_to_forget == ()


def test_a_mixed_restart_sorts_out_every_run():
    runs = [run(1), run(2), run(3), run(4), run(5)]
    journal = [
        entry(S, run_id=2, container_id="c2"),
        entry(S, run_id=3, container_id="c3"),
        entry(S, run_id=4, container_id="c4"),
        entry(REP, run_id=5, status=RunStatus.CRASHED),
        entry(REP, run_id=9, status=RunStatus.COMPLETED),
    ]
    containers = [running("c2", 2), exited(0, "c3", 3), exited(137, "c9", 9)]
    result = reconcile(runs, journal, containers, outputs=[3], task_folders=[1, 2, 3, 4, 9])
    assert [(a.run_id, a.kind) for a in result.actions] == [
        (1, ActionKind.START),
        (2, ActionKind.REATTACH),
        (3, ActionKind.REPORT),
        (4, ActionKind.FAIL_LOST),
        (5, ActionKind.REREPORT),
    ]
    assert result.containers_to_remove == ("c9",)
    assert result.folders_to_remove == (9,)
    assert result.entries_to_forget == (9,)
    assert result.action_for(4) == result.actions[3]
    assert result.action_for(9) is None
    assert len(result.notes) == 3


def test_nothing_open_and_nothing_left_is_nothing_to_do():
    assert reconcile([], [], []) == Reconciliation()


def test_actions_are_values():
    first = reconcile([run()], [entry(S, container_id="c-run")], [running()]).actions[0]
    again = reconcile([run()], [entry(S, container_id="c-run")], [running()]).actions[0]
    assert first == again and isinstance(first, RunAction)
    with pytest.raises(AttributeError):
        first.kind = ActionKind.START  # type: ignore[misc]


def test_reconcile_is_pure():
    tree = ast.parse((REPO / "domain" / "reconcile.py").read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "collections", "datetime", "enum", "functools", "typing", "attrs", "v6node"}


# --- no open run is passed over in silence --------------------------------------------------------------
def _every_situation():
    """Every combination of what the server, the journal, the engine and the disk can say about one run."""
    import itertools

    server_states = [
        run(), run(status=RunStatus.ACTIVE), run(status=RunStatus.COMPLETED),
        evolve_run(run(status=RunStatus.ACTIVE), started_at=T0),
    ]
    entries = [None, *(entry(step) for step in RunStep), entry(RunStep.REPORTED, status=RunStatus.COMPLETED),
               entry(RunStep.EXITED, exit_code=3), entry(RunStep.STARTED, task_id=99),
               entry(RunStep.REPORTED, job_id=5, status=RunStatus.CRASHED)]
    engines = [[], [running()], [exited(0)], [exited(1)], [created()], [running(), exited(0, "c-2")],
               [container("c-other", task_id=42, exit_code=0)]]
    for server, journal_entry, found, output, busy in itertools.product(
        server_states, entries, engines, (False, True), (False, True)
    ):
        yield server, journal_entry, found, output, busy


def evolve_run(value: Run, **changes: object) -> Run:
    import attrs

    return attrs.evolve(value, **changes)


def test_every_open_run_gets_an_action_or_a_note_saying_why_not():
    walked = 0
    for server, journal_entry, found, output, busy in _every_situation():
        plan = reconcile(
            [server],
            [journal_entry] if journal_entry is not None else [],
            found,
            [R] if output else [],
            task_folders=[R],
            in_process=[R] if busy else [],
        )
        acted = plan.action_for(R) is not None
        noted = any(note.startswith(f"run {R} ") for note in plan.notes)
        assert acted != noted, (server, journal_entry, found, output, busy, plan)
        assert acted or busy  # only a run this process already holds goes without an action
        action = plan.action_for(R)
        if action is not None and action.kind is not ActionKind.START:
            assert action.reason.startswith(f"run {R}: ")  # the node logs it
        walked += 1
    assert walked == 4 * 9 * 7 * 2 * 2


def test_a_container_of_an_earlier_run_with_the_same_ids_is_a_leftover_not_the_runs_container():
    from v6node.domain.containers import LABEL_RUN_ASSIGNED

    now = evolve_run(run(status=RunStatus.PENDING), assigned_at=T0 + timedelta(hours=1))
    old = container("c-old", running=True)
    old = ContainerInfo(old.id, old.name, {**old.labels, LABEL_RUN_ASSIGNED: T0.isoformat()}, running=True)

    plan = reconcile([now], [], [old])

    assert plan.containers_to_remove == ("c-old",)
    assert plan.action_for(R).kind is ActionKind.START
    assert any("left from a reset server?" in note for note in plan.notes)


def test_the_containers_of_a_stale_journal_entry_go_with_it():
    now = evolve_run(run(), assigned_at=T0 + timedelta(hours=1))
    stale = entry(RunStep.STARTED, container_id="c-old", assigned_at=T0)

    plan = reconcile([now], [stale], [running("c-old")])

    assert plan.entries_to_forget == (R,)
    assert plan.containers_to_remove == ("c-old",)
    assert plan.action_for(R).kind is ActionKind.START
