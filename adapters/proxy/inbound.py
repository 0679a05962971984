"""What the algorithm proxy accepts from algorithms: paths it forwards, blob ids, bodies within a cap."""
from __future__ import annotations

import re

from starlette.requests import Request

from v6node.adapters.proxy.streams import TooLarge, read_capped

# The generic route forwards a path only if, once percent-decoded, it is made of these
# characters: every endpoint algorithms call (spec §8.3) is. A decoded '%' is refused too,
# so a double-encoded character cannot turn into something else further on.
_SAFE_PATH = re.compile(r"[A-Za-z0-9._/-]*")
# vantage6 4.x blob ids are the server's str(uuid4()): 8-4-4-4-12 hex digits.
_BLOB_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class BadPath(Exception):
    """A path the proxy does not forward; the message says why."""


def forwardable_path(decoded: str) -> str:
    """The server path (no leading slash) for the percent-decoded request path, or ``BadPath``.

    Letters, digits, ``-``, ``_``, ``.`` and ``/`` only; no ``.`` or ``..`` segment. The
    decoded form is what is forwarded, so the server sees exactly what was checked.
    """
    path = decoded.lstrip("/")
    if not _SAFE_PATH.fullmatch(path):
        raise BadPath("The path may only hold letters, digits, '-', '_', '.' and '/'")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise BadPath("Dot segments are not allowed in the path")
    return path


def blob_id(value: str) -> str:
    """``value`` if it is a blob id (a UUID as the server writes it), else ``BadPath``."""
    if not _BLOB_ID.fullmatch(value):
        raise BadPath("A blob id is a UUID (8-4-4-4-12 hexadecimal digits)")
    return value


def check_declared_length(request: Request, limit: int, what: str) -> None:
    """``TooLarge`` at once when the request says its body is longer than ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(what, limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, or ``TooLarge`` as soon as it is known to be over ``limit`` bytes."""
    check_declared_length(request, limit, "The request body")
    return await read_capped(request.stream(), limit, "The request body")
