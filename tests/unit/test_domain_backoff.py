import pytest

from v6node.domain.backoff import Backoff


def test_delays_grow_by_the_factor_up_to_the_maximum():
    backoff = Backoff(first=0.5, maximum=4, factor=2)
    delays = backoff.delays()
    assert [next(delays) for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]


def test_jitter_shortens_each_delay_by_at_most_its_share():
    backoff = Backoff(first=10, maximum=10, jitter=0.5)
    assert backoff.delay(0, draw=lambda: 0.0) == 10
    assert backoff.delay(0, draw=lambda: 1.0) == 5
    assert backoff.delay(3, draw=lambda: 0.5) == 7.5


def test_a_long_failure_streak_neither_overflows_nor_passes_the_maximum():
    assert Backoff(first=1, maximum=30).delay(10_000) == 30


@pytest.mark.parametrize(
    "bad", [{"first": 0}, {"maximum": -1}, {"factor": 0.5}, {"jitter": 1.5}, {"jitter": -0.1}]
)
def test_nonsense_settings_are_refused(bad):
    with pytest.raises(ValueError):
        Backoff(**bad)
