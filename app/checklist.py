"""The start-up checklist: one console line per start-up step as it completes.

An operator starting a node watches these lines to see how far it got; the step that
never gets its line is where it is stuck (the retry warnings below say why).
"""
from __future__ import annotations

import logging

log = logging.getLogger("v6node.startup")


def step_done(step: str, detail: str) -> None:
    log.info("[ok] %-10s %s", step, detail)
