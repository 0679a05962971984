"""The README's harness example runs as written."""
import re
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


async def test_the_harness_example_runs():
    (example,) = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    body = textwrap.indent(example, "    ")
    namespace: dict = {}
    exec(compile("async def example():\n" + body, "README.md", "exec"), namespace)  # noqa: S102
    await namespace["example"]()
