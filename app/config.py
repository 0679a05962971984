"""Load an unmodified vantage6 4.x node YAML file into a ``NodeConfig``.

Unknown keys are ignored with a warning; a wrong type or a missing required key
raises ``ConfigError`` naming the file, the key path and what was expected.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Mapping
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
from v6node.domain.errors import ConfigError
from v6node.app.config_runtime import parse_runtime

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
        "runtime",
    }
)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_POLICY_KEYS = frozenset(
    {
        "allowed_algorithms", "allowed_algorithm_stores", "allow_either_whitelist_or_store",
        "allowed_users", "allowed_organizations", "allow_basics_algorithm", "require_algorithm_pull",
    }
)
_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$")
DEFAULT_MAX_OUTPUT_SIZE = 1024 * 1024 * 1024


class _Section:
    """Typed access to one mapping of the YAML, with errors that say where."""

    def __init__(self, file: str, data: Mapping[str, Any], path: str = "") -> None:
        self.file = file
        self.data = data
        self.path = path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), problem)

    def _typed(
        self, name: str, kinds: tuple[type, ...], expected: str, default: Any, required: bool, secret: bool = False
    ) -> Any:
        if name not in self.data:
            if required:
                raise self.fail(name, f"is required ({expected})")
            return default
        value = self.data[name]
        if value is None and type(None) in kinds:
            return None
        # A secret's value never reaches an error message (they end up in logs and tickets).
        shown = f"a {type(value).__name__} (value not shown)" if secret else f"{type(value).__name__} {value!r}"
        # bool is an int in Python; an int where a bool is expected (or back) is a mistake.
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(name, f"expected {expected}, got {'a bool (value not shown)' if secret else repr(value)}")
        if not isinstance(value, kinds):
            raise self.fail(name, f"expected {expected}, got {shown}")
        return value

    def string(
        self, name: str, default: str | None = None, required: bool = False, nullable: bool = False, secret: bool = False
    ) -> Any:
        kinds: tuple[type, ...] = (str, type(None)) if nullable else (str,)
        return self._typed(name, kinds, "a string", default, required, secret)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._typed(name, (bool, type(None)), "true or false", default, False)
        return default if value is None else value

    def integer(self, name: str, default: int | None, minimum: int | None = None, nullable: bool = False) -> Any:
        kinds: tuple[type, ...] = (int, type(None)) if nullable else (int,)
        value = self._typed(name, kinds, "an integer" + (" or null" if nullable else ""), default, False)
        if value is not None and minimum is not None and value < minimum:
            raise self.fail(name, f"expected an integer >= {minimum}, got {value}")
        return value

    def number(self, name: str, minimum_exclusive: float = 0.0, default: float | None = None) -> float | None:
        """A number > ``minimum_exclusive``; ``default`` when absent, None when set to null."""
        value = self._typed(name, (int, float, type(None)), "a number", default, False)
        if value is not None and value <= minimum_exclusive:
            raise self.fail(name, f"expected a number > {minimum_exclusive:g}, got {value}")
        return None if value is None else float(value)

    def size(self, name: str, default: int | None = None) -> int | None:
        """Bytes, given as an integer or as text like "512m" or "4GiB"; ``default`` when absent,
        None when set to null."""
        value = self._typed(name, (int, str, type(None)), "a size such as 4g or 512m", default, False)
        if value is None or isinstance(value, int):
            if value is not None and value <= 0:
                raise self.fail(name, f"expected a positive size, got {value}")
            return value
        match = _SIZE.match(value)
        if not match:
            raise self.fail(name, f"expected a size such as 4g or 512m, got {value!r}")
        return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])

    def mapping(self, name: str) -> _Section:
        value = self._typed(name, (dict, type(None)), "a mapping", None, False)
        return _Section(self.file, value or {}, self.key(name))

    def string_list(self, name: str) -> tuple[str, ...]:
        """A string or a list of scalars, as text (YAML ints become their digits)."""
        value = self._typed(name, (str, list, type(None)), "a string or a list", None, False)
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        for i, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, (str, int)):
                raise self.fail(f"{name}[{i}]", f"expected a string or an integer, got {item!r}")
        return tuple(str(item) for item in items)

    def scalar_mapping(self, name: str) -> dict[str, str]:
        section = self.mapping(name)
        result = {}
        for key, value in section.data.items():
            if isinstance(value, (dict, list)):
                raise section.fail(str(key), f"expected a plain value, got {value!r}")
            result[str(key)] = "" if value is None else str(value)
        return result

    def warn_unknown(self, known: frozenset[str]) -> None:
        for name in sorted(set(map(str, self.data)) - known):
            log.warning("%s: unknown key '%s' is ignored", self.file, self.key(name))


def _resolve(base: Path, value: str) -> str:
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else (base / path).resolve())


def _databases(root: _Section, base: Path) -> tuple[DatabaseConfig, ...]:
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
        entry = _Section(root.file, item, f"databases[{i}]")
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
            uri = _resolve(base, uri)
            wanted, exists = ("folder", os.path.isdir(uri)) if db_type == "folder" else ("file", os.path.isfile(uri))
            if not exists:
                raise entry.fail("uri", f"database '{label}' ({db_type}): no {wanted} at {uri}")
        databases.append(
            DatabaseConfig(label=label, uri=uri, type=db_type, env=entry.scalar_mapping("env"), mount_mode=mount_mode)
        )
        entry.warn_unknown(frozenset({"label", "uri", "type", "env", "mount_mode"}))
    return tuple(databases)


def _registries(root: _Section) -> tuple[RegistryLogin, ...]:
    raw = root.data.get("docker_registries") or []
    if not isinstance(raw, list):
        raise root.fail("docker_registries", f"expected a list of registries, got {type(raw).__name__}")
    logins = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise root.fail(f"docker_registries[{i}]", f"expected a mapping with registry, username, password, got {item!r}")
        entry = _Section(root.file, item, f"docker_registries[{i}]")
        logins.append(
            RegistryLogin(
                registry=entry.string("registry", required=True),
                username=entry.string("username", required=True),
                password=str(item.get("password") or ""),
            )
        )
    return tuple(logins)


def _logging(root: _Section, base: Path) -> LoggingConfig:
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
        file=_resolve(base, file) if file and os.sep in file else file,
        loggers=tuple(loggers),
    )


def _policies(root: _Section) -> PolicyConfig:
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


def _monitoring(root: _Section) -> Monitoring:
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


def _bounded_size(root: _Section, name: str, default: int) -> int:
    """A size that has to stay bounded: null is refused."""
    value = root.size(name, default)
    if value is None:
        raise root.fail(name, "expected a size such as 10m (this one cannot be unlimited)")
    return value


def default_cpus() -> float:
    """Half the machine's CPUs, at least one: one algorithm cannot starve the node and the rest."""
    return float(max(1, (os.cpu_count() or 2) // 2))


def _limits(root: _Section) -> AlgorithmLimits:
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
    data: Any, *, file: str, name: str, default_data_dir: str, base_dir: Path | None = None
) -> NodeConfig:
    """Build a ``NodeConfig`` from already-parsed YAML ``data``."""
    if not isinstance(data, dict):
        raise ConfigError(file, "", f"expected a mapping of settings at the top level, got {type(data).__name__}")
    if not _NAME_PATTERN.match(name):
        raise ConfigError(file, "", f"node name {name!r} (from the file name) must match {_NAME_PATTERN.pattern}")
    base = base_dir or Path(file).resolve().parent
    root = _Section(file, data)
    root.warn_unknown(_VANTAGE6_KEYS | _V6NODE_KEYS)

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
    data_dir = _resolve(base, data_dir) if data_dir else default_data_dir
    device_requests = root.mapping("algorithm_device_requests")
    proxy_check_image = root.string("proxy_check_image", default=DEFAULT_PROXY_CHECK_IMAGE, nullable=True) or None

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
        log_dir=_resolve(base, log_dir) if log_dir else str(Path(data_dir) / "log"),
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
        proxy_check_image=proxy_check_image,
        proxy_check_pull=root.boolean("proxy_check_pull", False),
        monitoring=_monitoring(root),
        audit_log=root.boolean("audit_log", True),
        run_log_retention_days=root.number("run_log_retention_days", default=30.0) or 30.0,
        sync_interval=root.number("sync_interval") or DEFAULT_SYNC_INTERVAL,
        runtime=parse_runtime(root, proxy_check_image),
    )


def load_config(path: str | os.PathLike[str], default_data_dir: str) -> NodeConfig:
    """Read and validate a node config file; the node's name is the file's stem.

    ``default_data_dir`` is used when the file has no ``directories.data``.
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
    return parse_config(data, file=str(file), name=file.stem, default_data_dir=default_data_dir)
