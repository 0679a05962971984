"""The local proxy for algorithm containers (spec §8): Starlette on uvicorn, forwarding with httpx."""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response

from v6node.adapters.proxy.inbound import BadPath, blob_id, check_declared_length, forwardable_path, read_body
from v6node.adapters.proxy.limits import ConnectionLimits, raise_open_file_limit
from v6node.adapters.proxy.refusal_log import RefusalLog
from v6node.adapters.proxy.responses import (
    Answer, AnswerTooLarge, StreamedUpstream, msg, read_answer, relay,
)
from v6node.adapters.proxy.streams import OneShotBody, TooLarge, bounded, capped, prepend, through_thread
from v6node.adapters.system.system_clock import SystemClock
from v6node.domain.errors import CryptoError, NodeError
from v6node.ports.clock import Clock
from v6node.ports.cryptor import Cryptor

log = logging.getLogger("v6node.proxy")

_MiB = 1024 * 1024
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Server answers worth asking again; others (501 Not Implemented, ...) are final.
_TRANSIENT = frozenset({500, 502, 503, 504})
# The request certainly never reached the server: safe to repeat whatever the method.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_FORWARDED_METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE"]


class _Unavailable(Exception):
    """The server could not be reached, or kept failing, within the attempts allowed."""


class StarletteProxyServer:
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
      (32) from one address: each algorithm container has its own address on the network,
      so one of them cannot take every slot. A connection over a cap is closed (reset) as
      soon as it is accepted, before anything is read. 32 is far above what the algorithm
      client needs (one request at a time, a new connection each); 256 leaves room for
      every run of a busy node and stays well under the open-file limit, which ``start``
      raises to its hard limit.
    * ``header_timeout`` (10 s): a connection must send a complete request head within it,
      after it opens and again after each response, or it is closed; ``keep_alive_timeout``
      (5 s, uvicorn's) closes a connection silent after a response. ``max_header_size``
      (16 KiB, h11's) caps the request head; more gets 400.
    * ``max_body_size`` (64 MiB) for the bodies the proxy reads whole (``POST /task``, the
      generic route): a declared or counted larger body gets 413 and nothing is forwarded.
      ``max_upload_size`` (1 GiB, the node's own default ``max_output_size``) for the
      streamed ``POST /blobstream``, counted while streaming: past it the upload to the
      server is cut off before its end, so the server never takes a truncated blob for a
      whole one, and the algorithm gets 413.
    * ``max_answer_size`` (256 MiB) for the server answers the proxy reads whole (task
      creation, results, key lookups), counted after decompression: a page of results
      larger than that gets 502. The generic route and blob downloads stream, uncapped.
      Memory for request bodies and answers is thus bounded per request; in all, by the
      connection caps times these sizes.
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
        max_upload_size: int = 1024 * _MiB,
        max_answer_size: int = 256 * _MiB,
        refusal_log_window: float = 60.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        sizes = {"max_header_size": max_header_size, "max_body_size": max_body_size,
                 "max_upload_size": max_upload_size, "max_answer_size": max_answer_size}
        for name, size in sizes.items():
            if size < 1:
                raise ValueError(f"{name} must be positive, got {size}")
        if keep_alive_timeout <= 0:
            raise ValueError(f"keep_alive_timeout must be positive, got {keep_alive_timeout}")
        self._api_base = api_base.rstrip("/")
        self._wanted_port = port
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._clock: Clock = clock or SystemClock()
        self._transport = transport
        self._chunk_size = chunk_size
        self._shutdown_timeout = shutdown_timeout
        self._keep_alive_timeout = keep_alive_timeout
        self._max_header_size = max_header_size
        self._max_body_size = max_body_size
        self._max_upload_size = max_upload_size
        self._max_answer_size = max_answer_size
        self._refusals = RefusalLog(log, refusal_log_window, self._clock.monotonic)
        self._limits = ConnectionLimits(
            max_connections=max_connections, max_per_peer=max_connections_per_peer,
            header_timeout=header_timeout, refusals=self._refusals,
        )
        self._tokens: set[str] = set()
        self._cryptor: Cryptor | None = None
        self._client: httpx.AsyncClient | None = None
        self._server: _EmbeddedServer | None = None
        self._serving: asyncio.Task[None] | None = None
        self._port: int | None = None
        self.app = Starlette(
            routes=[
                Route("/health", self._health, methods=["GET"]),
                Route("/task", self._guarded(self._create_task), methods=["POST"]),
                Route("/result", self._guarded(self._results), methods=["GET"]),
                Route("/result/{id:int}", self._guarded(self._result), methods=["GET"]),
                Route("/blobstream", self._guarded(self._upload_blob), methods=["POST"]),
                Route("/blobstream/status", self._guarded(self._forward), methods=["GET"]),
                Route("/blobstream/{id}", self._guarded(self._download_blob), methods=["GET"]),
                Route("/{path:path}", self._guarded(self._forward), methods=_FORWARDED_METHODS),
            ],
        )
        self.app.router.redirect_slashes = False
        # What no route matches (a path with a newline: Starlette's patterns stop at one) is
        # checked like the generic route, so it is refused with 400 rather than 404.
        self.app.router.default = request_response(self._guarded(self._forward))

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
            sock = _listen(host, wanted)
        except OSError as exc:
            raise NodeError(f"the algorithm proxy cannot listen on {host}:{wanted}: {exc.strerror or exc}") from exc
        self._cryptor = cryptor
        self._client = httpx.AsyncClient(timeout=self._timeout, transport=self._transport)
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,  # the node configures logging, not uvicorn
            access_log=False,  # our own access log never shows query strings
            proxy_headers=False,
            server_header=False,
            http=self._limits.protocol_class(),
            ws="none",
            timeout_graceful_shutdown=self._shutdown_timeout,
            timeout_keep_alive=self._keep_alive_timeout,  # type: ignore[arg-type]  # a float works
            h11_max_incomplete_event_size=self._max_header_size,
        )
        server = _EmbeddedServer(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="v6node-proxy")
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            sock.close()
            await self._close_client()
            problem = serving.exception() if not serving.cancelled() else None
            raise NodeError(f"the algorithm proxy did not start on {host}: {problem!r}")
        self._server, self._serving = server, serving
        self._port = sock.getsockname()[1]
        log.info("algorithm proxy listening on %s:%d, forwarding to %s", host, self._port, self._api_base)
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
        await self._close_client()

    async def _close_client(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

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
                except _Unavailable as exc:
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

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            raise NodeError("the algorithm proxy is not running")
        return self._client

    def _crypto(self) -> Cryptor:
        if self._cryptor is None:
            raise NodeError("the algorithm proxy is not running")
        return self._cryptor

    async def _send(
        self,
        method: str,
        path: str,
        token: str,
        *,
        query: bytes = b"",
        content: bytes | OneShotBody | None = None,
        content_type: str | None = None,
    ) -> httpx.Response:
        """The server's response with its body unread (the caller closes it), after retries.

        Raises ``_Unavailable`` when the attempts run out or retrying is not safe.
        """
        url = httpx.URL(f"{self._api_base}/{path}")
        if query:
            url = url.copy_with(query=query)
        headers = {"Authorization": f"Bearer {token}"}
        if content_type:
            headers["Content-Type"] = content_type
        idempotent = method in _IDEMPOTENT
        what = f"{method} {path}"
        for attempt in range(1, self._max_attempts + 1):
            request = self._http().build_request(method, url, headers=headers, content=content)
            try:
                response = await self._http().send(request, stream=True)
            except httpx.TransportError as exc:
                replayable = not (isinstance(content, OneShotBody) and content.started)
                if not (replayable and (idempotent or isinstance(exc, _NOT_SENT))):
                    raise _Unavailable(f"{what} failed: {type(exc).__name__} ({exc})") from exc
                failure = f"{type(exc).__name__} ({exc})"
            else:
                if response.status_code not in _TRANSIENT or not idempotent:
                    return response
                await response.aclose()
                failure = f"HTTP {response.status_code}"
            if attempt == self._max_attempts:
                break
            delay = min(self._backoff_base * 2 ** (attempt - 1), self._backoff_max)
            log.warning("%s: %s; attempt %d of %d in %.1f s", what, failure, attempt + 1, self._max_attempts, delay)
            await self._clock.sleep(delay)
        raise _Unavailable(f"The server did not answer {what}: {failure} after {self._max_attempts} attempts")

    async def _call(self, method: str, path: str, token: str, **kwargs: Any) -> Answer:
        """``_send`` with the body read (``AnswerTooLarge`` past ``max_answer_size``) and the response closed."""
        response = await self._send(method, path, token, **kwargs)
        return await read_answer(response, self._max_answer_size, f"The server's answer to {method} {path}")

    # --- routes ---------------------------------------------------------------------------------------
    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _forward(self, request: Request, token: str) -> Response:
        path = forwardable_path(request.scope["path"])
        body = await read_body(request, self._max_body_size)
        upstream = await self._send(
            request.method,
            path,
            token,
            query=request.scope.get("query_string", b""),
            content=body or None,
            content_type=request.headers.get("content-type") if body else None,
        )
        return StreamedUpstream(upstream.aiter_bytes(), upstream)

    async def _create_task(self, request: Request, token: str) -> Response:
        body = await read_body(request, self._max_body_size)
        try:
            task = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return msg(400, "The task must be a JSON object")
        organizations = task.get("organizations") if isinstance(task, dict) else None
        if not organizations or not isinstance(organizations, list):
            return msg(400, "Organizations missing from input")
        cryptor = self._crypto()
        if cryptor.encrypted and not await self._blob_store_enabled(token):
            encrypted = await self._encrypt_inputs(organizations, token, cryptor)
            if isinstance(encrypted, Response):
                return encrypted
            body = json.dumps({**task, "organizations": encrypted}).encode()
        # Otherwise the algorithm's own bytes go on: nothing to re-encode, whatever their size.
        upstream = await self._call("POST", "task", token, content=body, content_type="application/json")
        return relay(upstream)

    async def _blob_store_enabled(self, token: str) -> bool:
        answer = await self._call("GET", "blobstream/status", token)
        if not answer.is_success:
            # Servers before blob storage have no such endpoint: inputs are inline then.
            log.warning("GET blobstream/status -> %d; assuming the server has no blob store", answer.status_code)
            return False
        status = answer.json()
        return isinstance(status, dict) and status.get("blob_store_enabled") is True

    async def _encrypt_inputs(
        self, organizations: list[Any], token: str, cryptor: Cryptor
    ) -> list[dict[str, Any]] | Response:
        """Each organization's input encrypted with its own key, or the answer refusing the task.

        Every entry is checked before any key is asked for; then every organization's key is
        asked for at once (a server that answers in parallel takes one round trip for all)
        and the inputs are encrypted in one trip off the event loop.
        """
        entries: list[tuple[dict[str, Any], int, bytes]] = []
        for entry in organizations:
            org_id = entry.get("id") if isinstance(entry, dict) else None
            if isinstance(org_id, str) and org_id.isdigit():
                org_id = int(org_id)
            if not isinstance(org_id, int) or isinstance(org_id, bool) or not isinstance(entry.get("input"), str):
                return msg(400, "Each organization needs an integer 'id' and a base64 'input'")
            try:
                plaintext = base64.b64decode(entry["input"], validate=True)
            except binascii.Error:
                return msg(400, f"The input for organization {org_id} is not base64")
            entries.append((entry, org_id, plaintext))
        org_ids = list(dict.fromkeys(org_id for _, org_id, _ in entries))
        lookups = [asyncio.ensure_future(self._public_key(org_id, token)) for org_id in org_ids]
        try:
            found = await asyncio.gather(*lookups)
        except BaseException:
            for lookup in lookups:  # one failed (the server is away): the others are of no use
                lookup.cancel()
            raise
        keys: dict[int, str] = {}
        for org_id, key in zip(org_ids, found, strict=True):
            if isinstance(key, Response):
                return key
            keys[org_id] = key

        def encrypt_all() -> list[dict[str, Any]] | Response:
            encrypted = []
            for entry, org_id, plaintext in entries:
                try:
                    ciphertext = cryptor.encrypt_to_str(plaintext, keys[org_id])
                except CryptoError as exc:
                    return msg(400, f"The input for organization {org_id} cannot be encrypted: {exc}")
                encrypted.append({**entry, "id": org_id, "input": ciphertext})
            return encrypted

        return await asyncio.to_thread(encrypt_all)

    async def _public_key(self, org_id: int, token: str) -> str | Response:
        """The organization's public key, or the answer refusing the task without it."""
        answer = await self._call("GET", f"organization/{org_id}", token)
        if not answer.is_success:
            return relay(answer)
        organization = answer.json()
        public_key = organization.get("public_key") if isinstance(organization, dict) else None
        if not public_key:
            return msg(400, f"Organization {org_id} has no public key, so its input cannot be encrypted")
        return public_key

    async def _results(self, request: Request, token: str) -> Response:
        if not request.query_params.get("task_id"):
            return msg(400, "task_id missing from the query")
        upstream = await self._call("GET", "result", token, query=request.scope.get("query_string", b""))
        page = upstream.json()
        if not upstream.is_success or not isinstance(page, dict) or not isinstance(page.get("data"), list):
            return relay(upstream)
        items = await self._decrypted(page["data"])
        return JSONResponse({**page, "data": items}, status_code=upstream.status_code)

    async def _result(self, request: Request, token: str) -> Response:
        result_id = request.path_params["id"]
        upstream = await self._call("GET", f"result/{result_id}", token, query=request.scope.get("query_string", b""))
        item = upstream.json()
        if not upstream.is_success or not isinstance(item, dict):
            return relay(upstream)
        [decrypted] = await self._decrypted([item])
        return JSONResponse(decrypted, status_code=upstream.status_code)

    async def _decrypted(self, items: list[Any]) -> list[Any]:
        cryptor = self._crypto()
        if cryptor.encrypted:  # RSA and AES: off the event loop
            return await asyncio.to_thread(_decrypt_items, cryptor, items)
        return _decrypt_items(cryptor, items)

    async def _download_blob(self, request: Request, token: str) -> Response:
        blob = blob_id(request.path_params["id"])
        upstream = await self._send("GET", f"blobstream/{blob}", token, query=request.scope.get("query_string", b""))
        content_type = upstream.headers.get("content-type", "")
        if not upstream.is_success or "application/octet-stream" not in content_type:
            return StreamedUpstream(upstream.aiter_bytes(), upstream)  # the server's error
        plaintext = through_thread(self._crypto().decrypt_stream, bounded(upstream.aiter_bytes(), self._chunk_size))
        try:
            first = await anext(plaintext, b"")
        except CryptoError as exc:
            await plaintext.aclose()
            await upstream.aclose()
            log.warning("blob %s could not be decrypted: %s", blob, exc)
            return msg(500, f"Blob {blob} could not be decrypted by this node")
        except BaseException:
            await plaintext.aclose()
            await upstream.aclose()
            raise
        return StreamedUpstream(prepend(first, plaintext), upstream, blob_id=blob)

    async def _upload_blob(self, request: Request, token: str) -> Response:
        public_key = request.headers.get("x-public-key", "").strip()
        if not public_key:
            return msg(400, "Missing X-Public-Key header")
        check_declared_length(request, self._max_upload_size, "The upload")
        cryptor = self._crypto()
        # Past the cap, TooLarge ends the stream before its last chunk: the server sees an
        # unfinished chunked body, never a shorter blob that looks whole.
        source = bounded(capped(request.stream(), self._max_upload_size, "The upload"), self._chunk_size)
        ciphertext = through_thread(lambda chunks: cryptor.encrypt_stream(chunks, public_key), source)
        try:
            try:
                first = await anext(ciphertext, b"")
            except CryptoError as exc:
                return msg(400, f"The body cannot be encrypted for X-Public-Key: {exc}")
            upstream = await self._call(
                "POST",
                "blobstream",
                token,
                content=OneShotBody(prepend(first, ciphertext)),
                content_type=request.headers.get("content-type") or "application/octet-stream",
            )
        finally:
            await ciphertext.aclose()
        return relay(upstream)


# --- serving --------------------------------------------------------------------------------------------
class _EmbeddedServer(uvicorn.Server):
    """uvicorn as a task of someone else's event loop: says when it listens, leaves signals alone."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The node's entry point owns SIGINT/SIGTERM; it stops the proxy through stop().
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so a bind error is raised to start() and port 0 is resolved."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)


def _shown(path: str) -> str:
    """``path`` as a log line may show it: escaped (no forged lines) and cut short."""
    shown = path.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= 200 else shown[:200] + "..."


def _decrypt_items(cryptor: Cryptor, items: list[Any]) -> list[Any]:
    """Results as the algorithm expects them: base64 of the plaintext (blob references untouched)."""
    decrypted = []
    for item in items:
        if isinstance(item, dict) and not item.get("blob_storage_used") and item.get("result"):
            value = item["result"]
            try:
                if not isinstance(value, str):
                    raise CryptoError(f"a {type(value).__name__}, not a string")
                plaintext = cryptor.decrypt_str(value)
            except (CryptoError, ValueError) as exc:
                log.warning(
                    "result %s could not be decrypted (%s); it is passed on as the server stored it",
                    item.get("id"), exc,
                )
            else:
                item = {**item, "result": base64.b64encode(plaintext).decode("ascii")}
        decrypted.append(item)
    return decrypted
