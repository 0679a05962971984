"""How a run's end is told in its log (pure)."""
from __future__ import annotations

LOGS_NOT_SHARED = "Node does not allow sharing algorithm logs"
# Exit codes of a container whose main process a signal ended (128 + the signal's number).
SIGNALS = {137: "SIGKILL", 143: "SIGTERM"}


def joined(*parts: str) -> str:
    """Log parts, each on lines of its own (empty parts left out)."""
    return "\n".join(part.rstrip("\n") for part in parts if part)


def why_it_stopped(exit_code: int, killed: bool, engine_lost: bool) -> str:
    """A log line for an algorithm stopped from outside the node (the node kills with SIGKILL
    only when asked to, and says so elsewhere); empty when it ended on its own."""
    if killed:
        return ""
    signal = SIGNALS.get(exit_code)
    if engine_lost:
        how = f" ({signal})" if signal else ""
        return (
            "[v6node] the Docker engine could not be reached while the algorithm ran (it was stopped or "
            f"restarted); when it answered again the container had ended with exit code {exit_code}{how}. "
            "An engine that shuts down stops the containers it runs."
        )
    if signal:
        return (
            f"[v6node] the algorithm was ended by {signal} (exit code {exit_code}) from outside the node: "
            "`docker stop` or `docker kill`, or the Docker engine shutting down or restarting"
        )
    return ""
