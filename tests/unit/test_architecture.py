"""The dependency rule of DESIGN.md §1 and the package list, checked as tests."""
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYERS = {"domain": "v6node.domain", "ports": "v6node.ports", "adapters": "v6node.adapters", "app": "v6node.app"}


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken" in result.stdout


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, package in LAYERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((package, *relative)))
    assert found == listed


def test_every_module_stays_under_400_lines():
    long = {
        str(path.relative_to(REPO)): count
        for folder in LAYERS
        for path in (REPO / folder).rglob("*.py")
        if (count := len(path.read_text().splitlines())) >= 400
    }
    assert long == {}
