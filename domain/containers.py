"""The algorithm container, described purely from (run, task, node settings)."""
from __future__ import annotations

import base64
import json
import posixpath
import zlib
from collections import deque
from collections.abc import Iterable
from typing import Any

from attrs import field, frozen

from v6node.domain.config import AlgorithmLimits, DatabaseConfig
from v6node.domain.errors import InvalidRunEnvironment
from v6node.domain.model import Run
from v6node.domain.proxy_alias import proxy_hosts

# Where things appear inside an algorithm container (fixed by vantage6-algorithm-tools).
CONTAINER_DATA_DIR = "/mnt/data"
CONTAINER_TMP_DIR = "/mnt/tmp"
DATABASE_COPIES = "databases"  # folder inside a task folder with the run's database copies
RUN_CONTEXT_FILE = "run_context.json"
ENV_EQUALS_REPLACEMENT = "!"
ENV_NOT_SETTABLE = frozenset({"PKG_NAME"})

# Labels. The reference's three are kept so vantage6 tooling recognises our containers;
# MANAGED_BY marks everything v6node creates so cleanup can find it by label.
LABEL_TYPE = "vantage6-type"
LABEL_NODE = "node"
LABEL_RUN = "run_id"
LABEL_TASK = "task_id"
LABEL_MANAGED_BY = "v6node.node"
LABEL_IDENTITY = "v6node.identity"  # JournalIdentity.fingerprint: which server and node started it
LABEL_RUN_ASSIGNED = "v6node.run_assigned_at"  # the server's creation time of the run it runs


@frozen
class Mount:
    source: str  # host path for binds, volume name for volumes
    target: str
    read_only: bool = False
    kind: str = "bind"  # "bind" or "volume"


@frozen
class ContainerSpec:
    name: str
    image: str
    network: str
    environment: dict[str, str] = field(factory=dict, hash=False)
    mounts: tuple[Mount, ...] = ()
    labels: dict[str, str] = field(factory=dict, hash=False)
    cap_drop: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    pids_limit: int | None = None
    mem_limit: int | None = None  # bytes
    nano_cpus: int | None = None
    gpu: bool = False
    # Overrides the image's command; algorithms never get one (only the node's own probes).
    command: tuple[str, ...] | None = None
    log_size: int | None = None  # bytes of output the engine keeps (older output is dropped)
    read_only_root: bool = False
    tmpfs: dict[str, str] = field(factory=dict, hash=False)  # mount point -> mount options
    user: str | None = None
    extra_hosts: dict[str, str] = field(factory=dict, hash=False)  # name -> IP address, in /etc/hosts


@frozen
class ContainerInfo:
    """A container as found in the engine."""

    id: str
    name: str
    labels: dict[str, str] = field(factory=dict, hash=False)
    running: bool = False
    exit_code: int | None = None


@frozen
class ContainerExit:
    exit_code: int
    oom_killed: bool = False
    # Why the end is not known (a cluster host that ran it went down); exit_code is then -1.
    lost: str | None = None


@frozen
class HostRun:
    """One container of ``ContainerRuntime.run_on_every_host``: where it ran and how it ended."""

    host: str
    exit_code: int
    output: str


@frozen
class AlgorithmSettings:
    """What the node contributes to every algorithm container of a run."""

    node_name: str
    tasks_dir: str  # host folder that holds the task-<run id> folders
    network: str
    proxy_host: str
    proxy_port: int
    databases: tuple[DatabaseConfig, ...] = ()
    algorithm_env: dict[str, str] = field(factory=dict, hash=False)
    gpu: bool = False
    limits: AlgorithmLimits = AlgorithmLimits()
    run_context_file: bool = False
    node_id: int | None = None  # the server's id of this node, for the run context
    identity: str | None = None  # fingerprint of the server and node, labelled on containers
    egress_env: dict[str, str] = field(factory=dict, hash=False)  # HTTP_PROXY etc. when Squid runs


def log_tail(chunks: Iterable[bytes], limit: int) -> str:
    """The last ``limit`` bytes of an output stream as text, saying how much was left out.

    Holds about ``limit`` bytes (plus one chunk) however long the stream is.
    """
    kept: deque[bytes] = deque()
    size = dropped = 0
    for chunk in chunks:
        kept.append(chunk)
        size += len(chunk)
        while kept and size - len(kept[0]) >= limit:
            size -= len(kept[0])
            dropped += len(kept.popleft())
    data = b"".join(kept)
    if len(data) > limit:
        dropped += len(data) - limit
        data = data[len(data) - limit :]
    text = data.decode("utf-8", errors="replace")
    if dropped:
        text = f"[v6node] {dropped} bytes of earlier output were left out (max_log_size)\n" + text
    return text


def task_folder_name(run_id: int) -> str:
    return f"task-{run_id:09d}"


def container_name(node_name: str, run_id: int) -> str:
    return f"vantage6-{node_name}-run-{run_id}"


def network_name(node_name: str) -> str:
    return f"vantage6-{node_name}-user-net"


def tmp_volume_name(node_name: str, job_id: int | None, run_id: int) -> str:
    # Runs of one job on this node share it; a run without a job gets its own.
    key = job_id if job_id is not None else f"run{run_id}"
    return f"vantage6-{node_name}-user-{key}-tmpvol"


def job_of_tmp_volume(node_name: str, volume: str) -> int | None:
    """The job a temporary volume of this node belongs to (None for a run's own volume, or another name)."""
    prefix, suffix = f"vantage6-{node_name}-user-", "-tmpvol"
    if not (volume.startswith(prefix) and volume.endswith(suffix)):
        return None
    key = volume[len(prefix) : -len(suffix)]
    return int(key) if key.isdigit() else None


def proxy_check_spec(node_name: str, image: str, network: str, host: str, port: int) -> ContainerSpec:
    """A throw-away container on the algorithm network that asks the proxy for /health."""
    return ContainerSpec(
        name=f"vantage6-{node_name}-proxy-check",
        image=image,
        network=network,
        labels={LABEL_TYPE: "proxy-check", LABEL_NODE: node_name, **managed_labels(node_name)},
        cap_drop=("ALL",),
        security_opt=("no-new-privileges",),
        command=("sh", "-c", f"timeout 10 wget -qO- http://{host}:{port}/health"),
        pids_limit=64,
        mem_limit=64 * 1024 * 1024,
        log_size=64 * 1024,
        read_only_root=True,
    )


def stable_proxy_port(node_name: str) -> int:
    """The same port for the same node after every restart (10000-29999, below the ephemeral
    range), so a container that outlived a node process still reaches the new proxy."""
    return 10000 + zlib.crc32(node_name.encode("utf-8")) % 20000


def managed_labels(node_name: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: node_name}


def run_labels(node_name: str, run: Run, identity: str | None = None) -> dict[str, str]:
    labels = {
        LABEL_TYPE: "algorithm",
        LABEL_NODE: node_name,
        LABEL_RUN: str(run.id),
        LABEL_TASK: str(run.task.id),
        **managed_labels(node_name),
    }
    if identity is not None:
        labels[LABEL_IDENTITY] = identity
    if run.assigned_at is not None:
        labels[LABEL_RUN_ASSIGNED] = run.assigned_at.isoformat()
    return labels


def encode_env_value(value: object) -> str:
    """The wire encoding algorithm-tools expects: base32 of the UTF-8 text, ``=`` -> ``!``."""
    encoded = base64.b32encode(str(value).encode("utf-8")).decode("ascii")
    return encoded.replace("=", ENV_EQUALS_REPLACEMENT)


def decode_env_value(value: str) -> str:
    return base64.b32decode(value.replace(ENV_EQUALS_REPLACEMENT, "=")).decode("utf-8")


def _on_disk(db: DatabaseConfig) -> bool:
    return db.is_file or db.is_folder


def database_copy_name(db: DatabaseConfig) -> str:
    """Name of a ``copy``-mode database inside the run's ``databases`` folder."""
    return db.label + (posixpath.splitext(db.uri)[1] if db.is_file else "")


def database_container_uri(db: DatabaseConfig, run_id: int) -> str:
    """Where the algorithm finds a configured database.

    ``ro`` files and folders are bind-mounted read-only at ``/mnt/<label><suffix>``; ``copy``
    ones are copied into the run's own task folder, so no run sees another run's copy.
    Other databases (SQL, SPARQL, URIs) are passed as they are.
    """
    if not _on_disk(db):
        return db.uri
    if db.mount_mode == "copy":
        return posixpath.join(CONTAINER_DATA_DIR, task_folder_name(run_id), DATABASE_COPIES, database_copy_name(db))
    return posixpath.join("/mnt", database_copy_name(db))


def database_mounts(databases: tuple[DatabaseConfig, ...]) -> tuple[Mount, ...]:
    return tuple(
        Mount(source=db.uri, target=database_container_uri(db, 0), read_only=True)
        for db in databases
        if _on_disk(db) and db.mount_mode == "ro"
    )


def database_copies(databases: tuple[DatabaseConfig, ...]) -> tuple[tuple[str, str], ...]:
    """(host path, name in the run's ``databases`` folder) of each ``copy``-mode database."""
    return tuple(
        (db.uri, database_copy_name(db)) for db in databases if _on_disk(db) and db.mount_mode == "copy"
    )


def missing_databases(run: Run, databases: tuple[DatabaseConfig, ...]) -> list[str]:
    """Labels the task asks for that this node does not have."""
    configured = {db.label for db in databases}
    return [requested.label for requested in run.task.databases if requested.label not in configured]


def _requested_database_env(run: Run) -> dict[str, str]:
    env: dict[str, str] = {}
    for requested in run.task.databases:
        prefix = requested.label.upper()
        params = requested.parameters
        if params.get("query") is not None:
            env[f"{prefix}_QUERY"] = str(params["query"])
        if params.get("sheet_name") is not None:
            env[f"{prefix}_SHEET_NAME"] = str(params["sheet_name"])
        if params.get("preprocessing") is not None:
            env[f"{prefix}_PREPROCESSING"] = json.dumps(params["preprocessing"])
    env["USER_REQUESTED_DATABASE_LABELS"] = ",".join(db.label for db in run.task.databases)
    return env


def _configured_database_env(databases: tuple[DatabaseConfig, ...], run_id: int) -> dict[str, str]:
    env: dict[str, str] = {}
    for db in databases:
        prefix = db.label.upper()
        env[f"{prefix}_DATABASE_URI"] = database_container_uri(db, run_id)
        env[f"{prefix}_DATABASE_TYPE"] = db.type
        for key, value in db.env.items():
            env[f"{prefix}_DB_PARAM_{key.upper()}"] = str(value)
    env["DB_LABELS"] = ",".join(db.label for db in databases)
    return env


def algorithm_environment(run: Run, settings: AlgorithmSettings) -> dict[str, str]:
    """Every env var of the algorithm container, before encoding."""
    folder = posixpath.join(CONTAINER_DATA_DIR, task_folder_name(run.id))
    env: dict[str, Any] = {
        "INPUT_FILE": f"{folder}/input",
        "OUTPUT_FILE": f"{folder}/output",
        "TOKEN_FILE": f"{folder}/token",
        "TEMPORARY_FOLDER": CONTAINER_TMP_DIR,
        "HOST": f"http://{settings.proxy_host}",
        "PORT": str(settings.proxy_port),
        "API_PATH": "",
    }
    env.update(_requested_database_env(run))
    env.update(_configured_database_env(settings.databases, run.id))
    env.update(settings.egress_env)
    env.update(settings.algorithm_env)
    bad = sorted(k for k in env if not k.isidentifier() or k in ENV_NOT_SETTABLE)
    if bad:
        raise InvalidRunEnvironment(
            "environment variable names that cannot be given to an algorithm: "
            + ", ".join(repr(k) for k in bad)
            + " (names must be identifiers and PKG_NAME is set by the image)"
        )
    return {key: str(value) for key, value in env.items()}


def build_container_spec(run: Run, settings: AlgorithmSettings) -> ContainerSpec:
    """The container that runs ``run``: only its own task folder, the job's tmp volume, the DBs."""
    folder = task_folder_name(run.id)
    env = algorithm_environment(run, settings)
    mounts = (
        Mount(
            source=posixpath.join(settings.tasks_dir, folder),
            target=posixpath.join(CONTAINER_DATA_DIR, folder),
        ),
        Mount(
            source=tmp_volume_name(settings.node_name, run.task.job_id, run.id),
            target=CONTAINER_TMP_DIR,
            kind="volume",
        ),
        *database_mounts(settings.databases),
    )
    environment = {key: encode_env_value(value) for key, value in env.items()}
    if settings.run_context_file:
        # Not encoded, as in the reference (the wrapper reads it raw).
        environment["RUN_CONTEXT_FILE"] = posixpath.join(CONTAINER_DATA_DIR, folder, RUN_CONTEXT_FILE)
    limits = settings.limits
    return ContainerSpec(
        name=container_name(settings.node_name, run.id),
        image=run.task.image,
        network=settings.network,
        environment=environment,
        mounts=mounts,
        labels=run_labels(settings.node_name, run, settings.identity),
        cap_drop=("ALL",),
        security_opt=("no-new-privileges",),
        pids_limit=limits.pids,
        mem_limit=limits.memory,
        nano_cpus=None if limits.cpus is None else int(limits.cpus * 1_000_000_000),
        gpu=settings.gpu,
        log_size=limits.log_size,
        read_only_root=limits.read_only_root,
        tmpfs={"/tmp": f"rw,nosuid,nodev,size={limits.tmp_size}"} if limits.read_only_root else {},
        user=limits.user,
        extra_hosts=proxy_hosts(settings.proxy_host),
    )


def run_context(run: Run, settings: AlgorithmSettings, input_data: bytes) -> dict[str, Any]:
    """The experimental run context file of vantage6 4.14 (``run_context_file: true``).

    Raises ``InvalidRunEnvironment`` when a requested database is not on disk, which
    the run context cannot describe.
    """
    try:
        decoded = json.loads(input_data)
    except ValueError:
        decoded = {}
    call = decoded if isinstance(decoded, dict) else {}
    folder = posixpath.join(CONTAINER_DATA_DIR, task_folder_name(run.id))
    by_label = {db.label: db for db in settings.databases}
    inputs = []
    for requested in run.task.databases:
        db = by_label.get(requested.label)
        if db is None or not _on_disk(db):
            raise InvalidRunEnvironment(
                f"database '{requested.label}' is not a file or folder, which a run context file cannot describe"
            )
        entry: dict[str, Any] = {"id": db.label, "uri": database_container_uri(db, run.id), "type": db.type}
        arguments = requested.parameters.get("arguments")
        if isinstance(arguments, dict):
            entry["arguments"] = arguments
        inputs.append(entry)
    return {
        "schema_version": "0.1",
        "entrypoint": {"name": call.get("method") or ""},
        "arguments": {"positional": call.get("args") or [], "named": call.get("kwargs") or {}},
        "executor": {"id": settings.node_id, "kind": "vantage6-node"},
        "inputs": inputs,
        "outputs": [{"id": "result", "uri": f"{folder}/output"}],
        "x-vantage6": {
            "run_id": run.id,
            "task_id": run.task.id,
            "collaboration_id": run.task.collaboration_id,
            "token_file": f"{folder}/token",
            "api_proxy": {"host": f"http://{settings.proxy_host}", "port": str(settings.proxy_port), "api_path": ""},
            "temporary_directory": CONTAINER_TMP_DIR,
        },
    }
