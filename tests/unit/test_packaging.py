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


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    """An import cycle shows only when a module is the first one imported (as a test module
    importing an adapter can be): import each on its own."""
    import subprocess
    import sys

    modules = sorted(
        ".".join([name, *path.relative_to(REPO / folder).with_suffix("").parts]).removesuffix(".__init__")
        for folder, name in TOP.items()
        for path in (REPO / folder).rglob("*.py")
    )
    script = (
        "import importlib, subprocess, sys\n"
        "failed = [m for m in sys.argv[1:] if subprocess.run([sys.executable, '-c', f'import {m}'],"
        " capture_output=True).returncode]\n"
        "print('\\n'.join(failed))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True, timeout=600)
    assert done.stdout.strip() == "", f"these modules fail when imported first:\n{done.stdout}"
