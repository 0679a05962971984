"""Transport-level limits of the algorithm proxy: connections in total and per peer, time to send request headers.

uvicorn (0.55) has no timeout before a connection's first request and counts idle
connections against ``limit_concurrency`` only to answer *requests* with 503: a peer that
opens connections and never writes keeps them, and their file descriptors, for ever. The
protocol class built here refuses a connection before anything is read from it.
"""
from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

from v6node.adapters.proxy.refusal_log import RefusalLog

log = logging.getLogger("v6node.proxy")


class ConnectionLimits:
    """Open connections of one proxy, counted in total and per peer address.

    ``admit`` either counts a new connection or says why it is refused; ``release`` undoes
    it. Peers with no open connection are forgotten, so the table holds at most
    ``max_connections`` entries.
    """

    def __init__(
        self, *, max_connections: int, max_per_peer: int, header_timeout: float, refusals: RefusalLog
    ) -> None:
        if not 1 <= max_per_peer < max_connections:
            raise ValueError(
                f"the cap per peer ({max_per_peer}) must be at least 1 and below the total cap ({max_connections}),"
                " so that one peer cannot take every slot"
            )
        if header_timeout <= 0:
            raise ValueError(f"header_timeout must be positive, got {header_timeout}")
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.header_timeout = header_timeout
        self.refusals = refusals
        self.total = 0
        self._by_peer: dict[str, int] = {}

    def admit(self, peer: str) -> str | None:
        """None when the connection is counted; else why it is refused."""
        if self.total >= self.max_connections:
            return f"the proxy has {self.total} connections open, its cap"
        open_here = self._by_peer.get(peer, 0)
        if open_here >= self.max_per_peer:
            return f"{open_here} connections from this peer are open, the cap per peer"
        self.total += 1
        self._by_peer[peer] = open_here + 1
        return None

    def release(self, peer: str) -> None:
        self.total -= 1
        left = self._by_peer.pop(peer) - 1
        if left:
            self._by_peer[peer] = left

    def protocol_class(self) -> type[H11Protocol]:
        """uvicorn's h11 protocol bound to these limits (``uvicorn.Config(http=...)``)."""
        return type("LimitedH11Protocol", (_LimitedH11Protocol,), {"limits": self})


class _LimitedH11Protocol(H11Protocol):
    """h11 connection that is counted, refused over the caps, and closed when its request head is late.

    The header timer runs whenever the connection waits for a request: from the moment it
    is made, and again after each response (a keep-alive connection that starts a request
    and stalls, or keeps trickling the body of a refused one, is closed too). It stops when
    a complete request head has arrived. uvicorn's own keep-alive timer still closes a
    connection that stays silent after a response.
    """

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._peer: str | None = None  # set while the connection is counted
        self._head_timer: asyncio.TimerHandle | None = None
        self._cycle_awaited_after: object = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = _peer_host(transport)
        refusal = self.limits.admit(peer) if peer is not None else "its address is unknown (already gone)"
        if peer is None or refusal is not None:
            self.limits.refusals.warn(peer, "refused a connection from %s: %s", peer, refusal)
            transport.abort()  # nothing read, nothing written, no lingering close
            return
        self._peer = peer
        self.logger = _PeerWarnings(self.logger, self.limits.refusals, peer)  # type: ignore[assignment]
        super().connection_made(transport)
        self._await_request_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._peer is None:
            return  # refused in connection_made: uvicorn never knew of it
        self._stop_head_timer()
        self.limits.release(self._peer)
        self._peer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._peer is None:
            return
        super().data_received(data)
        self._stop_head_timer_on_new_request()

    def on_response_complete(self) -> None:
        # Armed first: uvicorn goes on with a pipelined request inside this call.
        if not self.transport.is_closing():
            self._await_request_head()
        super().on_response_complete()
        self._stop_head_timer_on_new_request()

    def _await_request_head(self) -> None:
        self._stop_head_timer()
        self._cycle_awaited_after = self.cycle
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _stop_head_timer_on_new_request(self) -> None:
        # uvicorn starts a new request cycle exactly when h11 has a complete request head.
        if self._head_timer is not None and self.cycle is not self._cycle_awaited_after:
            self._stop_head_timer()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.limits.refusals.warn(
                self._peer, "closed a connection from %s: no complete request head within %g s",
                self._peer, self.limits.header_timeout,
            )
            self.transport.abort()


class _PeerWarnings:
    """uvicorn's connection logger with its warnings (a malformed request, an unsupported upgrade,
    both answerable without a token) sent through the rate-limited refusal log."""

    def __init__(self, logger: logging.Logger, refusals: RefusalLog, peer: str) -> None:
        self._logger = logger
        self._refusals = refusals
        self._peer = peer

    @property
    def level(self) -> int:
        return self._logger.level

    def warning(self, message: str, *args: object) -> None:
        self._refusals.warn(self._peer, "connection from %s: " + message, self._peer, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


def _peer_host(transport: asyncio.BaseTransport) -> str | None:
    peername = transport.get_extra_info("peername")
    if isinstance(peername, tuple) and peername and isinstance(peername[0], str):
        return peername[0]
    return None


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in effect.

    So the proxy's connection caps, not the process's descriptor limit, are what bind.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or hard == resource.RLIM_INFINITY:
        log.debug("open-file limit: %d (hard limit %d)", soft, hard)
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.debug("open-file limit stays at %d; raising it to the hard limit %d failed: %s", soft, hard, exc)
        return soft
    log.debug("raised the soft open-file limit from %d to the hard limit %d", soft, hard)
    return hard
