"""Reconciliation: what to do with each open run, its containers and folders after a restart or reconnect."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any

from attrs import frozen

from v6node.domain.containers import LABEL_IDENTITY, LABEL_RUN, LABEL_RUN_ASSIGNED, LABEL_TASK, ContainerInfo
from v6node.domain.journal import JournalEntry, RunStep, stale_because
from v6node.domain.model import Run
from v6node.domain.status import RunStatus


class ActionKind(StrEnum):
    START = "start"  # nothing ran: execute it as a new run
    REATTACH = "reattach"  # its container still runs: wait for it again
    REPORT = "report"  # it ran to an end nobody reported: report that end
    REREPORT = "rereport"  # its end is decided already: send it (again) with finished_at
    FAIL_LOST = "fail lost"  # it started, then every trace vanished: end it `failed`


@frozen
class RunAction:
    """What to do with one open run, and why.

    - ``START``: claim it (when ``entry`` is None) and execute it like a new run.
    - ``REATTACH``: wait for ``container_id`` again, then finish as usual (exit code ->
      status, the output file as result). Authorize ``entry.token`` (or the task folder's
      token) at the proxy again while it runs.
    - ``REPORT``: without ``status``, the end follows from ``exit_code`` as for any run
      (0 -> ``completed`` with the output file, else ``crashed``), with the logs of
      ``container_id`` when there is one and ``log`` (if any) on a line of its own. With ``status`` (the exit code
      is unknown), report that status with ``log``, and the output file as the result when
      ``send_output``.
    - ``REREPORT`` and ``FAIL_LOST``: report ``status`` with ``finished_at`` and ``log``, and
      the output file as the result when ``send_output``.
    Afterwards remove ``container_id`` (if any) and the task folder, as after any run.
    """

    kind: ActionKind
    run: Run
    reason: str
    entry: JournalEntry | None = None
    container_id: str | None = None
    exit_code: int | None = None
    status: RunStatus | None = None
    send_output: bool = False
    log: str = ""

    @property
    def run_id(self) -> int:
        return self.run.id

    @property
    def needs_claim(self) -> bool:
        """The journal holds no entry for this run: ``claim`` it before acting."""
        return self.entry is None

    @property
    def needs_start_recorded(self) -> bool:
        """A container ran that the journal never recorded: ``advance(STARTED, container_id=…)``."""
        return (
            self.kind in (ActionKind.REATTACH, ActionKind.REPORT)
            and self.container_id is not None
            and (self.entry is None or self.entry.step < RunStep.STARTED)
        )


@frozen
class Reconciliation:
    """Per open run one action; plus what belongs to no open run, to remove or forget."""

    actions: tuple[RunAction, ...] = ()
    containers_to_remove: tuple[str, ...] = ()
    folders_to_remove: tuple[int, ...] = ()  # run ids of task folders
    entries_to_forget: tuple[int, ...] = ()  # run ids of journal entries
    notes: tuple[str, ...] = ()  # why each container, folder and entry goes, for the node's log

    def action_for(self, run_id: int) -> RunAction | None:
        return next((action for action in self.actions if action.run_id == run_id), None)


def reconcile(
    open_runs: Iterable[Run],
    entries: Iterable[JournalEntry],
    containers: Iterable[ContainerInfo],
    outputs: Iterable[int] = (),
    *,
    task_folders: Iterable[int] = (),
    in_process: Iterable[int] = (),
    keep_entries_since: datetime | None = None,
    identity: str | None = None,
) -> Reconciliation:
    """Decide what happens to every open run of this node and to everything left behind.

    ``open_runs``: this node's runs the server lists open (``finished_at`` unset); runs of
    other organizations never belong in it. ``containers``: what the engine lists with the
    node's label; only containers with a ``run_id`` label are judged (sidecars are not).
    ``outputs``: run ids whose task folder holds a non-empty output file (the node creates
    an empty one before the algorithm starts). ``task_folders``: run ids with a task folder.
    ``in_process``: runs this process has claimed and not yet finished (queued or executing);
    they, their containers, folders and entries are left alone. ``keep_entries_since``:
    entries of runs no longer open are forgotten only when last updated before this moment
    (None: forget them all). ``identity``: the fingerprint of the server and node the node
    runs as; a container labelled with another one was left by another server's runs.

    Rules: a run is never executed again once a container may have run for it; the
    evidence is, in order, a final status on the server, the journal's REPORTED, a running
    container, an exit code (container, then journal), an output file, the journal's STARTED,
    and the server's ``started_at`` when the journal has no record of the run at all.
    A journal entry that describes another server's run of the same id (``stale_because``)
    is no evidence: it is forgotten, with the task folder it names.
    Every open run gets an action, or a note saying why it gets none (already queued or
    running in this process): none is passed over in silence.
    """
    runs = {run.id: run for run in open_runs}
    busy = frozenset(in_process)
    journal = {entry.run_id: entry for entry in entries}
    with_output = frozenset(outputs)
    remove: list[str] = []
    forget: list[int] = []
    notes: list[str] = []

    found: dict[int, list[ContainerInfo]] = defaultdict(list)
    for container in containers:
        run_id = _int_label(container, LABEL_RUN)
        if run_id is None or run_id in busy:
            continue
        run = runs.get(run_id)
        task_id = _int_label(container, LABEL_TASK)
        labelled = container.labels.get(LABEL_IDENTITY)
        if identity is not None and labelled is not None and labelled != identity:
            remove.append(container.id)
            notes.append(
                f"container {_short(container.id)} of run {run_id} was started for another server or node "
                f"(identity {labelled}, now {identity})"
            )
        elif run is None:
            remove.append(container.id)
            notes.append(
                f"container {_short(container.id)} of run {run_id}: the server lists no open run {run_id} "
                "(finished or killed elsewhere)"
            )
        elif task_id is not None and task_id != run.task.id:
            remove.append(container.id)
            notes.append(
                f"container {_short(container.id)} is labelled run {run_id} of task {task_id}, but open run "
                f"{run_id} belongs to task {run.task.id} (left from another server?)"
            )
        elif _other_run_created(container, run):
            remove.append(container.id)
            notes.append(
                f"container {_short(container.id)} ran a run {run_id} created at {container.labels[LABEL_RUN_ASSIGNED]}, "
                f"but open run {run_id} was created at {_iso(run.assigned_at)} (left from a reset server?)"
            )
        else:
            found[run_id].append(container)

    actions: list[RunAction] = []
    for run_id in sorted(runs):
        if run_id in busy:
            notes.append(f"run {run_id} is already queued or running in this process")
            continue
        run = runs[run_id]
        entry = journal.get(run_id)
        why_stale = stale_because(entry, run) if entry is not None else None
        stale = why_stale is not None
        if why_stale is not None:
            # Its output file and its containers are no evidence either: they were the other run's.
            forget.append(run_id)
            notes.append(f"journal entry of run {run_id} describes another run: {why_stale} (left from another server?)")
            entry = None
            for other in found.pop(run_id, []):
                remove.append(other.id)
                notes.append(f"container {_short(other.id)} of run {run_id} belongs to the run the stale entry describes")
        chosen, extras = _pick(found.get(run_id, []), entry)
        cid = chosen.id if chosen is not None else None
        for extra in extras:
            remove.append(extra.id)
            notes.append(
                f"container {_short(extra.id)} is a second container of run {run_id}; keeping {_short(cid)}"
            )
        action = _decide(run, entry, chosen, run_id in with_output and not stale)
        if chosen is not None and action.container_id is None:
            # Left by a start that never happened (created, not started); the run starts afresh.
            remove.append(chosen.id)
            notes.append(f"container {_short(chosen.id)} of run {run_id} was created but never started")
        actions.append(action)

    for run_id, entry in sorted(journal.items()):
        if run_id in runs or run_id in busy:
            continue
        if _updated_since(entry, keep_entries_since):
            continue
        forget.append(run_id)
        notes.append(f"journal entry of run {run_id}: the run is no longer open on the server")

    folders = tuple(
        run_id for run_id in sorted(frozenset(task_folders) | with_output) if run_id not in runs and run_id not in busy
    )
    notes.extend(f"task folder of run {run_id}: the run is no longer open on the server" for run_id in folders)
    return Reconciliation(
        actions=tuple(actions),
        containers_to_remove=tuple(dict.fromkeys(remove)),
        folders_to_remove=folders,
        entries_to_forget=tuple(sorted(set(forget))),
        notes=tuple(notes),
    )


def _decide(run: Run, entry: JournalEntry | None, container: ContainerInfo | None, has_output: bool) -> RunAction:
    step = entry.step if entry is not None else None
    cid = container.id if container is not None else None
    act = partial(_action, run, entry)
    if run.status.is_final:
        return act(
            ActionKind.REREPORT,
            f"the server has it '{run.status}' but not finished; closing it, not running it",
            container_id=cid,
            status=run.status,
            log=f"[v6node] closed by the node: the run had status '{run.status}' but no finished_at",
        )
    if step is RunStep.REPORTED:
        assert entry is not None
        return _rereport(entry, cid, has_output, act)
    if container is not None and container.running:
        unrecorded = " (started before the journal recorded it)" if step is None or step < RunStep.STARTED else ""
        return act(
            ActionKind.REATTACH,
            f"container {_short(cid)} is still running{unrecorded}; waiting for it again",
            container_id=cid,
        )

    exit_code = container.exit_code if container is not None else None
    if exit_code is None and entry is not None:
        exit_code = entry.exit_code
    if exit_code is not None:
        lost_log = (
            "" if container is not None
            else "[v6node] the container's log was lost: the container was removed while the node was away"
        )
        where = f"container {_short(cid)} exited" if container is not None else "the journal recorded its exit"
        return act(
            ActionKind.REPORT,
            f"{where} (code {exit_code}) but it was never reported; reporting it, not running it again",
            container_id=cid,
            exit_code=exit_code,
            log=lost_log,
        )
    if has_output:
        return act(
            ActionKind.REPORT,
            "its container is gone (or never ended) but left an output file; "
            "reporting it with the output, exit code unknown",
            container_id=cid,
            status=RunStatus.UNKNOWN_ERROR,
            send_output=True,
            log=(
                "[v6node] the node lost track of this run's container, so its exit code is unknown; "
                "the output it wrote is attached"
            ),
        )
    if step is None and run.started_at is not None:
        return act(
            ActionKind.FAIL_LOST,
            f"the server says it started at {run.started_at.isoformat()}, but this node has no record of it "
            "(its journal was lost or set aside); failing it, not running it again",
            container_id=cid,
            status=RunStatus.FAILED,
            log=(
                "[v6node] this run was started before, but the node has no record of it (its journal was lost "
                "or belonged to another server), so how it ended is unknown. It was not run again because it "
                "may already have had side effects; create the task again."
            ),
        )
    if step is None or step is RunStep.RECEIVED:
        never = "never received" if step is None else "received but never started"
        return act(ActionKind.START, f"{never}; safe to run")
    assert entry is not None  # STARTED, or EXITED without an exit code
    return act(
        ActionKind.FAIL_LOST,
        f"the journal says it started in container {_short(entry.container_id)} but that container "
        "shows no exit and there is no output; failing it, not running it again",
        container_id=cid,
        status=RunStatus.FAILED,
        log=(
            "[v6node] the node lost this run: it was started, but its container is gone (or never ended) "
            "and left no output, so how it ended is unknown. It was not run again because it may "
            "already have had side effects."
        ),
    )


def _action(run: Run, entry: JournalEntry | None, kind: ActionKind, reason: str, **fields: Any) -> RunAction:
    return RunAction(kind, run, f"run {run.id}: {reason}", entry, **fields)


def _rereport(
    entry: JournalEntry, cid: str | None, has_output: bool, act: Callable[..., RunAction]
) -> RunAction:
    """The end was decided and sent before; the result itself is not kept, only the status."""
    reported = entry.status
    if reported is RunStatus.COMPLETED and has_output:
        return act(
            ActionKind.REREPORT,
            "reported 'completed' but the server still lists it open; sending the result again",
            container_id=cid,
            status=RunStatus.COMPLETED,
            send_output=True,
            log="[v6node] the result was sent again after a restart; the original log was not kept",
        )
    if reported is RunStatus.COMPLETED:
        return act(
            ActionKind.REREPORT,
            "reported 'completed' but the server still lists it open and the result is no longer here; "
            "ending it 'failed'",
            container_id=cid,
            status=RunStatus.FAILED,
            log=(
                "[v6node] this run completed and its result was sent, but the server does not have it and "
                "the node no longer keeps it; run the task again"
            ),
        )
    if reported is None:
        return act(
            ActionKind.REREPORT,
            "the journal closed it without a status but the server still lists it open; "
            "ending it 'unknown error'",
            container_id=cid,
            status=RunStatus.UNKNOWN_ERROR,
            log="[v6node] the node had dropped this run (the server reported it finished) but it is open again",
        )
    return act(
        ActionKind.REREPORT,
        f"reported '{reported}' but the server still lists it open; reporting it again",
        container_id=cid,
        status=reported,
        log=(
            f"[v6node] the run ended '{reported}'; this was sent again after a restart "
            "and the original log was not kept"
        ),
    )


def _pick(
    containers: list[ContainerInfo], entry: JournalEntry | None
) -> tuple[ContainerInfo | None, list[ContainerInfo]]:
    """The run's container: the journal's, else a running one, else one that exited; the rest are extras."""
    if not containers:
        return None, []
    recorded = entry.container_id if entry is not None else None
    ranked = sorted(
        containers,
        key=lambda c: (c.id != recorded, not c.running, c.exit_code is None, c.id),
    )
    return ranked[0], ranked[1:]


def _updated_since(entry: JournalEntry, moment: datetime | None) -> bool:
    return moment is not None and entry.updated_at is not None and entry.updated_at >= moment


def _int_label(container: ContainerInfo, label: str) -> int | None:
    value = container.labels.get(label, "")
    return int(value) if value.isdigit() else None


def _other_run_created(container: ContainerInfo, run: Run) -> bool:
    labelled = container.labels.get(LABEL_RUN_ASSIGNED)
    return labelled is not None and run.assigned_at is not None and labelled != run.assigned_at.isoformat()


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else "?"


def _short(container_id: str | None) -> str:
    return (container_id or "?")[:12]
