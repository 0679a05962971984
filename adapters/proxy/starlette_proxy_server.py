"""The local proxy for algorithm containers (spec §8): Starlette on uvicorn, forwarding with httpx."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, request_response

from v6node.adapters.proxy.embedded import EmbeddedServer, listen_socket
from v6node.adapters.proxy.forwarding import ServerForwarder, Unavailable
from v6node.adapters.proxy.inbound import BadPath
from v6node.adapters.proxy.limits import ConnectionLimits, raise_open_file_limit
from v6node.adapters.proxy.refusal_log import RefusalLog
from v6node.adapters.proxy.responses import AnswerTooLarge, msg
from v6node.adapters.proxy.routes import ProxyRoutes
from v6node.adapters.proxy.streams import TooLarge
from v6node.adapters.system.system_clock import SystemClock
from v6node.domain.errors import NodeError
from v6node.ports.clock import Clock
from v6node.ports.cryptor import Cryptor
from v6node.ports.proxy_server import ProxyServer

log = logging.getLogger("v6node.proxy")

_MiB = 1024 * 1024
_FORWARDED_METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE"]


class StarletteProxyServer(ProxyServer):
    """``ProxyServer``: the HTTP endpoint algorithm containers use instead of the server.

    Serves a Starlette app with uvicorn as a task of the running event loop and forwards to
    ``api_base`` with one shared ``httpx.AsyncClient``. Routes (spec §8.3):

    * ``GET /health`` answers ``200 {"status": "ok"}`` without a token, so the node can check
      from a container that the proxy is reachable on the algorithm network. It shadows
      the server's own ``/health``, which algorithms have no use for.
    * ``POST /task``: 400 ``{"msg": "Organizations missing from input"}`` without
      organizations. In an encrypted collaboration (``cryptor.encrypted``) whose server has
      no blob store (``GET blobstream/status``), each organization's ``input`` (base64 of the
      plaintext) is replaced by the string form encrypted with that organization's
      ``public_key`` (``GET organization/<id>``, all organizations at once); otherwise the
      body goes on byte for byte. Then ``POST task``; the server's status and body come back.
    * ``GET /result?task_id=`` and ``GET /result/<id>``: each result not in the blob store
      is decrypted and handed back as base64 of the plaintext.
    * ``GET /blobstream/<id>`` streams the blob back through ``cryptor.decrypt_stream``
      (``<id>`` must be a UUID, as the server makes them; ``blobstream/status`` is forwarded);
      ``POST /blobstream`` streams the body through ``cryptor.encrypt_stream`` for the key in
      ``X-Public-Key`` (400 without it) to the server, as a chunked upload (the length of
      the ciphertext is not known in advance; the server reads chunked bodies under uWSGI,
      as it is deployed).
    * Everything else (GET/POST/PATCH/PUT/DELETE) is forwarded with its query string and body,
      if its percent-decoded path holds only letters, digits, ``-``, ``_``, ``.`` and ``/``
      and no ``.`` or ``..`` segment (every endpoint algorithms call does); the decoded path
      is what is forwarded. Anything else (``\\``, ``;``, ``%``, NUL, control characters,
      dot segments, also double-encoded) gets 400 and nothing is forwarded.

    Every route but ``/health`` needs ``Authorization: Bearer <token>`` with a token that
    was ``authorize``d; anything else gets 401 from the proxy and nothing is forwarded.
    Only that header (and the body's ``Content-Type``) goes to the server, always with the
    caller's own container token. The proxy's own answers are ``{"msg": ...}`` JSON.

    Choices beyond the port's contract:

    * Server answers, 4xx included, reach the algorithm with their own status and body.
      Hop-by-hop headers, ``Content-Length``, ``Content-Encoding`` and ``Date`` of the
      server are dropped (httpx has already decoded the body; lengths are recomputed).
    * Connection errors, timeouts and 500/502/503/504 are retried ``max_attempts`` in all
      with exponential backoff on the clock, for idempotent methods only; then 502. A POST or
      PATCH is sent again only when the connection failed before the request left (connect
      error or timeout, no free pooled connection), so ``POST /task`` never creates a
      subtask twice: its 5xx is relayed as it is, and a failure after sending (read
      timeout, dropped connection) gets 502 at once; the algorithm decides what to do.
      A blob upload is streamed, so it is sent again only if none of it was sent yet.
    * A result that cannot be decrypted keeps the server's value and the proxy logs a
      warning naming the result; the algorithm then fails to decode it (the algorithm
      client logs that and returns ``None`` for it) instead of the whole list failing.
    * A blob that cannot be decrypted gets 500 when that shows before the first byte is
      sent (wrong key, bad header); later the connection is cut so the algorithm never
      takes a truncated blob for a whole one.
    * Cryptor streams are blocking iterators: each runs in a thread of its own, fed one
      chunk (at most ``chunk_size`` bytes) at a time, so memory stays bounded and the event
      loop never waits on AES.
    * Access log lines (method, path, status, time) go to the logger ``v6node.proxy`` at
      INFO; tokens and query strings are never logged, paths are escaped and cut short.

    Limits (an algorithm is untrusted code; so is anything else that can reach the port):

    * ``max_connections`` (256) connections at once, at most ``max_connections_per_peer``
      (32, below the total) from one address. Each algorithm container has its own address
      on the network, so one of them cannot take every slot; host processes share the
      gateway's address, so they share one peer's slots (only a host process that picks
      many source addresses can spread further). A connection over a cap is reset as soon
      as it is accepted, before anything is read. 32 is far above what the algorithm client
      needs (one request at a time, a new connection each); 256 leaves room for every run of
      a busy node and stays well under the open-file limit, which ``start`` raises to its
      hard limit.
    * ``header_timeout`` (10 s): a connection must send a complete request head within it,
      after it opens and again after each response, or it is closed. ``keep_alive_timeout``
      (5 s, uvicorn's; at most ``header_timeout``) closes a connection silent after a
      response. A request whose head arrived has no time limit (blob transfers take what
      they take). ``max_header_size`` (16 KiB, h11's) caps the request head; more gets 400.
    * ``max_body_size`` (64 MiB) for the bodies the proxy reads whole (``POST /task``, the
      generic route): a declared or counted larger body gets 413 and nothing is forwarded.
      ``max_upload_size`` (512 MiB, the largest run input a v6node accepts by default) for
      the streamed ``POST /blobstream``, counted while streaming: past it the upload to the
      server is cut off before its end, so the server never takes a truncated blob for a
      whole one, and the algorithm gets 413.
    * ``max_answer_size`` (256 MiB) for the server answers the proxy reads whole (task
      creation, results, key lookups), counted after decompression: a larger one gets 502.
      The generic route and blob downloads stream, uncapped. Memory for bodies and answers
      is thus bounded per request; in all, by the connection caps times these sizes.
    * Refusals (401, 400 for a path or blob id, 413, answers over the cap, connections over
      a cap or late with their head, malformed requests) are logged as a WARNING at most
      once per peer per ``refusal_log_window`` (60 s); the next one says how many were not.
    """

    def __init__(
        self,
        api_base: str,
        *,
        port: int = 0,
        timeout: float = 30.0,
        max_attempts: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 5.0,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        chunk_size: int = 64 * 1024,
        shutdown_timeout: float = 5.0,
        max_connections: int = 256,
        max_connections_per_peer: int = 32,
        header_timeout: float = 10.0,
        keep_alive_timeout: float = 5.0,
        max_header_size: int = 16 * 1024,
        max_body_size: int = 64 * _MiB,
        max_upload_size: int = 512 * _MiB,
        max_answer_size: int = 256 * _MiB,
        refusal_log_window: float = 60.0,
    ) -> None:
        if max_header_size < 1:
            raise ValueError(f"max_header_size must be positive, got {max_header_size}")
        if not 0 < keep_alive_timeout <= header_timeout:
            # Longer, and a quiet keep-alive connection would be closed as a late request head.
            raise ValueError(
                f"keep_alive_timeout must be positive and at most header_timeout, got {keep_alive_timeout}"
            )
        clock = clock or SystemClock()
        self._wanted_port = port
        self._shutdown_timeout = shutdown_timeout
        self._keep_alive_timeout = keep_alive_timeout
        self._max_header_size = max_header_size
        self._refusals = RefusalLog(log, refusal_log_window, clock.monotonic)
        self._limits = ConnectionLimits(
            max_connections=max_connections, max_per_peer=max_connections_per_peer,
            header_timeout=header_timeout, refusals=self._refusals,
        )
        self._upstream = ServerForwarder(
            api_base, timeout=timeout, max_attempts=max_attempts, backoff_base=backoff_base,
            backoff_max=backoff_max, clock=clock, transport=transport, max_answer_size=max_answer_size,
        )
        routes = ProxyRoutes(
            self._upstream, self._crypto, clock=clock,
            chunk_size=chunk_size, max_body_size=max_body_size, max_upload_size=max_upload_size,
        )
        self._tokens: set[str] = set()
        self._cryptor: Cryptor | None = None
        self._server: EmbeddedServer | None = None
        self._serving: asyncio.Task[None] | None = None
        self._port: int | None = None
        self.app = Starlette(
            routes=[
                Route("/health", routes.health, methods=["GET"]),
                Route("/task", self._guarded(routes.create_task), methods=["POST"]),
                Route("/result", self._guarded(routes.results), methods=["GET"]),
                Route("/result/{id:int}", self._guarded(routes.result), methods=["GET"]),
                Route("/blobstream", self._guarded(routes.upload_blob), methods=["POST"]),
                Route("/blobstream/status", self._guarded(routes.forward), methods=["GET"]),
                Route("/blobstream/{id}", self._guarded(routes.download_blob), methods=["GET"]),
                Route("/{path:path}", self._guarded(routes.forward), methods=_FORWARDED_METHODS),
            ],
        )
        self.app.router.redirect_slashes = False
        # What no route matches (a path with a newline: Starlette's patterns stop at one) is
        # checked like the generic route, so it is refused with 400 rather than 404.
        self.app.router.default = request_response(self._guarded(routes.forward))

    # --- the port ------------------------------------------------------------------------------
    @property
    def port(self) -> int | None:
        """The port being listened on, None when stopped."""
        return self._port

    async def start(self, host: str, cryptor: Cryptor, port: int | None = None) -> int:
        """Listen on ``host`` at ``port`` (default: the constructor's; 0 picks a free one); returns the port."""
        if self._serving is not None:
            raise NodeError("the algorithm proxy is already running")
        wanted = self._wanted_port if port is None else port
        self._check_open_file_limit(raise_open_file_limit())
        try:
            sock = listen_socket(host, wanted)
        except OSError as exc:
            raise NodeError(f"the algorithm proxy cannot listen on {host}:{wanted}: {exc.strerror or exc}") from exc
        self._cryptor = cryptor
        self._upstream.open()
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,  # the node configures logging, not uvicorn
            access_log=False,  # our own access log never shows query strings
            proxy_headers=False,
            server_header=False,
            http=self._limits.protocol_class(),
            ws="none",
            # uvicorn annotates these two as int; it only hands them to asyncio, where a float works.
            timeout_graceful_shutdown=self._shutdown_timeout,  # type: ignore[arg-type]
            timeout_keep_alive=self._keep_alive_timeout,  # type: ignore[arg-type]
            h11_max_incomplete_event_size=self._max_header_size,
        )
        server = EmbeddedServer(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="v6node-proxy")
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            sock.close()
            await self._upstream.aclose()
            problem = serving.exception() if not serving.cancelled() else None
            raise NodeError(f"the algorithm proxy did not start on {host}: {problem!r}")
        self._server, self._serving = server, serving
        self._port = sock.getsockname()[1]
        log.info("algorithm proxy listening on %s:%d, forwarding to %s", host, self._port, self._upstream.api_base)
        return self._port

    def _check_open_file_limit(self, soft_limit: int) -> None:
        # A proxied request may hold a connection to the server as well as the algorithm's.
        needed = 2 * self._limits.max_connections + 64
        if soft_limit < needed:
            log.warning(
                "the open-file limit (%d) is below what %d proxy connections may need (%d); "
                "lower the proxy's connection cap or raise the limit", soft_limit, self._limits.max_connections, needed,
            )

    def authorize(self, container_token: str) -> None:
        self._tokens.add(container_token)

    def revoke(self, container_token: str) -> None:
        self._tokens.discard(container_token)

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (``shutdown_timeout``), close the client."""
        server, serving = self._server, self._serving
        self._server = self._serving = None
        self._port = None
        if server is not None and serving is not None:
            server.should_exit = True
            try:
                if not serving.done():
                    # Cancelling stop() cancels the server too: stop then means now.
                    await serving
                elif not serving.cancelled() and serving.exception() is not None:
                    raise serving.exception()  # type: ignore[misc]
            except Exception:
                log.exception("the algorithm proxy failed")
            log.info("algorithm proxy stopped")
        await self._upstream.aclose()

    # --- request plumbing -------------------------------------------------------------------------
    def _guarded(
        self, handler: Callable[[Request, str], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Refuse callers without an authorized token; map failures to JSON answers; log access."""

        async def endpoint(request: Request) -> Response:
            started = time.monotonic()
            peer = request.client.host if request.client else None
            what = f"{request.method} {_shown(request.url.path)}"
            token, refusal = self._caller_token(request)
            if token is None:
                self._refusals.warn(peer, "refused %s from %s: %s", what, peer, refusal)
                response: Response = msg(401, refusal)
            else:
                try:
                    response = await handler(request, token)
                except BadPath as exc:
                    self._refusals.warn(peer, "refused %s from %s: %s", what, peer, exc)
                    response = msg(400, str(exc))
                except AnswerTooLarge as exc:
                    self._refusals.warn(peer, "%s from %s: %s", what, peer, exc)
                    response = msg(502, str(exc))
                except TooLarge as exc:
                    self._refusals.warn(peer, "refused %s from %s: %s", what, peer, exc)
                    response = msg(413, str(exc))
                except Unavailable as exc:
                    log.warning("%s: %s", what, exc)
                    response = msg(502, str(exc))
                except httpx.TransportError as exc:
                    log.warning("%s: the server connection failed (%s)", what, exc)
                    response = msg(502, f"The connection to the server failed: {type(exc).__name__}")
                except Exception:
                    log.exception("%s failed in the proxy", what)
                    response = msg(500, "The node's proxy failed to handle the request; see the node log")
            elapsed_ms = (time.monotonic() - started) * 1000
            log.info("%s -> %d (%.0f ms)", what, response.status_code, elapsed_ms)
            return response

        return endpoint

    def _caller_token(self, request: Request) -> tuple[str | None, str]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None, "Missing or malformed Authorization header (expected 'Bearer <container token>')"
        if token not in self._tokens:
            return None, "Unknown container token: no run of this node uses it"
        return token, ""

    def _crypto(self) -> Cryptor:
        if self._cryptor is None:
            raise NodeError("the algorithm proxy is not running")
        return self._cryptor


# --- serving --------------------------------------------------------------------------------------------
def _shown(path: str) -> str:
    """``path`` as a log line may show it: escaped (no forged lines) and cut short."""
    shown = path.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= 200 else shown[:200] + "..."
