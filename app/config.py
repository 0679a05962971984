"""Load an unmodified vantage6 4.x node YAML file into a ``NodeConfig``.

Unknown keys are ignored with a warning; a wrong type or a missing required key
raises ``ConfigError`` naming the file, the key path and what was expected.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
from urllib.parse import urlsplit
from pathlib import Path
from typing import Any

import yaml

from v6node.domain.config import (
    DATABASE_TYPES,
    DEFAULT_MAX_INPUT_SIZE,
    DEFAULT_PROXY_CHECK_IMAGE,
    DEFAULT_SYNC_INTERVAL,
    FILE_DATABASE_TYPES,
    FOLDER_DATABASE_TYPES,
    AlgorithmLimits,
    LOG_LEVELS,
    MOUNT_MODES,
    DatabaseConfig,
    LoggingConfig,
    Monitoring,
    NodeConfig,
    PolicyConfig,
    RegistryLogin,
)
from v6node.app.config_egress import EGRESS_KEYS, V6NODE_EGRESS_KEYS, parse_egress
from v6node.app.config_section import Section, resolve_path
from v6node.domain.errors import ConfigError

log = logging.getLogger("v6node.config")

# Keys of the vantage6 4.x node config (validated or read by the reference node).
_VANTAGE6_KEYS = frozenset(
    {
        "api_key", "server_url", "port", "api_path", "task_dir", "databases", "logging",
        "encryption", "node_extra_env", "node_extra_mounts", "node_extra_hosts",
        "share_algorithm_logs", "policies", "docker_registries", "algorithm_env",
        "algorithm_device_requests", "vpn_subnet", "ssh-tunnels", "whitelist",
        "docker_services", "images", "alpine", "share_config", "run_context_file",
        "prometheus", "debug", "directories",
    }
)
# Keys only v6node reads (the reference ignores unknown keys, so they are safe to add).
_V6NODE_KEYS = frozenset(
    {
        "max_concurrent_runs", "max_output_size", "max_input_size", "max_log_size", "algorithm_cpus",
        "algorithm_memory", "algorithm_pids_limit", "algorithm_time_limit", "algorithm_read_only_root",
        "algorithm_tmp_size", "algorithm_user", "keep_task_folders", "sync_interval",
        "proxy_port", "proxy_check_image", "proxy_check_pull", "monitoring", "audit_log", "run_log_retention_days",
    }
)
_POLICY_KEYS = frozenset(
    {
        "allowed_algorithms", "allowed_algorithm_stores", "allow_either_whitelist_or_store",
        "allowed_users", "allowed_organizations", "allow_basics_algorithm", "require_algorithm_pull",
    }
)
_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$")
DEFAULT_MAX_OUTPUT_SIZE = 1024 * 1024 * 1024


def _databases(root: Section, base: Path) -> tuple[DatabaseConfig, ...]:
    raw = root.data.get("databases")
    if raw is None:
        return ()
    if isinstance(raw, dict):
        # vantage6 3.x style {label: uri}; still accepted by the 4.x schema.
        raw = [{"label": label, "uri": uri} for label, uri in raw.items()]
    if not isinstance(raw, list):
        raise root.fail("databases", f"expected a list of databases, got {type(raw).__name__}")
    databases = []
    labels: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise root.fail(f"databases[{i}]", f"expected a mapping with label, uri and type, got {item!r}")
        entry = Section(root.file, item, f"databases[{i}]")
        label = entry.string("label", required=True)
        if not label.isidentifier():
            raise entry.fail("label", f"expected a valid identifier (letters, digits, _), got {label!r}")
        if label in labels:
            raise entry.fail("label", f"label {label!r} is used twice")
        labels.add(label)
        db_type = entry.string("type", default="csv")
        if db_type not in DATABASE_TYPES:
            raise entry.fail("type", f"expected one of {', '.join(sorted(DATABASE_TYPES))}, got {db_type!r}")
        mount_mode = entry.string("mount_mode", default="ro")
        if mount_mode not in MOUNT_MODES:
            raise entry.fail("mount_mode", f"expected 'ro' or 'copy', got {mount_mode!r}")
        uri = entry.string("uri", required=True)
        if db_type in FILE_DATABASE_TYPES | FOLDER_DATABASE_TYPES:
            uri = resolve_path(base, uri)
            wanted, exists = ("folder", os.path.isdir(uri)) if db_type == "folder" else ("file", os.path.isfile(uri))
            if not exists:
                raise entry.fail("uri", f"database '{label}' ({db_type}): no {wanted} at {uri}")
        databases.append(
            DatabaseConfig(label=label, uri=uri, type=db_type, env=entry.scalar_mapping("env"), mount_mode=mount_mode)
        )
        entry.warn_unknown(frozenset({"label", "uri", "type", "env", "mount_mode"}))
    return tuple(databases)


def _registries(root: Section) -> tuple[RegistryLogin, ...]:
    raw = root.data.get("docker_registries") or []
    if not isinstance(raw, list):
        raise root.fail("docker_registries", f"expected a list of registries, got {type(raw).__name__}")
    logins = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise root.fail(f"docker_registries[{i}]", f"expected a mapping with registry, username, password, got {item!r}")
        entry = Section(root.file, item, f"docker_registries[{i}]")
        logins.append(
            RegistryLogin(
                registry=entry.string("registry", required=True),
                username=entry.string("username", required=True),
                password=str(item.get("password") or ""),
            )
        )
    return tuple(logins)


def _logging(root: Section, base: Path) -> LoggingConfig:
    section = root.mapping("logging")
    level = str(section.string("level", default="INFO")).upper()
    if level not in LOG_LEVELS:
        raise section.fail("level", f"expected one of {', '.join(LOG_LEVELS)}, got {level!r}")
    loggers = []
    for i, item in enumerate(section.data.get("loggers") or []):
        if not isinstance(item, dict) or "name" not in item:
            raise section.fail(f"loggers[{i}]", f"expected a mapping with name and level, got {item!r}")
        loggers.append((str(item["name"]), str(item.get("level", "INFO")).upper()))
    file = section.string("file", nullable=True)
    defaults = LoggingConfig()
    return LoggingConfig(
        level=level,
        use_console=section.boolean("use_console", defaults.use_console),
        backup_count=section.integer("backup_count", defaults.backup_count, minimum=1),
        max_size=section.integer("max_size", defaults.max_size, minimum=16),
        format=section.string("format", default=defaults.format),
        datefmt=section.string("datefmt", default=defaults.datefmt),
        file=resolve_path(base, file) if file and os.sep in file else file,
        loggers=tuple(loggers),
    )


def _policies(root: Section) -> PolicyConfig:
    section = root.mapping("policies")
    section.warn_unknown(_POLICY_KEYS)
    defaults = PolicyConfig()
    return PolicyConfig(
        allowed_algorithms=section.string_list("allowed_algorithms"),
        allowed_algorithm_stores=section.string_list("allowed_algorithm_stores"),
        # The reference reads this one at the top level of `policies` and, in some
        # versions, of the config itself; accept both.
        allow_either_whitelist_or_store=section.boolean(
            "allow_either_whitelist_or_store", root.boolean("allow_either_whitelist_or_store", False)
        ),
        allowed_users=section.string_list("allowed_users"),
        allowed_organizations=section.string_list("allowed_organizations"),
        allow_basics_algorithm=section.boolean("allow_basics_algorithm", defaults.allow_basics_algorithm),
        require_algorithm_pull=section.boolean("require_algorithm_pull", defaults.require_algorithm_pull),
    )


def _monitoring(root: Section) -> Monitoring:
    defaults = Monitoring()
    prometheus = root.mapping("prometheus")
    prometheus.warn_unknown(frozenset({"enabled", "report_interval_seconds"}))
    endpoint = root.mapping("monitoring")
    endpoint.warn_unknown(frozenset({"enabled", "host", "port"}))
    return Monitoring(
        server_metrics=prometheus.boolean("enabled", defaults.server_metrics),
        server_metrics_interval=prometheus.number("report_interval_seconds", default=defaults.server_metrics_interval)
        or defaults.server_metrics_interval,
        endpoint=endpoint.boolean("enabled", defaults.endpoint),
        endpoint_host=endpoint.string("host", default=defaults.endpoint_host),
        endpoint_port=endpoint.integer("port", defaults.endpoint_port, minimum=1),
    )


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bounded_size(root: Section, name: str, default: int) -> int:
    """A size that has to stay bounded: null is refused."""
    value = root.size(name, default)
    if value is None:
        raise root.fail(name, "expected a size such as 10m (this one cannot be unlimited)")
    return value


def default_cpus() -> float:
    """Half the machine's CPUs, at least one: one algorithm cannot starve the node and the rest."""
    return float(max(1, (os.cpu_count() or 2) // 2))


def _limits(root: Section) -> AlgorithmLimits:
    """Per-run limits: absent keys take the safe defaults, ``null`` lifts a limit."""
    defaults = AlgorithmLimits()
    user = root.data.get("algorithm_user")
    if user is not None and (isinstance(user, bool) or not isinstance(user, (str, int)) or not _USER.match(str(user))):
        raise root.fail("algorithm_user", f"expected a numeric user id, 'uid:gid' or a user name, got {user!r}")
    return AlgorithmLimits(
        cpus=root.number("algorithm_cpus", default=default_cpus()),
        memory=root.size("algorithm_memory", defaults.memory),
        pids=root.integer("algorithm_pids_limit", defaults.pids, minimum=1, nullable=True),
        seconds=root.number("algorithm_time_limit", default=defaults.seconds),
        log_size=_bounded_size(root, "max_log_size", defaults.log_size),
        read_only_root=root.boolean("algorithm_read_only_root", defaults.read_only_root),
        tmp_size=root.size("algorithm_tmp_size", defaults.tmp_size) or defaults.tmp_size,
        user=None if user is None else str(user),
    )


def parse_config(
    data: Any, *, file: str, name: str, default_data_dir: str, base_dir: Path | None = None, default_log_dir: str | None = None
) -> NodeConfig:
    """Build a ``NodeConfig`` from already-parsed YAML ``data``."""
    if not isinstance(data, dict):
        raise ConfigError(file, "", f"expected a mapping of settings at the top level, got {type(data).__name__}")
    if not _NAME_PATTERN.match(name):
        raise ConfigError(file, "", f"node name {name!r} (from the file name) must match {_NAME_PATTERN.pattern}")
    base = base_dir or Path(file).resolve().parent
    root = Section(file, data)
    root.warn_unknown(_VANTAGE6_KEYS | _V6NODE_KEYS | EGRESS_KEYS | V6NODE_EGRESS_KEYS)

    server_url = root.string("server_url", required=True).rstrip("/")
    if not server_url.startswith(("http://", "https://")):
        raise root.fail("server_url", f"expected a URL starting with http:// or https://, got {server_url!r}")
    if server_url.startswith("http://") and not _is_loopback(server_url):
        log.warning(
            "%s: server_url %s is plain http://: the API key, tokens and every result cross the network "
            "unencrypted; use https://", file, server_url,
        )
    port = root.integer("port", None, minimum=1, nullable=True)
    api_path = root.string("api_path", default="/api", nullable=True) or ""
    if api_path and not api_path.startswith("/"):
        raise root.fail("api_path", f"expected a path starting with '/' (or ''), got {api_path!r}")

    encryption = root.mapping("encryption")
    directories = root.mapping("directories")
    data_dir = directories.string("data", nullable=True)
    log_dir = directories.string("log", nullable=True)
    data_dir = resolve_path(base, data_dir) if data_dir else default_data_dir
    device_requests = root.mapping("algorithm_device_requests")

    return NodeConfig(
        name=name,
        source=file,
        api_key=root.string("api_key", required=True, secret=True),
        server_url=server_url,
        port=port,
        api_path=api_path.rstrip("/"),
        # Accepted for compatibility and unused, as in the reference (task folders: <data>/tasks).
        task_dir=root.string("task_dir", nullable=True),
        data_dir=data_dir,
        log_dir=resolve_path(base, log_dir) if log_dir else default_log_dir or str(Path(data_dir) / "log"),
        databases=_databases(root, base),
        logging=_logging(root, base),
        encryption_enabled=encryption.boolean("enabled", False),
        private_key=encryption.string("private_key", nullable=True) or None,
        policies=_policies(root),
        share_algorithm_logs=root.boolean("share_algorithm_logs", True),
        share_config=root.boolean("share_config", True),
        algorithm_env=root.scalar_mapping("algorithm_env"),
        gpu=device_requests.boolean("gpu", False),
        run_context_file=root.boolean("run_context_file", False),
        max_concurrent_runs=root.integer("max_concurrent_runs", 8, minimum=1),
        max_output_size=root.integer("max_output_size", DEFAULT_MAX_OUTPUT_SIZE, minimum=1),
        max_input_size=_bounded_size(root, "max_input_size", DEFAULT_MAX_INPUT_SIZE),
        limits=_limits(root),
        keep_task_folders=root.boolean("keep_task_folders", False),
        proxy_port=root.integer("proxy_port", 0, minimum=0),
        docker_registries=_registries(root),
        proxy_check_image=root.string("proxy_check_image", default=DEFAULT_PROXY_CHECK_IMAGE, nullable=True) or None,
        proxy_check_pull=root.boolean("proxy_check_pull", False),
        monitoring=_monitoring(root),
        audit_log=root.boolean("audit_log", True),
        run_log_retention_days=root.number("run_log_retention_days", default=30.0) or 30.0,
        sync_interval=root.number("sync_interval") or DEFAULT_SYNC_INTERVAL,
        egress=parse_egress(root, base),
    )


def load_config(path: str | os.PathLike[str], default_data_dir: str, default_log_dir: str | None = None) -> NodeConfig:
    """Read and validate a node config file; the node's name is the file's stem.

    ``default_data_dir`` and ``default_log_dir`` (else ``<data>/log``) apply when ``directories`` has none.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), "", f"cannot read the file: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(file), "", f"not valid YAML: {exc}") from exc
    return parse_config(data, file=str(file), name=file.stem, default_data_dir=default_data_dir, default_log_dir=default_log_dir)
