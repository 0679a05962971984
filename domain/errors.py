"""The node's error tree: one root, a family per port, and a ``retryable`` flag."""
from __future__ import annotations


class NodeError(Exception):
    """Root of every error the node raises on purpose."""

    retryable: bool = False


# --- configuration -----------------------------------------------------------------
class ConfigError(NodeError):
    """A node configuration file that cannot be used; names the file and the key."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = f"{file}: " if file else ""
        at = f"key '{key}': " if key else ""
        super().__init__(f"{where}{at}{problem}")


class NodeAlreadyRunning(NodeError):
    """Another node process uses the same data folder (journal, task folders, containers)."""


# --- server API --------------------------------------------------------------------
class ServerError(NodeError):
    """Something went wrong talking to the vantage6 server."""


class ServerUnavailable(ServerError):
    """The server could not be reached or answered 5xx; trying again later may work."""

    retryable = True


class AuthenticationFailed(ServerError):
    """The server refused our credentials (wrong API key); retrying will not help."""


class ServerRejected(ServerError):
    """The server answered a 4xx: the request itself was refused."""

    def __init__(self, status: int, message: str, method: str = "", path: str = "") -> None:
        self.status = status
        self.message = message
        self.method = method
        self.path = path
        super().__init__(f"{method} {path} -> HTTP {status}: {message}".strip())


class RunAlreadyFinished(ServerRejected):
    """The server refuses to update a run that already has ``finished_at`` (expected after a kill)."""


# --- event stream --------------------------------------------------------------------
class EventStreamError(NodeError):
    """The websocket to the server failed."""

    retryable = True


class NotConnected(EventStreamError):
    """An emit was attempted while the websocket is down."""


# --- containers ----------------------------------------------------------------------
class ContainerError(NodeError):
    """The container engine failed to do what was asked."""


class RuntimeUnavailable(ContainerError):
    """The container engine cannot be reached."""

    retryable = True


class ImageNotFound(ContainerError):
    """The algorithm image is neither pullable nor present locally."""


class ContainerStartFailed(ContainerError):
    """The container could not be created or started."""


class ContainerNotFound(ContainerError):
    """No container with that id exists (any more)."""


class ResourcesLeft(ContainerError):
    """A clean-up removed what it could; ``left`` says what stays and why."""

    def __init__(self, left: list[str], removed: int) -> None:
        self.left = tuple(left)
        self.removed = removed
        super().__init__(f"removed {removed}, but could not remove: {'; '.join(left)}")


class CleanupIncomplete(NodeError):
    """The node stopped, but some of what it made is still there (listed in the message)."""


# --- run preparation -------------------------------------------------------------------
class CryptoError(NodeError):
    """Data could not be encrypted or decrypted."""


class OutputRejected(NodeError):
    """What an algorithm left as its output cannot be used: a link, a pipe, a device, a
    directory, a file with other names, or more than the size limit. The node never
    follows or waits on what an algorithm wrote."""


class InvalidRunEnvironment(NodeError):
    """An environment variable for the algorithm is not allowed (bad name or reserved)."""


class JournalError(NodeError):
    """The local run journal could not be read or written."""


# --- sidecars ----------------------------------------------------------------------------
class SidecarFailed(ContainerError):
    """A sidecar (Squid, an SSH tunnel) did not become ready or could not be made; ``reason``
    says why in the operator's terms (a wrong fingerprint, a refused key, ...)."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")
