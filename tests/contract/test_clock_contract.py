"""Clock: the system clock and the manual clock keep the same contract."""
from __future__ import annotations

import asyncio
from datetime import timezone

import pytest

from v6node.adapters.memory.manual_clock import ManualClock
from v6node.adapters.system.system_clock import SystemClock
from v6node.ports.clock import Clock


@pytest.fixture(params=["system", "manual"])
def clock(request: pytest.FixtureRequest) -> Clock:
    return SystemClock() if request.param == "system" else ManualClock()


async def advance(clock: Clock, seconds: float) -> None:
    """Let ``seconds`` pass: the manual clock is moved, the system clock is waited for."""
    if isinstance(clock, ManualClock):
        await clock.advance(seconds)


def test_both_clocks_keep_to_the_port(clock: Clock) -> None:
    assert isinstance(clock, Clock)


def test_now_is_aware_utc(clock: Clock) -> None:
    assert clock.now().tzinfo is not None and clock.now().utcoffset() == timezone.utc.utcoffset(None)


async def test_a_sleep_ends_once_its_time_has_passed_and_monotonic_time_moved_on(clock: Clock) -> None:
    before = clock.monotonic()
    sleeping = asyncio.ensure_future(clock.sleep(0.05))
    await asyncio.sleep(0)
    await advance(clock, 0.05)
    await asyncio.wait_for(sleeping, 5)
    assert clock.monotonic() - before >= 0.05


async def test_a_zero_sleep_returns_at_once(clock: Clock) -> None:
    await asyncio.wait_for(clock.sleep(0), 1)


async def test_cancelling_a_sleep_interrupts_it(clock: Clock) -> None:
    sleeping = asyncio.ensure_future(clock.sleep(3600))
    await asyncio.sleep(0)
    sleeping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeping
