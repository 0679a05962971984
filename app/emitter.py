"""The socket events the node sends, for the use cases that tell the server something."""
from __future__ import annotations

import asyncio
import logging

from v6node.app.session import NodeSession
from v6node.domain.errors import NotConnected
from v6node.domain.model import Run, StatusChange
from v6node.domain.status import RunStatus
from v6node.ports.event_stream import EventStream

log = logging.getLogger("v6node.node")


class Emitter:
    """Sends on the event stream; an event that cannot be sent while the websocket is down is
    dropped with a DEBUG line (every one of them is informative: the REST calls carry the state)."""

    def __init__(self, events: EventStream, session: NodeSession) -> None:
        self.events = events
        self.session = session

    async def emit(self, event: str, data: object = None, *, handled_within: float | None = None) -> None:
        """``handled_within``: wait up to that many seconds for the server to have handled it."""
        try:
            if handled_within is None:
                await self.events.emit(event, data)
                return
            async with asyncio.timeout(handled_within):
                await self.events.emit(event, data, handled=True)
        except NotConnected:
            log.debug("not connected; %s not sent (or not acknowledged)", event)
        except TimeoutError:
            log.debug("the server did not acknowledge %s within %g s", event, handled_within)

    async def status_changed(self, run: Run, status: RunStatus) -> None:
        """``algorithm_status_change`` for one of our runs."""
        me = self.session.me()
        change = StatusChange(
            node_id=me.node_id,
            organization_id=me.organization_id,
            collaboration_id=me.collaboration_id,
            run_id=run.id,
            task_id=run.task.id,
            parent_id=run.task.parent_id,
            status=status,
        )
        await self.emit("algorithm_status_change", change.as_payload())
