"""scripts/docs builds the API reference from the docstrings (pdoc)."""
from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_api_reference_is_built_from_the_docstrings(tmp_path) -> None:
    out = tmp_path / "docs"
    done = subprocess.run([str(REPO / "scripts" / "docs"), str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warn" not in done.stderr, done.stderr
    public = (out / "v6node" / "app.html").read_text()
    for name in ("EmbeddedNode", "load_config", "config_from_dict", "RunEvent", "run_locally", "LocalRunReport"):
        assert f'id="{name}"' in public, name
    assert "Business rules" in (out / "v6node" / "app" / "run_local.html").read_text()
    assert (out / "v6node" / "adapters" / "memory" / "harness.html").is_file()
    assert (out / "index.html").is_file()
