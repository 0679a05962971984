"""Tell whoever started the node that it is online: systemd (``sd_notify``) and ``start --detach``."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from typing import Any

log = logging.getLogger("v6node")


class ReadinessNotifier:
    """Sends the node's state to a systemd notify socket and/or a pipe, both optional.

    ``notify_socket`` is ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket):
    systemd's ``Type=notify`` then counts the node as started when it is online at the
    server, not when the process exists. ``ready_fd`` is the write end of a pipe from
    ``v6node start --detach``: one JSON line when the node is online, then the pipe is
    closed; a process that dies first closes it without a line. Failures to notify are
    logged and never stop the node.
    """

    def __init__(self, notify_socket: str | None = None, ready_fd: int | None = None) -> None:
        self._socket_address = notify_socket or None
        self._ready_fd = ready_fd

    def ready(self, details: dict[str, Any]) -> None:
        self._systemd("READY=1\nSTATUS=online: " + str(details.get("summary", "")))
        if self._ready_fd is not None:
            fd, self._ready_fd = self._ready_fd, None
            try:
                os.write(fd, (json.dumps(details) + "\n").encode("utf-8"))
            except OSError as exc:  # the starting command was interrupted: nobody reads
                log.debug("could not report readiness to the starting command: %s", exc)
            finally:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def stopping(self) -> None:
        self._systemd("STOPPING=1")

    def status(self, text: str) -> None:
        self._systemd(f"STATUS={text}")

    def _systemd(self, message: str) -> None:
        address = self._socket_address
        if not address:
            return
        target = "\0" + address[1:] if address.startswith("@") else address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode("utf-8"), target)
        except OSError as exc:
            log.warning("could not notify systemd at %s: %s", address, exc)
