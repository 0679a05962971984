"""Waiting for a container to stop on the engine's wait endpoint, abortable from another thread;
running a one-shot helper container to its end."""
from __future__ import annotations

import json
import threading
from contextlib import suppress

import docker
import docker.errors
import requests
from docker.types import CancellableStream

from v6node.adapters.docker.errors import docker_errors
from v6node.domain.errors import ContainerError, RuntimeUnavailable


class PendingWait:
    """One blocking wait request; ``abort`` closes its socket so the waiting thread returns at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._response: requests.Response | None = None
        self.aborted = False

    def attach(self, response: requests.Response) -> None:
        with self._lock:
            self._response = response
            aborted = self.aborted
        if aborted:
            self._close(response)

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            response = self._response
        if response is not None:
            self._close(response)

    @staticmethod
    def _close(response: requests.Response) -> None:
        try:
            CancellableStream(None, response).close()
        except Exception:  # noqa: BLE001 - e.g. SSH transports; closing the response is the fallback
            response.close()


def blocking_wait(api: docker.APIClient, container_id: str, pending: PendingWait) -> int:
    """The engine's wait endpoint, read without a timeout; ``pending.abort()`` ends it early."""
    what = f"waiting for container {container_id[:12]}"
    with docker_errors(what):
        # The engine answers with headers as soon as the wait is registered and sends the
        # body when the container stops; stream=True lets us hold the socket to abort it.
        response = api._post(
            api._url("/containers/{0}/wait", container_id),
            params={"condition": "not-running"},
            stream=True,
            timeout=None,
        )
        try:
            api._raise_for_status(response)
            pending.attach(response)
            try:
                body = response.content
            except (requests.exceptions.RequestException, OSError):
                if not pending.aborted:
                    raise
        finally:
            response.close()
    if pending.aborted:
        raise RuntimeUnavailable(f"{what}: stopped waiting (cancelled, or the runtime was closed)")
    result = json.loads(body)
    if result.get("Error") and result["Error"].get("Message"):
        raise ContainerError(f"{what}: {result['Error']['Message']}")
    return int(result["StatusCode"])


def run_once(api: docker.APIClient, container_id: str, timeout: float) -> tuple[int, str]:
    """Start a created one-shot container, wait up to ``timeout`` s for it to end, and return its
    exit code and output; the container is removed whatever happens."""
    try:
        api.start(container_id)
        status = int(api.wait(container_id, timeout=timeout)["StatusCode"])
        output = api.logs(container_id, stdout=True, stderr=True).decode("utf-8", "replace")
    finally:
        with suppress(docker.errors.DockerException):
            api.remove_container(container_id, force=True)
    return status, output
