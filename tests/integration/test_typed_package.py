"""The wheel carries py.typed: a user's mypy, in a fresh venv with only the wheel installed, sees our types."""
from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "domain", "ports", "adapters", "app")

USER_CODE = '''\
import asyncio
from pathlib import Path

from v6node.app import EmbeddedNode, RunEvent, Stage, load_config


def describe(event: RunEvent) -> str:
    status = event.status.value if event.status is not None else ""
    return f"run {event.run_id} of task {event.task_id}: {event.stage.value} {status}"


async def first_finished_run(config_file: Path) -> list[str]:
    config = load_config(config_file, default_data_dir="/var/lib/v6node")
    node = EmbeddedNode(config)
    seen: list[str] = []
    async with node:
        async for event in node.events():
            seen.append(describe(event))
            if event.stage is Stage.FINISHED:
                break
    return seen


print(asyncio.run(first_finished_run(Path("alpha.yaml"))))
'''
PLANTED_ERROR = "    run_id: str = event.run_id  # planted: run_id is an int\n"


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(arg) for arg in args], cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory) -> Path:
    """A fresh venv with the built wheel (its dependencies from the pip cache or PyPI) and mypy."""
    work = tmp_path_factory.mktemp("typed")
    source = work / "source"  # built from a copy: setuptools writes build/ where it builds
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    built = run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", work / "dist", source, cwd=work)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (work / "dist").glob("v6node-*.whl")
    made = run(sys.executable, "-m", "venv", work / "venv", cwd=work)
    assert made.returncode == 0, made.stderr
    mypy = f"mypy=={importlib.metadata.version('mypy')}"
    installed = run(work / "venv" / "bin" / "pip", "install", "-q", wheel, mypy, cwd=work)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return work


def mypy(venv: Path, code: str, name: str) -> subprocess.CompletedProcess[str]:
    folder = venv / "user"  # nowhere near the repository: only the installed wheel can be found
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(code)
    return run(venv / "venv" / "bin" / "mypy", "--strict", "--no-incremental", name, cwd=folder)


def test_the_installed_wheel_type_checks_a_users_program(user_venv) -> None:
    checked = mypy(user_venv, USER_CODE, "good.py")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Success: no issues found in 1 source file" in checked.stdout


def test_a_type_error_against_our_types_is_reported(user_venv) -> None:
    bad = USER_CODE.replace("    status = event.status", PLANTED_ERROR + "    status = event.status")
    checked = mypy(user_venv, bad, "bad.py")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    line = bad.splitlines().index(PLANTED_ERROR.rstrip("\n")) + 1
    assert (
        f'bad.py:{line}: error: Incompatible types in assignment (expression has type "int", variable has type "str")'
        in checked.stdout
    )
    assert "py.typed" not in checked.stdout  # no "missing library stubs or py.typed marker"
