"""Run the real vantage6 4.15.2 server on loopback with SQLite, and set up fixtures as root."""
from __future__ import annotations

import base64
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import yaml
from attrs import frozen

from tests.rig import totp
from tests.rig.paths import RIG_DIR, RIG_SRC, SERVER_PYTHON

COLLABORATION_ADMIN_ROLE = "Collaboration Admin"
ROOT_USER = ("root", "root")

# The server's only blob store backend is Azure Blob Storage; Azurite (npm) emulates it
# on loopback.
AZURITE_BLOB = RIG_DIR / "azurite" / "node_modules" / ".bin" / "azurite-blob"
BLOB_ACCOUNT = "v6node"
BLOB_CONTAINER = "v6node-blobs"

# Used instead of server_launcher.py when the blob store is on. In production the server
# runs under uwsgi, and its blob upload endpoint reads a chunked (streamed) body with
# ``uwsgi.chunked_read``; the development server has no uwsgi, so every streamed upload
# would answer 500. This stands in for that one function with the body that gevent's WSGI
# server already de-chunks. It is not installed as a ``uwsgi`` module because the server
# would then pick the gevent_uwsgi Socket.IO mode, which only works under uwsgi.
_LAUNCHER_WITH_CHUNKED_READ = """
import sys

sys.path.insert(0, sys.argv.pop(1))
import server_launcher as launcher


class ChunkedRead:
    @staticmethod
    def chunked_read(timeout=None):
        from flask import request
        return request.environ["wsgi.input"].read(65536)


config, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if sys.version_info >= (3, 11):
    launcher._format_mixed_enum_by_value()
from vantage6.server import run_dev_server, run_server

launcher._answer_without_nagle_stalls()
app = run_server(config, system_folders=False)
sys.modules["vantage6.server.resource.blobstream"].uwsgi = ChunkedRead
run_dev_server(app, host=host, port=port)
"""


def _wait_for_port(host: str, port: int, process: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {host}:{port} within {timeout} s")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class RealServer:
    """One server process with its own database and folders under ``workdir``.

    ``blob_store=True`` configures the server's large result store (``/blobstream``)
    on an Azurite process of its own, so runs created on it use blob storage.
    ``access_log=True`` has it log every request to ``log_file`` (benchmarks count them).
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        token_expires_hours: float | None = None,
        blob_store: bool = False,
        access_log: bool = False,
        two_factor_auth: bool = False,
    ) -> None:
        self.workdir = Path(workdir)
        self.two_factor_auth = two_factor_auth
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.token_expires_hours = token_expires_hours
        self.blob_store = blob_store
        self.access_log = access_log
        self._blob_port = free_port() if blob_store else 0
        # Azurite takes any account named in AZURITE_ACCOUNTS: a fresh key per server.
        self._blob_key = base64.b64encode(os.urandom(32)).decode()
        self._process: subprocess.Popen[bytes] | None = None
        self._azurite: subprocess.Popen[bytes] | None = None

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
    def pid(self) -> int:
        assert self._process is not None, "the server is not running"
        return self._process.pid

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
        if self.two_factor_auth:
            config["two_factor_auth"] = True
        if self.blob_store:
            config["large_result_store"] = {"connection_string": self._blob_connection_string, "container_name": BLOB_CONTAINER}
        path = self.workdir / "server.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    @property
    def _blob_connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={BLOB_ACCOUNT};AccountKey={self._blob_key};"
            f"BlobEndpoint=http://{self.host}:{self._blob_port}/{BLOB_ACCOUNT};"
        )

    def _start_blob_store(self) -> None:
        if not AZURITE_BLOB.exists():
            raise RuntimeError(f"no Azurite at {AZURITE_BLOB}: run scripts/setup-rig first")
        command = [
            str(AZURITE_BLOB), "--blobHost", self.host, "--blobPort", str(self._blob_port),
            "--location", str(self.workdir / "azurite"), "--silent", "--loose", "--skipApiVersionCheck",
            # Azurite reports usage to a public endpoint unless told not to.
            "--disableTelemetry",
        ]
        env = {**os.environ, "AZURITE_ACCOUNTS": f"{BLOB_ACCOUNT}:{self._blob_key}"}
        with (self.workdir / "azurite.log").open("ab") as log:
            self._azurite = subprocess.Popen(command, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        _wait_for_port(self.host, self._blob_port, self._azurite, 30.0, f"Azurite (log: {self.workdir / 'azurite.log'})")
        # The server expects its container to exist; the server venv has the Azure SDK.
        create = (
            "import sys; from azure.storage.blob import BlobServiceClient; from azure.core.exceptions import ResourceExistsError\n"
            "try: BlobServiceClient.from_connection_string(sys.argv[1]).create_container(sys.argv[2])\n"
            "except ResourceExistsError: pass"
        )
        made = subprocess.run(
            [str(SERVER_PYTHON), "-c", create, self._blob_connection_string, BLOB_CONTAINER],
            capture_output=True, text=True, timeout=60,
        )
        if made.returncode != 0:
            raise RuntimeError(f"could not create the blob container: {made.stderr[-500:]}")

    def start(self, timeout: float = 90.0) -> None:
        if not SERVER_PYTHON.exists():
            raise RuntimeError(f"no server venv at {SERVER_PYTHON}: run scripts/setup-rig first")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_processes(timeout)
        except BaseException:
            self.stop()
            raise

    def _start_processes(self, timeout: float) -> None:
        if self.blob_store:
            self._start_blob_store()
            launcher = [str(SERVER_PYTHON), "-c", _LAUNCHER_WITH_CHUNKED_READ, str(RIG_SRC)]
        else:
            launcher = [str(SERVER_PYTHON), str(RIG_SRC / "server_launcher.py")]
        config = self._write_config()
        extra = ["--access-log"] if self.access_log and not self.blob_store else []
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [*launcher, str(config), self.host, str(self.port), *extra],
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
        raise RuntimeError(f"server did not answer within {timeout} s; see {self.log_file}")

    def stop(self) -> None:
        for process in (self._process, self._azurite):
            if process is None:
                continue
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = self._azurite = None

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

    def __init__(
        self, server: RealServer, username: str = ROOT_USER[0], password: str = ROOT_USER[1], timeout: float = 30
    ) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.api, timeout=timeout)
        # Two-factor secrets of the users logged in here (a server with two_factor_auth asks for codes).
        self.otp_secrets: dict[str, str] = {}
        token = totp.log_in(self.http, username, password, self.otp_secrets)
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

    def __enter__(self) -> AdminApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
