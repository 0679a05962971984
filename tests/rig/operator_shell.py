"""An operator's shell: `v6node` commands run as processes, with the user's vantage6 folders in a tmp folder."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

V6NODE = Path(sys.executable).with_name("v6node")


class OperatorShell:
    """Runs ``v6node`` with ``XDG_*`` pointing into ``root``; keeps a transcript of every
    command and its output (``transcript``), as an operator's terminal would show it."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.env = {
            **os.environ,
            "XDG_CONFIG_HOME": str(self.root / "config"),
            "XDG_DATA_HOME": str(self.root / "data"),
            "XDG_CACHE_HOME": str(self.root / "cache"),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.transcript: list[str] = []

    def config_file(self, name: str) -> Path:
        return self.root / "config" / "vantage6" / "node" / f"{name}.yaml"

    def data_dir(self, name: str) -> Path:
        return self.root / "data" / "vantage6" / "node" / name

    def log_file(self, name: str) -> Path:
        return self.root / "cache" / "vantage6" / "log" / "node" / name / "node_user.log"

    def edit_config(self, name: str, **keys: object) -> None:
        """What an operator does in an editor: set top-level keys of the node's YAML."""
        file = self.config_file(name)
        data = yaml.safe_load(file.read_text())
        data.update(keys)
        file.write_text(yaml.safe_dump(data, sort_keys=False))

    def run(self, *args: str, input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(V6NODE), *args], input=input, capture_output=True, text=True, env=self.env, timeout=timeout
        )
        self._note(args, done.stdout + done.stderr, done.returncode)
        return done

    def popen(self, *args: str) -> subprocess.Popen[str]:
        self.transcript.append(f"$ v6node {shlex.join(args)}")
        return subprocess.Popen(
            [str(V6NODE), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env
        )

    def note(self, text: str) -> None:
        self.transcript.append(text)

    def _note(self, args: tuple[str, ...], output: str, code: int) -> None:
        self.transcript.append(f"$ v6node {shlex.join(args)}")
        self.transcript.extend(output.rstrip("\n").splitlines())
        if code:
            self.transcript.append(f"[exit code {code}]")
