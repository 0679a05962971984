"""Typed access to the mappings of a node YAML file, with errors that name the file and the key."""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from v6node.domain.errors import ConfigError

log = logging.getLogger("v6node.config")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class Section:
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

    def mapping(self, name: str) -> Section:
        value = self._typed(name, (dict, type(None)), "a mapping", None, False)
        return Section(self.file, value or {}, self.key(name))

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


def resolve_path(base: Path, value: str) -> str:
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else (base / path).resolve())
