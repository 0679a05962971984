"""The server's JSON and the node's domain values, both ways (pure; spec §6)."""
from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import httpx

from v6node.domain.errors import ServerError, ServerUnavailable
from v6node.domain.model import Organization, RequestedDatabase, Run, RunUpdate, TaskRef
from v6node.domain.status import RunStatus

log = logging.getLogger("v6node.http")


def parse_organization(body: dict[str, Any]) -> Organization:
    return Organization(id=int(body["id"]), name=str(body["name"]), public_key=body.get("public_key") or "")


def parse_run(body: dict[str, Any]) -> Run:
    """A run as listed by ``GET run?include=task`` (spec §6.3)."""
    return Run(
        id=int(body["id"]),
        task=parse_task(body["task"]),
        input=body.get("input") or "",
        status=RunStatus(body.get("status") or RunStatus.PENDING),
        organization_id=_ref_id(body.get("organization")),
        blob_storage_used=bool(body.get("blob_storage_used") or False),
        started_at=parse_datetime(body.get("started_at")),
        finished_at=parse_datetime(body.get("finished_at")),
        assigned_at=parse_datetime(body.get("assigned_at")),
    )


def parse_task(body: dict[str, Any]) -> TaskRef:
    return TaskRef(
        id=int(body["id"]),
        image=str(body["image"]),
        collaboration_id=int(_ref_id(body["collaboration"])),  # type: ignore[arg-type]
        name=body.get("name") or "",
        job_id=body.get("job_id"),
        parent_id=_ref_id(body.get("parent")),
        init_org_id=_ref_id(body.get("init_org")),
        init_user_id=_ref_id(body.get("init_user")),
        store_id=_ref_id(body.get("algorithm_store")),
        databases=tuple(_parse_database(db) for db in body.get("databases") or ()),
        status=body.get("status"),
    )


def _parse_database(body: dict[str, Any]) -> RequestedDatabase:
    raw = body.get("parameters")
    parameters: Any = raw
    if isinstance(raw, str):
        try:
            parameters = json.loads(raw)
        except ValueError:
            log.warning("database %r: parameters are not JSON; using none", body.get("label"))
            parameters = {}
    if not isinstance(parameters, dict):
        parameters = {}
    return RequestedDatabase(label=str(body.get("label") or ""), parameters=parameters)


def _ref_id(ref: Any) -> int | None:
    """The id of a HATEOAS reference ``{"id", "link", "methods"}`` (or of a bare id)."""
    if ref is None:
        return None
    if isinstance(ref, dict):
        ref = ref.get("id")
    return None if ref is None else int(ref)


def parse_datetime(value: str | None) -> datetime | None:
    """The server sends naive ISO datetimes in UTC."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def format_datetime(value: datetime) -> str:
    """The one format the server parses: microseconds always, ``+00:00`` (anything else is HTTP 500)."""
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def run_update_body(update: RunUpdate) -> dict[str, str]:
    """Exactly the fields the update carries (the server treats absent ones per spec §6.4)."""
    body: dict[str, str] = {}
    if update.status is not None:
        body["status"] = update.status.value
    if update.started_at is not None:
        body["started_at"] = format_datetime(update.started_at)
    if update.finished_at is not None:
        body["finished_at"] = format_datetime(update.finished_at)
    if isinstance(update.result, str):
        body["result"] = update.result
    if update.log is not None:
        body["log"] = update.log
    return body


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, not verified: the node only reads its own id and the expiry."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error) as exc:
        raise ValueError("the access token is not a JWT") from exc
    if not isinstance(claims, dict):
        raise ValueError("the access token's payload is not a JSON object")
    return claims


def message(response: httpx.Response) -> str:
    """The server's ``msg`` (plus its validation ``errors``), or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    if not isinstance(body, dict):
        return str(body)[:200]
    message = str(body.get("msg") or response.reason_phrase)
    if body.get("errors"):
        message = f"{message}: {json.dumps(body['errors'])}"
    return message


def json_body(response: httpx.Response, method: str, path: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ServerUnavailable(
            f"{method} {path} -> HTTP {response.status_code} with a body that is not JSON: {response.text[:100]!r}"
        ) from None


@contextmanager
def parsing(method: str, path: str) -> Iterator[None]:
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ServerError(f"{method} {path}: unexpected answer from the server ({exc!r})") from exc
