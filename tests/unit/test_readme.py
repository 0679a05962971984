"""The README's Python examples: the harness one runs exactly as printed, as a script of its own."""
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_every_python_example_compiles() -> None:
    # The library example needs a server: examples/embed_node.py is it in full, run by the e2e tests.
    assert len(python_blocks()) >= 2
    for block in python_blocks():
        compile(block, "README.md", "exec")


def test_the_harness_example_runs_as_printed(tmp_path: Path) -> None:
    (example,) = [block for block in python_blocks() if "MemoryNodeHarness" in block]
    script = tmp_path / "example.py"
    script.write_text(example)

    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "completed"
