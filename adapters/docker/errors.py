"""The one place where docker SDK and requests exceptions become the node's errors."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import docker.errors
import requests
import urllib3

from v6node.domain.errors import ContainerError, ContainerNotFound, RuntimeUnavailable


# The engine did not answer (socket missing, refused, timed out) or broke off an answer
# half-way (it stopped while a wait was open).
_UNREACHABLE = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    ConnectionError,
)


def is_unreachable(exc: BaseException) -> bool:
    """The engine did not answer, or stopped answering, anywhere in the cause chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _UNREACHABLE):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def translate(
    exc: Exception,
    what: str,
    not_found: type[ContainerError] = ContainerNotFound,
    failed: type[ContainerError] = ContainerError,
) -> ContainerError:
    """The one place where docker SDK and requests exceptions become the node's errors."""
    if is_unreachable(exc):
        return RuntimeUnavailable(f"{what}: the Docker engine cannot be reached ({exc})")
    if isinstance(exc, docker.errors.NotFound):
        return not_found(f"{what}: {getattr(exc, 'explanation', None) or exc}")
    if isinstance(exc, docker.errors.APIError):
        return failed(f"{what}: {exc.explanation or exc}")
    return failed(f"{what}: {exc}")


@contextmanager
def docker_errors(
    what: str, not_found: type[ContainerError] = ContainerNotFound, failed: type[ContainerError] = ContainerError
) -> Iterator[None]:
    try:
        yield
    except (
        docker.errors.DockerException,
        requests.exceptions.RequestException,
        urllib3.exceptions.HTTPError,  # a wait's body read raw, cut off half-way
        ConnectionError,
    ) as exc:
        raise translate(exc, what, not_found, failed) from exc


def status_code(exc: docker.errors.APIError) -> int | None:
    return exc.response.status_code if exc.response is not None else None
