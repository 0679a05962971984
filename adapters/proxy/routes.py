"""The handlers behind the algorithm proxy's routes (spec §8.3), each given the request and the caller's token."""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from v6node.adapters.proxy.forwarding import ServerForwarder
from v6node.adapters.proxy.inbound import blob_id, check_declared_length, forwardable_path, read_body
from v6node.adapters.proxy.responses import StreamedUpstream, msg, relay
from v6node.adapters.proxy.streams import OneShotBody, bounded, capped, prepend
from v6node.app.cache import FACT_TTL, TimedCache
from v6node.app.streams import through_thread
from v6node.domain.errors import CryptoError
from v6node.ports.clock import Clock
from v6node.ports.cryptor import Cryptor

log = logging.getLogger("v6node.proxy")
T = TypeVar("T")
# Server answers the proxy keeps a while when they pass by: the algorithm client asks for
# these just before it creates a subtask, and the proxy needs them to encrypt its inputs.
_ORGANIZATION = re.compile(r"organization/(\d+)")
_BLOB_STATUS = "blobstream/status"


class _NotKept(Exception):
    """A lookup whose outcome is not a fact to keep (a refusal, an error): ``outcome`` is used once."""

    def __init__(self, outcome: object) -> None:
        super().__init__()
        self.outcome = outcome


class ProxyRoutes:
    """What each route does; the behaviour is described on ``StarletteProxyServer``.

    Handlers raise ``BadPath``, ``TooLarge`` and ``Unavailable`` for the caller to answer.
    ``cryptor`` gives the node's cryptor of the moment (set when the proxy starts).
    Public keys and the blob store setting are kept ``FACT_TTL`` seconds, as the run path
    keeps them, whether the proxy asked for them or saw the algorithm's own request pass.
    """

    def __init__(
        self,
        server: ServerForwarder,
        cryptor: Callable[[], Cryptor],
        *,
        clock: Clock,
        chunk_size: int,
        max_body_size: int,
        max_upload_size: int,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        for name, size in (("max_body_size", max_body_size), ("max_upload_size", max_upload_size)):
            if size < 1:
                raise ValueError(f"{name} must be positive, got {size}")
        self._server = server
        self._cryptor = cryptor
        self._chunk_size = chunk_size
        self._max_body_size = max_body_size
        self._max_upload_size = max_upload_size
        self._public_keys: TimedCache[int, str] = TimedCache(clock, FACT_TTL, "the public key")
        self._blob_store: TimedCache[str, bool] = TimedCache(clock, FACT_TTL, "blob store availability")

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def forward(self, request: Request, token: str) -> Response:
        path = forwardable_path(request.scope["path"])
        body = await read_body(request, self._max_body_size)
        organization = _ORGANIZATION.fullmatch(path)
        if request.method == "GET" and not request.scope.get("query_string") and (organization or path == _BLOB_STATUS):
            answer = await self._server.call("GET", path, token)
            fact = answer.json() if answer.is_success else None
            if isinstance(fact, dict) and organization and fact.get("public_key"):
                self._public_keys.remember(int(organization.group(1)), str(fact["public_key"]))
            elif isinstance(fact, dict) and path == _BLOB_STATUS:
                self._blob_store.remember("server", fact.get("blob_store_enabled") is True)
            return relay(answer)
        upstream = await self._server.send(
            request.method,
            path,
            token,
            query=request.scope.get("query_string", b""),
            content=body or None,
            content_type=request.headers.get("content-type") if body else None,
        )
        return StreamedUpstream(upstream.aiter_bytes(), upstream)

    async def create_task(self, request: Request, token: str) -> Response:
        body = await read_body(request, self._max_body_size)
        try:
            task = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return msg(400, "The task must be a JSON object")
        organizations = task.get("organizations") if isinstance(task, dict) else None
        if not organizations or not isinstance(organizations, list):
            return msg(400, "Organizations missing from input")
        cryptor = self._cryptor()
        if cryptor.encrypted and not await self._blob_store_enabled(token):
            encrypted = await self._encrypt_inputs(organizations, token, cryptor)
            if isinstance(encrypted, Response):
                return encrypted
            body = json.dumps({**task, "organizations": encrypted}).encode()
        # Otherwise the algorithm's own bytes go on: nothing to re-encode, whatever their size.
        upstream = await self._server.call("POST", "task", token, content=body, content_type="application/json")
        return relay(upstream)

    async def _blob_store_enabled(self, token: str) -> bool:
        async def ask() -> bool:
            answer = await self._server.call("GET", _BLOB_STATUS, token)
            if not answer.is_success:
                # Servers before blob storage have no such endpoint: inputs are inline then.
                log.warning("GET blobstream/status -> %d; assuming the server has no blob store", answer.status_code)
                raise _NotKept(False)
            status = answer.json()
            return isinstance(status, dict) and status.get("blob_store_enabled") is True

        return await _kept(self._blob_store, "server", ask)

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

        async def ask() -> str:
            answer = await self._server.call("GET", f"organization/{org_id}", token)
            if not answer.is_success:
                raise _NotKept(relay(answer))
            organization = answer.json()
            public_key = organization.get("public_key") if isinstance(organization, dict) else None
            if not public_key:
                raise _NotKept(msg(400, f"Organization {org_id} has no public key, so its input cannot be encrypted"))
            return str(public_key)

        return await _kept(self._public_keys, org_id, ask)

    async def results(self, request: Request, token: str) -> Response:
        if not request.query_params.get("task_id"):
            return msg(400, "task_id missing from the query")
        upstream = await self._server.call("GET", "result", token, query=request.scope.get("query_string", b""))
        page = upstream.json()
        if not upstream.is_success or not isinstance(page, dict) or not isinstance(page.get("data"), list):
            return relay(upstream)
        items = await self._decrypted(page["data"])
        return JSONResponse({**page, "data": items}, status_code=upstream.status_code)

    async def result(self, request: Request, token: str) -> Response:
        result_id = request.path_params["id"]
        query = request.scope.get("query_string", b"")
        upstream = await self._server.call("GET", f"result/{result_id}", token, query=query)
        item = upstream.json()
        if not upstream.is_success or not isinstance(item, dict):
            return relay(upstream)
        [decrypted] = await self._decrypted([item])
        return JSONResponse(decrypted, status_code=upstream.status_code)

    async def _decrypted(self, items: list[Any]) -> list[Any]:
        cryptor = self._cryptor()
        if cryptor.encrypted:  # RSA and AES: off the event loop
            return await asyncio.to_thread(_decrypt_items, cryptor, items)
        return _decrypt_items(cryptor, items)

    async def download_blob(self, request: Request, token: str) -> Response:
        blob = blob_id(request.path_params["id"])
        query = request.scope.get("query_string", b"")
        upstream = await self._server.send("GET", f"blobstream/{blob}", token, query=query)
        content_type = upstream.headers.get("content-type", "")
        if not upstream.is_success or "application/octet-stream" not in content_type:
            return StreamedUpstream(upstream.aiter_bytes(), upstream)  # the server's error
        plaintext = through_thread(self._cryptor().decrypt_stream, bounded(upstream.aiter_bytes(), self._chunk_size))
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

    async def upload_blob(self, request: Request, token: str) -> Response:
        public_key = request.headers.get("x-public-key", "").strip()
        if not public_key:
            return msg(400, "Missing X-Public-Key header")
        check_declared_length(request, self._max_upload_size, "The upload")
        cryptor = self._cryptor()
        # Past the cap, TooLarge ends the stream before its last chunk: the server sees an
        # unfinished chunked body, never a shorter blob that looks whole.
        source = bounded(capped(request.stream(), self._max_upload_size, "The upload"), self._chunk_size)
        ciphertext = through_thread(lambda chunks: cryptor.encrypt_stream(chunks, public_key), source)
        try:
            try:
                first = await anext(ciphertext, b"")
            except CryptoError as exc:
                return msg(400, f"The body cannot be encrypted for X-Public-Key: {exc}")
            upstream = await self._server.call(
                "POST",
                "blobstream",
                token,
                content=OneShotBody(prepend(first, ciphertext)),
                content_type=request.headers.get("content-type") or "application/octet-stream",
            )
        finally:
            await ciphertext.aclose()
        return relay(upstream)


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


async def _kept(cache: TimedCache[Any, T], key: object, ask: Callable[[], Awaitable[T]]) -> Any:
    """The cached fact, or ``ask``'s answer (kept), or the outcome of a lookup that is not a fact."""
    try:
        return await cache.get(key, ask)
    except _NotKept as not_kept:
        return not_kept.outcome
