import logging

from v6node.adapters.docker.pulls import MAX_LAYERS, PullProgress


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def downloading(layer: str, current: int, total: int) -> dict:
    return {"status": "Downloading", "id": layer, "progressDetail": {"current": current, "total": total}}


def test_progress_is_logged_at_most_once_per_interval(caplog):
    clock = Ticks()
    progress = PullProgress("127.0.0.1:5999/big", interval=10, clock=clock)
    with caplog.at_level(logging.INFO, logger="v6node.adapters.docker.pulls"):
        for step in range(1, 31):
            clock.now += 1
            progress.update(downloading("a", step * 2**20, 30 * 2**20))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0] == "pulling 127.0.0.1:5999/big: 0/1 layers done, 10 of 30 MiB, 10 s"


def test_summary_counts_finished_and_cached_layers():
    clock = Ticks()
    progress = PullProgress("img", clock=clock)
    progress.update(downloading("a", 2**20, 4 * 2**20))
    progress.update({"status": "Pull complete", "id": "a"})
    progress.update({"status": "Already exists", "id": "b"})
    progress.update({"status": "Pulling fs layer", "id": "c"})
    clock.now += 3
    assert progress.summary() == "2/3 layers done, 4 of 4 MiB, 3 s"


def test_hostile_messages_are_ignored_and_bounded():
    progress = PullProgress("img", clock=Ticks())
    progress.update({"status": "Downloading", "id": "x", "progressDetail": {"current": -5, "total": "lots"}})
    progress.update({"status": "Downloading", "id": ["not", "a", "string"]})
    progress.update({"status": "Downloading", "id": "y", "progressDetail": "nonsense"})
    for n in range(MAX_LAYERS + 50):
        progress.update({"status": "Waiting", "id": f"layer{n}"})
    assert progress.summary().startswith(f"0/{MAX_LAYERS} layers done")
