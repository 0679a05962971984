"""Files the CLI writes and reads for an operator: private folders, configs, keys, log tails."""
from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from pathlib import Path
from typing import Any

import click
import yaml

log = logging.getLogger("v6node")

LOG_LINES_SHOWN = 15


def private_folder(path: Path) -> None:
    """Create ``path`` (and missing parents) readable by this user only; warn when an existing
    folder is open to others (the node's data folder holds keys, tokens and task data)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)  # mkdir's mode is cut by the umask
    if path not in missing and path.stat().st_mode & 0o077:
        log.warning("%s can be read by other users (mode %04o); chmod 700 it", path, path.stat().st_mode & 0o777)


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file next to ``path`` and rename it over ``path``: a link at
    ``path`` is replaced, not followed, and a crash leaves the old file or the new one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def read_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def write_config(path: Path, data: dict[str, Any]) -> None:
    """Write a node config (it holds the API key): readable by this user only, or with the
    mode the file already has; never through a link, never half-written."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    replace_file(path, yaml.safe_dump(data, sort_keys=False).encode("utf-8"), mode)


def last_lines(path: Path, count: int, since: int = 0) -> list[str]:
    """The last ``count`` lines of ``path`` after byte ``since`` (all of it when the file was
    rotated and is now shorter); [] when there is no such file."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(since if since <= size else 0)
            lines: deque[bytes] = deque(handle, maxlen=count)
    except OSError:
        return []
    return [line.decode("utf-8", "replace").rstrip("\n") for line in lines]


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def show_log_tail(title: str, log_file: Path, since: int, extra: Path | None = None, extra_since: int = 0) -> None:
    """Print the log lines written since byte ``since`` (and those of ``extra``), on stderr."""
    lines = last_lines(log_file, LOG_LINES_SHOWN, since)
    if extra is not None:
        lines += last_lines(extra, LOG_LINES_SHOWN, extra_since)
    click.echo(f"{title} ({log_file}):" if lines else f"{title}: the log {log_file} has nothing new", err=True)
    for line in lines:
        click.echo(f"  | {line}", err=True)
