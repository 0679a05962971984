"""Reading an EventStream in tests."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from v6node.domain.events import NodeEvent, ServerMessage

TIMEOUT = 15.0


async def next_event(events: AsyncIterator[NodeEvent], timeout: float = TIMEOUT) -> NodeEvent:
    """The next event that matters; the server's ``message`` chatter is skipped."""
    async with asyncio.timeout(timeout):
        while True:
            event = await anext(events)
            if not isinstance(event, ServerMessage):
                return event
