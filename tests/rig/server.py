"""Run the real vantage6 4.15.2 server on loopback with SQLite, and set up fixtures as root."""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx
import yaml
from attrs import frozen

from tests.rig.paths import RIG_SRC, SERVER_PYTHON

COLLABORATION_ADMIN_ROLE = "Collaboration Admin"
ROOT_USER = ("root", "root")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class RealServer:
    """One server process with its own database and folders under ``workdir``."""

    def __init__(self, workdir: Path, port: int | None = None, token_expires_hours: float | None = None) -> None:
        self.workdir = Path(workdir)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.token_expires_hours = token_expires_hours
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def root(self) -> str:
        return f"{self.url}:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.root}/api"

    @property
    def log_file(self) -> Path:
        return self.workdir / "server-stdout.log"

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "description": "v6node test rig",
            "ip": self.host,
            "port": self.port,
            "api_path": "/api",
            "uri": f"sqlite:///{self.workdir / 'server.sqlite'}",
            "allow_drop_all": False,
            "jwt_secret_key": "v6node-rig-secret",
            "directories": {"log": str(self.workdir / "log"), "data": str(self.workdir / "data")},
            "logging": {
                "level": "INFO",
                "file": str(self.workdir / "log" / "server.log"),
                "use_console": True,
                "backup_count": 2,
                "max_size": 4096,
                "format": "%(asctime)s %(name)s %(levelname)s %(message)s",
                "datefmt": "%H:%M:%S",
            },
        }
        if self.token_expires_hours is not None:
            config["token_expires_hours"] = self.token_expires_hours
        path = self.workdir / "server.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, timeout: float = 90.0) -> None:
        if not SERVER_PYTHON.exists():
            raise RuntimeError(f"no server venv at {SERVER_PYTHON}: run scripts/setup-rig first")
        config = self._write_config()
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [str(SERVER_PYTHON), str(RIG_SRC / "server_launcher.py"), str(config), self.host, str(self.port)],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"server exited with {self._process.returncode}; see {self.log_file}")
            try:
                if httpx.get(f"{self.api}/version", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer within {timeout} s; see {self.log_file}")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> RealServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@frozen
class NodeCredentials:
    node_id: int
    api_key: str
    organization_id: int
    collaboration_id: int
    name: str


@frozen
class UserCredentials:
    user_id: int
    username: str
    password: str
    organization_id: int


class AdminApi:
    """The server's REST API as root, for creating fixtures the way an administrator would."""

    def __init__(self, server: RealServer, username: str = ROOT_USER[0], password: str = ROOT_USER[1]) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.api, timeout=30)
        token = self._ok(self.http.post("/token/user", json={"username": username, "password": password}))
        self.http.headers["Authorization"] = f"Bearer {token['access_token']}"

    @staticmethod
    def _ok(response: httpx.Response) -> dict:
        if response.status_code >= 300:
            raise RuntimeError(f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text}")
        return response.json()

    def get(self, path: str, **params: object) -> dict:
        return self._ok(self.http.get(path, params=params))

    def patch(self, path: str, body: dict) -> dict:
        return self._ok(self.http.patch(path, json=body))

    def create_organization(self, name: str) -> int:
        return self._ok(self.http.post("/organization", json={"name": name}))["id"]

    def create_collaboration(self, name: str, organization_ids: list[int], encrypted: bool) -> int:
        body = {"name": name, "organization_ids": organization_ids, "encrypted": encrypted}
        return self._ok(self.http.post("/collaboration", json=body))["id"]

    def create_node(self, organization_id: int, collaboration_id: int, name: str) -> NodeCredentials:
        body = {"organization_id": organization_id, "collaboration_id": collaboration_id, "name": name}
        node = self._ok(self.http.post("/node", json=body))
        # The API key is shown only in this response.
        return NodeCredentials(node["id"], node["api_key"], organization_id, collaboration_id, name)

    def role_id(self, name: str) -> int:
        roles = self.get("/role", per_page=100)["data"]
        return next(role["id"] for role in roles if role["name"] == name)

    def create_user(self, organization_id: int, username: str, password: str = "Password123!") -> UserCredentials:
        body = {
            "username": username,
            "password": password,
            "email": f"{username}@example.org",
            "firstname": username,
            "lastname": "tester",
            "organization_id": organization_id,
            "roles": [self.role_id(COLLABORATION_ADMIN_ROLE)],
        }
        user = self._ok(self.http.post("/user", json=body))
        return UserCredentials(user["id"], username, password, organization_id)

    def run(self, run_id: int) -> dict:
        return self.get(f"/run/{run_id}")

    def runs_of_task(self, task_id: int) -> list[dict]:
        return self.get("/run", task_id=task_id, per_page=100)["data"]

    def close(self) -> None:
        self.http.close()


@frozen
class Federation:
    """A collaboration with its organizations, one node per organization, and a user."""

    collaboration_id: int
    encrypted: bool
    organization_ids: tuple[int, ...]
    nodes: tuple[NodeCredentials, ...]
    user: UserCredentials


def create_federation(admin: AdminApi, prefix: str, n_orgs: int = 2, encrypted: bool = False) -> Federation:
    """Organizations ``<prefix>-org<i>``, one collaboration, a node per org, a user in the first org."""
    orgs = [admin.create_organization(f"{prefix}-org{i}") for i in range(n_orgs)]
    collab = admin.create_collaboration(f"{prefix}-collab", orgs, encrypted)
    nodes = tuple(admin.create_node(org, collab, f"{prefix}-node{i}") for i, org in enumerate(orgs))
    user = admin.create_user(orgs[0], f"{prefix}-user")
    return Federation(collab, encrypted, tuple(orgs), nodes, user)
