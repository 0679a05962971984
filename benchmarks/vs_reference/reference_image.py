"""The reference node's image, built here with no registry: vantage6-node 4.15.2 from PyPI
on the rig's Debian Python image, the way the rig builds its algorithm images.

The official image (``harbor2.vantage6.ai/infrastructure/node:4.15``) cannot be pulled
here. What the CLI's ``v6 node start`` runs in it is ``vnode-local start -c <config>
-n <name> --dockerized --user``; this image provides that command from the same PyPI
packages. Two differences, both kept small on purpose:

- Python 3.11 (Debian bookworm) instead of the official image's 3.10. Python 3.11 changed
  ``format()`` of ``(str, Enum)`` members, which vantage6 4.x relies on, so the image
  carries a ``sitecustomize`` that restores the 3.10 behaviour before vantage6 loads
  (the rig's server launcher does the same for the server).
- No C toolchain or other extras of the official base image; the node does not use them.

Its modules are compiled to bytecode in the image, as pip leaves them in the official one
(without that, every start compiled vantage6 and its dependencies first: seconds).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import docker
import docker.errors

from tests.rig.images import (
    PYTHON_BASE,
    RECIPE_LABEL,
    _build_lock,
    _current_recipe,
    _drop_replaced,
    _image_id,
    _recipe_hash,
    _scratch_dir,
    algorithm_tools_tree,
    ensure_images,
)
from tests.rig.paths import image

# The official image installs the vantage6 repository's requirements.txt and then the node and
# server packages. Two of those matter to the node but are not its declared dependencies:
# Flask (its algorithm proxy imports it; the version vantage6-server 4.15.2 pins) and
# websocket-client (without it the Socket.IO client falls back to HTTP long-polling).
REFERENCE_REQUIREMENTS = ("vantage6-node==4.15.2", "flask==3.1.3", "websocket-client==1.5.0")
REFERENCE_IMAGE = image("v6node-bench-reference-node", "4.15.2")
BENCH_LABEL = "v6node.bench"  # on everything the benchmark creates in Docker
BENCH_LABEL_VALUE = "vs-reference"

_ENTRY = """#!/usr/bin/python3
import sys

from vantage6.node.cli.node import cli_node

sys.exit(cli_node())
"""

_ENUM_SHIM = '''"""Python 3.10's format() of mixed-in enum members, which vantage6 4.x expects."""
import enum

_plain_format = enum.Enum.__format__


def _format_mixed_by_value(self, spec):
    if type(self)._member_type_ is not object:
        return format(self.value, spec)
    return _plain_format(self, spec)


enum.Enum.__format__ = _format_mixed_by_value
'''


def _dockerfile(base: str) -> str:
    site = "/usr/local/lib/python3.11/dist-packages"
    return (
        f"FROM {base}\n"
        f"COPY deps/ {site}/\n"
        f"COPY sitecustomize.py {site}/sitecustomize.py\n"
        "COPY vnode-local /usr/local/bin/vnode-local\n"
        "RUN chmod 0755 /usr/local/bin/vnode-local\n"
        # pip compiles what it installs (the official image has .pyc files); the tree was
        # installed with --no-compile on the host, so compile it here.
        f"RUN python3 -m compileall -q -j 0 {site}\n"
        'CMD ["vnode-local", "--help"]\n'
    )


def ensure_reference_image(client: docker.DockerClient | None = None, force: bool = False) -> str:
    """Build the reference node image unless it is current; returns "built" or "current"."""
    ensure_images([PYTHON_BASE])
    own = client is None
    client = client or docker.from_env(timeout=900)
    try:
        with _build_lock():
            return _build(client, force)
    finally:
        if own:
            client.close()


def _build(client: docker.DockerClient, force: bool) -> str:
    base = image(PYTHON_BASE)
    base_recipe = _current_recipe(client, base)
    if base_recipe is None:
        raise RuntimeError(f"{base} is missing")
    dockerfile = _dockerfile(base)
    recipe = _recipe_hash(base_recipe, "\n".join(REFERENCE_REQUIREMENTS), dockerfile, _ENTRY, _ENUM_SHIM)
    if not force and _current_recipe(client, REFERENCE_IMAGE) == recipe:
        return "current"
    deps = algorithm_tools_tree(REFERENCE_REQUIREMENTS)
    old = _image_id(client, REFERENCE_IMAGE)
    with tempfile.TemporaryDirectory(prefix="v6node-bench-ref-", dir=_scratch_dir()) as context:
        ctx = Path(context)
        try:
            shutil.copytree(deps, ctx / "deps", copy_function=os.link)
        except OSError:
            shutil.rmtree(ctx / "deps", ignore_errors=True)
            shutil.copytree(deps, ctx / "deps")
        # pip --target put the console scripts in deps/bin with the host's interpreter.
        shutil.rmtree(ctx / "deps" / "bin", ignore_errors=True)
        (ctx / "vnode-local").write_text(_ENTRY)
        (ctx / "sitecustomize.py").write_text(_ENUM_SHIM)
        (ctx / "Dockerfile").write_text(dockerfile)
        labels = {RECIPE_LABEL: recipe, BENCH_LABEL: BENCH_LABEL_VALUE}
        try:
            client.images.build(path=context, tag=REFERENCE_IMAGE, rm=True, forcerm=True, labels=labels)
        except docker.errors.BuildError as exc:
            output = "".join(str(chunk.get("stream") or chunk.get("error") or "") for chunk in exc.build_log)
            raise RuntimeError(f"building {REFERENCE_IMAGE} failed: {exc}\n{output[-3000:]}") from exc
    _drop_replaced(client, old, REFERENCE_IMAGE)
    return "built"


def reference_image_present(client: docker.DockerClient) -> bool:
    try:
        client.api.inspect_image(REFERENCE_IMAGE)
    except docker.errors.ImageNotFound:
        return False
    return True


if __name__ == "__main__":
    print(ensure_reference_image())
