"""Where the rig keeps its venvs, images recipes and state."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RIG_DIR = Path(os.environ.get("V6NODE_RIG_DIR", REPO / ".rig"))
SERVER_VENV = RIG_DIR / "server-venv"
SERVER_PYTHON = SERVER_VENV / "bin" / "python"
RIG_SRC = Path(__file__).resolve().parent
# Test images live under a loopback registry nobody listens on: a pull fails at once,
# locally, instead of reaching out to a public registry.
IMAGE_PREFIX = "127.0.0.1:5999"


def image(name: str, tag: str = "1") -> str:
    return f"{IMAGE_PREFIX}/{name}:{tag}"
