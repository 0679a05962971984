"""The node configuration as domain values (parsed from the vantage6 node YAML by the app)."""
from __future__ import annotations

from typing import Any

from attrs import field, frozen, validators

from v6node.domain.egress import EgressConfig

FILE_DATABASE_TYPES = frozenset({"csv", "parquet", "excel"})
FOLDER_DATABASE_TYPES = frozenset({"folder"})
DATABASE_TYPES = frozenset({"csv", "parquet", "sql", "sparql", "excel", "other", "folder", "omop"})
MOUNT_MODES = frozenset({"ro", "copy"})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_PROXY_CHECK_IMAGE = "busybox:stable"
DEFAULT_MAX_INPUT_SIZE = 512 * 1024 * 1024
DEFAULT_SYNC_INTERVAL = 300.0


@frozen
class DatabaseConfig:
    label: str = field(validator=validators.min_len(1))
    uri: str
    type: str = field(default="csv", validator=validators.in_(DATABASE_TYPES))
    env: dict[str, str] = field(factory=dict, hash=False)
    mount_mode: str = field(default="ro", validator=validators.in_(MOUNT_MODES))

    @label.validator
    def _label_is_identifier(self, _attribute: Any, value: str) -> None:
        if not value.isidentifier():
            raise ValueError(f"database label {value!r} must be a valid identifier")

    @property
    def is_file(self) -> bool:
        return self.type in FILE_DATABASE_TYPES

    @property
    def is_folder(self) -> bool:
        return self.type in FOLDER_DATABASE_TYPES


@frozen
class PolicyConfig:
    """``policies`` of the node config; empty tuples mean "no restriction"."""

    allowed_algorithms: tuple[str, ...] = ()
    allowed_algorithm_stores: tuple[str, ...] = ()
    allow_either_whitelist_or_store: bool = False
    # Ids are kept as strings so YAML ints and strings compare alike (spec §13 item 1).
    allowed_users: tuple[str, ...] = ()
    allowed_organizations: tuple[str, ...] = ()
    allow_basics_algorithm: bool = True
    require_algorithm_pull: bool = True


@frozen
class LoggingConfig:
    level: str = field(default="INFO", validator=validators.in_(LOG_LEVELS))
    use_console: bool = True
    backup_count: int = 5
    max_size: int = 1024  # kB, as in the vantage6 config
    format: str = "%(asctime)s - %(name)-14s - %(levelname)-8s - %(message)s"
    datefmt: str = "%Y-%m-%d %H:%M:%S"
    file: str | None = None
    loggers: tuple[tuple[str, str], ...] = ()


@frozen
class RegistryLogin:
    registry: str
    username: str
    password: str = field(repr=False)


MiB = 1024 * 1024
GiB = 1024 * MiB


@frozen
class AlgorithmLimits:
    """Resources and confinement of every algorithm container; None means no limit.

    The defaults are safe ones (the reference sets none): an algorithm is untrusted code
    chosen by a remote researcher. ``cpus`` has no domain default: the config loader
    sets it from the machine (half its CPUs, at least one).
    """

    cpus: float | None = None
    memory: int | None = 4 * GiB  # bytes
    pids: int | None = 1024
    seconds: float | None = 24 * 3600.0  # wall-clock time a run may take
    log_size: int = 10 * MiB  # bytes of container output kept by the engine and reported
    read_only_root: bool = True  # the image's file system is read-only; /tmp is a tmpfs
    tmp_size: int = 1 * GiB  # size of that /tmp tmpfs (it counts towards ``memory``)
    user: str | None = None  # "uid[:gid]" to run as; None: the image's own user


@frozen
class Monitoring:
    """What the node tells about itself: ``prometheus`` (metrics sent to the server, as the
    reference) and the local HTTP endpoint with ``/health`` and ``/metrics`` (v6node's own)."""

    server_metrics: bool = False  # prometheus.enabled
    server_metrics_interval: float = 45.0  # prometheus.report_interval_seconds
    endpoint: bool = False  # monitoring.enabled
    endpoint_host: str = "127.0.0.1"
    endpoint_port: int = 9466


@frozen
class NodeConfig:
    """Everything the node reads from its YAML file, with defaults filled in."""

    name: str = field(validator=validators.min_len(1))
    api_key: str = field(validator=validators.min_len(1), repr=False)
    server_url: str = field(validator=validators.min_len(1))
    port: int | None
    api_path: str
    data_dir: str
    log_dir: str
    source: str = ""
    # Read and kept as the reference does, which also never uses it: task folders live in
    # <data folder>/tasks (the reference's own task folder is inside its data volume).
    task_dir: str | None = None
    databases: tuple[DatabaseConfig, ...] = ()
    logging: LoggingConfig = LoggingConfig()
    encryption_enabled: bool = False
    private_key: str | None = None
    policies: PolicyConfig = PolicyConfig()
    share_algorithm_logs: bool = True
    share_config: bool = True
    algorithm_env: dict[str, str] = field(factory=dict, hash=False)
    gpu: bool = False
    run_context_file: bool = False
    max_concurrent_runs: int = field(default=8, validator=validators.ge(1))
    # Largest algorithm output (bytes) the node reports; a bigger one fails the run.
    max_output_size: int = field(default=1024 * 1024 * 1024, validator=validators.ge(1))
    # Largest run input (inline or a blob) the node takes; a bigger one fails the run.
    max_input_size: int = field(default=DEFAULT_MAX_INPUT_SIZE, validator=validators.ge(1))
    limits: AlgorithmLimits = AlgorithmLimits()
    # Keep task folders and temporary volumes after runs (for debugging algorithms).
    keep_task_folders: bool = False
    # Seconds between re-syncs that catch runs whose websocket event was lost.
    sync_interval: float = field(default=DEFAULT_SYNC_INTERVAL, validator=validators.gt(0))
    # Port of the algorithm proxy on the algorithm network's gateway (0: any free port).
    proxy_port: int = 0
    # Image (with sh, timeout and wget) that checks at start that algorithms reach the
    # proxy; None skips the check.
    proxy_check_image: str | None = DEFAULT_PROXY_CHECK_IMAGE
    # Whether the start may pull the check image when it is not present locally.
    proxy_check_pull: bool = False
    docker_registries: tuple[RegistryLogin, ...] = ()
    monitoring: Monitoring = Monitoring()
    # Keep <data folder>/audit.jsonl, the node's own chained record of what ran (v6node's own key).
    audit_log: bool = True
    # Days that <log folder>/runs/<run id>.log files are kept (v6node's own key).
    run_log_retention_days: float = 30.0
    # Squid, SSH tunnels and linked containers: what algorithms may reach besides the proxy.
    egress: EgressConfig = EgressConfig()

    @property
    def server_root(self) -> str:
        """``server_url`` with the port: where the websocket and refresh URLs live."""
        return f"{self.server_url}:{self.port}" if self.port else self.server_url

    @property
    def api_base(self) -> str:
        """Base of every REST endpoint, like the reference's ``base_path``."""
        return f"{self.server_root}{self.api_path}"

    def database(self, label: str) -> DatabaseConfig | None:
        return next((db for db in self.databases if db.label == label), None)
