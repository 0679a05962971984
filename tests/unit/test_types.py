"""The type checker holds the ports: mypy --strict on domain, ports and app, mypy on adapters.

mypy runs on the installed package (the venv's editable install links build/ to the source
folders), so every ``v6node.*`` import resolves to our own code; an unresolved first-party
import is an error, never an ``Any``.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api

REPO = Path(__file__).resolve().parents[2]


def mypy(*args: str) -> str:
    stdout, stderr, status = api.run(
        ["--config-file", str(REPO / "pyproject.toml"), "--cache-dir", str(REPO / ".mypy_cache"), *args]
    )
    if status != 0:
        pytest.fail(f"mypy {' '.join(args)}:\n{stdout}{stderr}")
    return stdout


def test_domain_ports_and_app_pass_mypy_strict() -> None:
    assert "Success" in mypy("--strict", "-p", "v6node.domain", "-p", "v6node.ports", "-p", "v6node.app")


def test_adapters_pass_mypy() -> None:
    assert "Success" in mypy("-p", "v6node.adapters")
