"""The REST endpoints algorithm containers call (spec §8.3), served from a ``MemoryFederation``'s state."""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from v6node.adapters.memory.container_tokens import ContainerClaims
from v6node.adapters.memory.server_state import StoredRun
from v6node.domain.model import Organization, RequestedDatabase, TaskRef
from v6node.domain.status import has_finished

if TYPE_CHECKING:
    from v6node.adapters.memory.federation import MemoryFederation

Handler = Callable[[Request, ContainerClaims], Awaitable[Response]]
_DEFAULT_PER_PAGE = 10  # the server's


def _msg(status: int, text: str) -> JSONResponse:
    return JSONResponse({"msg": text}, status_code=status)


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class _Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.response = _msg(status, text)


class ServerHttp:
    """What the vantage6 algorithm client uses, with the real server's rules for a container
    token (held to them by tests/contract/test_algorithm_endpoints_contract.py): organizations
    and the collaboration, tasks (``POST task`` creates a sub-task of the container's task),
    their status, runs and results, and ``blobstream/status`` (no blob store). Anything else
    is a 404 that says so. Each handler gets the caller's container claims; a request without
    a token gets 401, one with a token the server did not issue 422."""

    def __init__(self, federation: MemoryFederation, api_path: str) -> None:
        self.federation = federation
        self.state = federation.state
        self.api = api_path

    def guarded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                return _msg(401, "Missing Authorization Header")
            claims = self.federation.tokens.claims(token.strip())
            if claims is None:
                return _msg(422, "Signature verification failed")  # as the server's JWT library answers
            try:
                return await handler(request, claims)
            except _Refused as refused:
                return refused.response

        return endpoint

    # --- representations ------------------------------------------------------------------------
    def _link(self, kind: str, id_: int | None, methods: tuple[str, ...] = ("GET",)) -> dict[str, Any] | None:
        if id_ is None:
            return None
        return {"id": id_, "link": f"{self.api}/{kind}/{id_}", "methods": list(methods)}

    def _organization(self, org: Organization) -> dict[str, Any]:
        return {
            "id": org.id, "name": org.name, "public_key": org.public_key, "domain": None, "address1": "",
            "address2": "", "zipcode": "", "country": "",
            "collaborations": f"{self.api}/collaboration?organization_id={org.id}",
            "nodes": f"{self.api}/node?organization_id={org.id}",
        }

    def _task(self, task: TaskRef) -> dict[str, Any]:
        return {
            "id": task.id, "name": task.name, "description": "", "image": task.image, "job_id": task.job_id,
            "status": self.state.task_status(task.id), "study": None,
            "collaboration": self._link("collaboration", task.collaboration_id),
            "parent": self._link("task", task.parent_id),
            "init_org": self._link("organization", task.init_org_id),
            "init_user": self._link("user", task.init_user_id),
            "algorithm_store": self._link("algorithmstore", task.store_id),
            "databases": [
                {"label": db.label, "parameters": json.dumps(db.parameters, separators=(",", ":"))}
                for db in task.databases
            ],
            "runs": f"{self.api}/run?task_id={task.id}",
            "results": f"{self.api}/result?task_id={task.id}",
            "children": f"{self.api}/task?parent_id={task.id}",
        }

    def _run(self, run: StoredRun) -> dict[str, Any]:
        return {
            "id": run.id, "input": run.input, "status": str(run.status), "log": run.log,
            "assigned_at": _when(run.assigned_at), "started_at": _when(run.started_at),
            "finished_at": _when(run.finished_at), "cleanup_at": None, "blob_storage_used": run.blob_storage_used,
            "organization": self._link("organization", run.organization_id),
            "task": self._link("task", run.task_id), "results": self._link("result", run.id), "ports": [],
        }

    def _result(self, run: StoredRun) -> dict[str, Any]:
        return {
            "id": run.id, "result": run.result, "blob_storage_used": run.blob_storage_used, "cleanup_at": None,
            "run": self._link("run", run.id, ("GET", "PATCH")), "task": self._link("task", run.task_id),
        }

    def _page(self, request: Request, items: list[dict[str, Any]]) -> JSONResponse:
        try:
            page = int(request.query_params.get("page", 1))
            per_page = int(request.query_params.get("per_page", _DEFAULT_PER_PAGE))
        except ValueError:
            return _msg(400, "page and per_page must be integers")
        if page <= 0 or per_page <= 0:
            return _msg(500, "page and per_page must be positive")
        last = max(1, -(-len(items) // per_page))

        def link(number: int) -> str:
            query = {**request.query_params, "page": str(number), "per_page": str(per_page)}
            return f"{request.url.path}?" + "&".join(f"{key}={value}" for key, value in query.items())

        links = {"first": link(1), "self": link(page), "last": link(last)}
        if page < last:
            links["next"] = link(page + 1)
        if page > 1:
            links["previous"] = link(page - 1)
        chunk = items[(page - 1) * per_page : page * per_page]
        return JSONResponse({"data": chunk, "links": links}, headers={"total-count": str(len(items))})

    # --- lookups with the server's permission rules (a container sees its own collaboration) ------
    def _visible_task(self, claims: ContainerClaims, task_id: int, missing: tuple[int, str]) -> TaskRef:
        task = self.state.tasks.get(task_id)
        if task is None:
            raise _Refused(*missing)
        if task.collaboration_id != claims.collaboration_id:
            raise _Refused(401, "You lack the permission to do that!")
        return task

    def _task_id_arg(self, request: Request) -> int | None:
        value = request.query_params.get("task_id")
        if value is None:
            return None
        if not value.isdigit():
            raise _Refused(400, f"task_id={value!r} is not an id")
        return int(value)

    def _runs(self, request: Request, claims: ContainerClaims) -> list[StoredRun]:
        task_id = self._task_id_arg(request)
        if task_id is not None:
            self._visible_task(claims, task_id, (400, f"Task id={task_id} does not exist!"))
        runs = [
            run for run in self.state.runs.values()
            if self.state.tasks[run.task_id].collaboration_id == claims.collaboration_id
            and (task_id is None or run.task_id == task_id)
        ]
        return sorted(runs, key=lambda run: run.id, reverse=True)  # the server orders by id, newest first

    def _visible_run(self, claims: ContainerClaims, run_id: int) -> StoredRun:
        run = self.state.runs.get(run_id)
        if run is None:
            raise _Refused(404, f"Run id={run_id} not found!")
        self._visible_task(claims, run.task_id, (404, f"Run id={run_id} not found!"))
        return run

    # --- endpoints ---------------------------------------------------------------------------------
    async def organizations(self, request: Request, claims: ContainerClaims) -> Response:
        wanted = request.query_params.get("collaboration_id")
        if wanted is not None and wanted != str(claims.collaboration_id):
            return _msg(401, "You lack the permission to do that!")
        members = self.federation.organization_ids
        return self._page(request, [self._organization(self.state.organizations[org]) for org in members])

    async def organization(self, request: Request, claims: ContainerClaims) -> Response:
        org = self.state.organizations.get(request.path_params["id"])
        if org is None or org.id not in self.federation.organization_ids:
            return _msg(404, f"Organization id={request.path_params['id']} not found!")
        return JSONResponse(self._organization(org))

    async def collaboration(self, request: Request, claims: ContainerClaims) -> Response:
        collaboration = self.state.collaborations.get(request.path_params["id"])
        if collaboration is None:
            return _msg(404, f"collaboration having id={request.path_params['id']} not found")
        if collaboration.id != claims.collaboration_id:
            return _msg(401, "You lack the permission to do that!")
        return JSONResponse({
            "id": collaboration.id, "name": collaboration.name, "encrypted": collaboration.encrypted,
            "organizations": f"{self.api}/organization?collaboration_id={collaboration.id}",
            "tasks": f"{self.api}/task?collaboration_id={collaboration.id}",
        })

    async def task(self, request: Request, claims: ContainerClaims) -> Response:
        task_id = request.path_params["id"]
        return JSONResponse(self._task(self._visible_task(claims, task_id, (404, f"task id={task_id} is not found"))))

    async def task_status(self, request: Request, claims: ContainerClaims) -> Response:
        task_id = request.path_params["id"]
        self._visible_task(claims, task_id, (404, f"Task id={task_id} not found"))
        return JSONResponse({"status": self.state.task_status(task_id)})

    async def runs(self, request: Request, claims: ContainerClaims) -> Response:
        return self._page(request, [self._run(run) for run in self._runs(request, claims)])

    async def run(self, request: Request, claims: ContainerClaims) -> Response:
        return JSONResponse(self._run(self._visible_run(claims, request.path_params["id"])))

    async def results(self, request: Request, claims: ContainerClaims) -> Response:
        return self._page(request, [self._result(run) for run in self._runs(request, claims)])

    async def result(self, request: Request, claims: ContainerClaims) -> Response:
        return JSONResponse(self._result(self._visible_run(claims, request.path_params["id"])))

    async def blob_store_status(self, request: Request, claims: ContainerClaims) -> Response:
        return JSONResponse({"blob_store_enabled": False})

    async def create_task(self, request: Request, claims: ContainerClaims) -> Response:
        """``POST task`` by a container: a sub-task of its own task (the real server's checks, in its order)."""
        try:
            data = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return _msg(400, "Request body is incorrect")
        errors = _body_errors(data)
        if errors:
            return JSONResponse({"msg": "Request body is incorrect", "errors": errors}, status_code=400)
        organizations = data["organizations"]
        collaboration = self.state.collaborations.get(data.get("collaboration_id"))
        if collaboration is None:
            return _msg(404, f"Collaboration id={data.get('collaboration_id')} not found!")
        org_ids = [entry["id"] for entry in organizations]
        if not all(isinstance(org_id, int) for org_id in org_ids) or not set(org_ids) <= set(self.federation.organization_ids):
            return _msg(400, "At least one of the supplied organizations in not within the collaboration.")
        parent = self.state.tasks[claims.task_id]
        image = data.get("image") or ""
        if (
            not isinstance(image, str) or not image.endswith(claims.image)
            or has_finished(self.state.task_status(parent.id))
            or claims.collaboration_id != collaboration.id
        ):
            return _msg(401, "Container-token is not valid")
        for entry in organizations:
            readable = _readable(entry.get("input"))
            if collaboration.encrypted and readable:
                return _msg(400, "Your collaboration requires encryption, but input is not encrypted! "
                            "Please encrypt your input before sending it.")
            if not collaboration.encrypted and not readable:
                return _msg(400, "Your task's input cannot be parsed. Your input should be a base64 encoded "
                            "JSON string.")
        requested = []
        for database in data.get("databases") or []:
            parameters = {key: value for key, value in database.items() if key != "label"}
            requested.append(RequestedDatabase(str(database["label"]), parameters))
        task = self.federation.add_task(
            image=parent.image, name=str(data.get("name") or ""),
            inputs={entry["id"]: entry["input"] for entry in organizations},
            init_org_id=claims.organization_id, init_user_id=parent.init_user_id,
            databases=tuple(requested), parent=parent,
        )
        await self.federation.announce(task)
        return JSONResponse(self._task(task), status_code=201)

    async def not_served(self, request: Request) -> Response:
        return _msg(404, f"{request.method} {request.url.path} is not served by v6node's in-memory server")


def _body_errors(data: Any) -> dict[str, list[str]]:
    """What the server's task schema finds wrong with a body (empty when nothing)."""
    if not isinstance(data, dict):
        return {"_schema": ["Invalid input type."]}
    errors: dict[str, list[str]] = {}
    if not isinstance(data.get("image"), str) or not data["image"]:
        errors["image"] = ["Missing data for required field."]
    organizations = data.get("organizations")
    if not isinstance(organizations, list) or not all(isinstance(entry, dict) for entry in organizations):
        errors["organizations"] = ["Missing data for required field."]
    elif not organizations:
        errors["organizations"] = ["At least one organization is required"]
    elif any("id" not in entry for entry in organizations):
        errors["organizations"] = ["Organization id is required for each organization"]
    collaboration_id = data.get("collaboration_id")
    if not isinstance(collaboration_id, int) or isinstance(collaboration_id, bool) or collaboration_id < 1:
        errors["collaboration_id"] = ["Collaboration_id or study_id is required"]
    databases = data.get("databases")
    if databases is not None and (
        not isinstance(databases, list) or not all(isinstance(db, dict) and "label" in db for db in databases)
    ):
        errors["databases"] = ["Database label is required for each database"]
    return errors


def _readable(value: Any) -> bool:
    """Whether an input reads as text once base64-decoded (the server's test for plaintext)."""
    if not isinstance(value, str):
        return False
    try:
        base64.b64decode(value).decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    return True


def server_http_app(federation: MemoryFederation, api_path: str) -> Starlette:
    """The ASGI app; ``api_path`` is where the API is (``/api``)."""
    http = ServerHttp(federation, api_path)
    guarded = http.guarded
    served: list[tuple[str, Handler, str]] = [
        ("/organization", http.organizations, "GET"),
        ("/organization/{id:int}", http.organization, "GET"),
        ("/collaboration/{id:int}", http.collaboration, "GET"),
        ("/task", http.create_task, "POST"),
        ("/task/{id:int}", http.task, "GET"),
        ("/task/{id:int}/status", http.task_status, "GET"),
        ("/run", http.runs, "GET"),
        ("/run/{id:int}", http.run, "GET"),
        ("/result", http.results, "GET"),
        ("/result/{id:int}", http.result, "GET"),
        ("/blobstream/status", http.blob_store_status, "GET"),
    ]
    routes = [Route(api_path + path, guarded(handler), methods=[method]) for path, handler, method in served]
    # Everything else, any method: a JSON answer (the algorithm client parses every answer as JSON).
    routes.append(Route("/{path:path}", http.not_served, methods=["GET", "POST", "PATCH", "PUT", "DELETE"]))
    return Starlette(routes=routes)
