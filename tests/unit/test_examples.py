"""The examples that need no Docker and no server run as they are written, as scripts of their own."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_a_custom_adapter_is_given_to_the_node_through_the_container(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_adapter.py")], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("recorded: container ") and "example/shout:1" in lines[0]
    assert "finished: completed" in lines[1]
    assert lines[2] == "the runtime started 1 container(s): ['example/shout:1']"
    assert lines[3].endswith('{"METHOD": "SHOUT", "KWARGS": {"TEXT": "HELLO"}}')
