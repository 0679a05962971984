"""Build the test images locally, with no registry; an image whose recipe is unchanged is skipped.

Usage: ``python -m tests.rig.images build [--only NAME ...]`` or ``ensure_images(names)``.
Every image carries the hash of its recipe in the label ``v6node.rig.recipe``; an image
whose label matches is current. No registry is reachable: shell images are a busybox
root file system put together here and loaded with ``docker import``; Python images are a
``debootstrap`` of Debian with packages pip-installed on the host into the image's
site-packages (pip inside a container cannot reach PyPI). Names use the loopback registry
``127.0.0.1:5999`` so that a pull fails locally at once.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import docker
import docker.errors
from attrs import frozen

from tests.rig.paths import IMAGE_PREFIX, RIG_DIR, RIG_SRC, image

RECIPE_LABEL = "v6node.rig.recipe"
ALGORITHMS = RIG_SRC / "algorithms"
# Bump to rebuild every image after a change in how this module builds them.
BUILDER_VERSION = "1"

BUSYBOX = Path("/bin/busybox")  # from the busybox-static package
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
ALGORITHM_TOOLS = "vantage6-algorithm-tools==4.15.2"
# The wrapper's @data reads a parquet database with pandas.read_parquet, which needs pyarrow;
# algorithm-tools does not depend on it, so an algorithm image must bring it.
PYARROW = "pyarrow==26.0.1"
V6_ALGO_REQUIREMENTS = (ALGORITHM_TOOLS, PYARROW)
IMAGE_PYTHON = "python3.11"  # the interpreter of the Debian image; host pip must match its ABI
WRAPPER_CMD = 'python3 -c "from vantage6.algorithm.tools.wrap import wrap_algorithm; wrap_algorithm()"'


@frozen
class ShellImage:
    """A busybox image running one algorithm script."""

    name: str
    files: tuple[str, ...]  # under tests/rig/algorithms, copied to /algo
    cmd: tuple[str, ...]


_SH_LIB = ("lib.awk", "decode.awk", "common.sh")
SHELL_IMAGES: dict[str, ShellImage] = {
    spec.name: spec
    for spec in (
        ShellImage("echo-algo", (*_SH_LIB, "echo-algo.sh"), ("/bin/sh", "/algo/echo-algo.sh")),
        ShellImage("crash-algo", ("crash-algo.sh",), ("/bin/sh", "/algo/crash-algo.sh")),
        ShellImage("sleep-algo", (*_SH_LIB, "sleep-algo.sh"), ("/bin/sh", "/algo/sleep-algo.sh")),
        ShellImage("shell-algo", (*_SH_LIB, "shell-algo.sh"), ("/bin/sh", "/algo/shell-algo.sh")),
        ShellImage(
            "env-algo", ("lib.awk", "env-algo.awk"), ("/bin/awk", "-f", "/algo/lib.awk", "-f", "/algo/env-algo.awk")
        ),
        ShellImage("db-write-algo", (*_SH_LIB, "db-write-algo.sh"), ("/bin/sh", "/algo/db-write-algo.sh")),
        ShellImage("mem-algo", (*_SH_LIB, "mem-algo.sh"), ("/bin/sh", "/algo/mem-algo.sh")),
    )
}
PYTHON_BASE = "python-base"
V6_ALGO = "v6-algo"
V6_ALGO_PACKAGE = ALGORITHMS / "v6_algo"
# A test SSH server fronting two web services on its loopback (for the SSH tunnel tests).
SSHD_HOST = "sshd-host"
# The sidecar images, built by the product's own `v6node build-images` on python-base.
SIDECARS = "sidecars"
ALL_IMAGES = (*SHELL_IMAGES, PYTHON_BASE, V6_ALGO, SSHD_HOST, SIDECARS)
ON_PYTHON_BASE = (V6_ALGO, SSHD_HOST, SIDECARS)


@frozen
class BuildResult:
    name: str
    image: str
    action: str  # "built" or "current"
    seconds: float


# --- helpers ---------------------------------------------------------------------------------
def _client() -> docker.DockerClient:
    return docker.from_env(timeout=600)


def _recipe_hash(*parts: bytes | str) -> str:
    digest = hashlib.sha256(BUILDER_VERSION.encode())
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:32]


def _current_recipe(client: docker.DockerClient, name: str) -> str | None:
    try:
        labels = client.api.inspect_image(name)["Config"].get("Labels") or {}
    except docker.errors.ImageNotFound:
        return None
    return labels.get(RECIPE_LABEL)


def _image_id(client: docker.DockerClient, name: str) -> str | None:
    try:
        return client.api.inspect_image(name)["Id"]
    except docker.errors.ImageNotFound:
        return None


def _drop_replaced(client: docker.DockerClient, old_id: str | None, name: str) -> None:
    """Remove the image a rebuild untagged, unless something still uses it."""
    if old_id is None or old_id == _image_id(client, name):
        return
    try:
        client.api.remove_image(old_id)
    except docker.errors.APIError:
        pass


def _changes(cmd: Iterable[str], recipe: str, env: dict[str, str] | None = None) -> list[str]:
    changes = [f"CMD {json.dumps(list(cmd))}", f"LABEL {RECIPE_LABEL}={recipe}"]
    changes += [f"ENV {key}={value}" for key, value in (env or {}).items()]
    return changes


@contextmanager
def _build_lock() -> Iterator[None]:
    """Serialise builds across processes: developers and test sessions share one engine."""
    RIG_DIR.mkdir(parents=True, exist_ok=True)
    with open(RIG_DIR / "images.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(cmd: list[str], **kwargs: object) -> None:
    completed = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:4])} ... failed with exit code {completed.returncode}:\n"
            f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
        )


# --- busybox shell images ------------------------------------------------------------------------
def _busybox_applets() -> list[str]:
    if not BUSYBOX.is_file():
        raise RuntimeError(f"{BUSYBOX} not found: apt-get install busybox-static")
    listing = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout
    return sorted(name for name in listing.split() if name and "/" not in name and name != "busybox")


def _tar_add(tar: tarfile.TarFile, path: str, *, data: bytes | None = None, mode: int = 0o755,
             link: str | None = None) -> None:
    info = tarfile.TarInfo(path)
    info.mtime = 0
    info.mode = mode
    if link is not None:
        info.type = tarfile.SYMTYPE
        info.linkname = link
        tar.addfile(info)
    elif data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def busybox_rootfs(files: dict[str, bytes]) -> bytes:
    """A deterministic tar of a busybox root filesystem plus ``files`` (path -> content)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for folder in ("bin", "etc", "mnt", "proc", "sys", "dev", "root", "algo"):
            _tar_add(tar, folder)
        _tar_add(tar, "tmp", mode=0o1777)
        _tar_add(tar, "bin/busybox", data=BUSYBOX.read_bytes())
        for applet in _busybox_applets():
            _tar_add(tar, f"bin/{applet}", link="busybox")
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        _tar_add(tar, "etc/passwd", data=passwd, mode=0o644)
        _tar_add(tar, "etc/group", data=b"root:x:0:\nnogroup:x:65534:\n", mode=0o644)
        for path, content in sorted(files.items()):
            _tar_add(tar, path, data=content)
    return buffer.getvalue()


def _build_shell_image(client: docker.DockerClient, spec: ShellImage, force: bool) -> str:
    name = image(spec.name)
    rootfs = busybox_rootfs({f"algo/{f}": (ALGORITHMS / f).read_bytes() for f in spec.files})
    env = {"PATH": "/bin"}
    recipe = _recipe_hash(rootfs, json.dumps([spec.cmd, env]))
    if not force and _current_recipe(client, name) == recipe:
        return "current"
    old = _image_id(client, name)
    repository, tag = name.rsplit(":", 1)
    client.api.import_image_from_data(rootfs, repository=repository, tag=tag, changes=_changes(spec.cmd, recipe, env))
    _drop_replaced(client, old, name)
    return "built"


# --- Python base image (debootstrap) ------------------------------------------------------------
_DEBOOTSTRAP_ARGS = ("--variant=minbase", "--include=python3")
_TRIM_TREES = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")
# Only files: apt and dpkg expect these folders to exist when an image built on this one uses them.
_TRIM_FILES = ("var/lib/apt/lists", "var/cache/apt", "var/log")


def _python_base_recipe() -> str:
    return _recipe_hash(DEBIAN_SUITE, json.dumps([_DEBOOTSTRAP_ARGS, _TRIM_TREES, _TRIM_FILES]))


def _trim(rootfs: Path) -> None:
    for tree in _TRIM_TREES:
        shutil.rmtree(rootfs / tree, ignore_errors=True)
        (rootfs / tree).mkdir(parents=True, exist_ok=True)
    for folder in _TRIM_FILES:
        for path in (rootfs / folder).rglob("*"):
            if path.is_file() or path.is_symlink():
                path.unlink()


def _scratch_dir() -> str:
    """A tmpfs when there is one (debootstrap writes many small files), else the rig folder."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return str(shm)
    (RIG_DIR / "tmp").mkdir(parents=True, exist_ok=True)
    return str(RIG_DIR / "tmp")


def _build_python_base(client: docker.DockerClient, force: bool) -> str:
    name = image(PYTHON_BASE)
    recipe = _python_base_recipe()
    if not force and _current_recipe(client, name) == recipe:
        return "current"
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap not found: apt-get install debootstrap")
    cache = RIG_DIR / "debootstrap-cache"  # the .debs, so a rebuild does not download them again
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="v6node-python-base-", dir=_scratch_dir()) as scratch:
        rootfs = Path(scratch) / "rootfs"
        _run(["debootstrap", *_DEBOOTSTRAP_ARGS, f"--cache-dir={cache}", DEBIAN_SUITE, str(rootfs), DEBIAN_MIRROR])
        _trim(rootfs)
        archive = Path(scratch) / "rootfs.tar"
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(archive), "."])
        old = _image_id(client, name)
        repository, tag = name.rsplit(":", 1)
        changes = _changes(["python3"], recipe, {"LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"})
        client.api.import_image_from_file(str(archive), repository=repository, tag=tag, changes=changes)
    _drop_replaced(client, old, name)
    return "built"


# --- vantage6 algorithm images ------------------------------------------------------------------
def _pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]


def algorithm_tools_tree(requirements: Sequence[str] = V6_ALGO_REQUIREMENTS) -> Path:
    """``requirements`` installed together with ``pip --target`` on the host (wheels cached under .rig/)."""
    if sys.version_info[:2] != (3, 11):
        raise RuntimeError(f"host Python must be 3.11 (the image's ABI), not {sys.version.split()[0]}")
    requirement = "\n".join(requirements)
    key = hashlib.sha256(requirement.encode()).hexdigest()[:12]
    tree = RIG_DIR / "algorithm-deps" / key
    if (tree / ".complete").exists():
        return tree
    wheelhouse = RIG_DIR / "wheelhouse"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    # Wheels first (two dependencies are sdists only), so rebuilding a tree needs no network.
    _run(_pip("wheel", "--wheel-dir", str(wheelhouse), "--find-links", str(wheelhouse), *requirements))
    if tree.exists():
        shutil.rmtree(tree)
    _run(_pip("install", "--no-index", "--find-links", str(wheelhouse), "--no-compile", "--target", str(tree),
              *requirements))
    (tree / ".complete").write_text(requirement + "\n")
    return tree


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build_v6_algorithm_image(
    client: docker.DockerClient,
    name: str,
    package_dir: Path,
    requirements: Sequence[str] = V6_ALGO_REQUIREMENTS,
    force: bool = False,
) -> str:
    """A real vantage6 algorithm image: ``package_dir`` (a Python package) on the Python base
    image with ``requirements`` installed, run by the algorithm-tools wrapper.

    Returns "built" or "current". Needs the python-base image (see ``ensure_images``).
    """
    tag = image(name)
    base = image(PYTHON_BASE)
    base_recipe = _current_recipe(client, base)
    if base_recipe is None:
        raise RuntimeError(f"{base} is missing: build {PYTHON_BASE} first")
    package = package_dir.name
    site = f"/usr/local/lib/{IMAGE_PYTHON}/dist-packages"
    dockerfile = (
        f"FROM {base}\n"
        f"COPY deps/ {site}/\n"
        f"COPY {package}/ {site}/{package}/\n"
        f"ENV PKG_NAME={package}\n"
        f"CMD {WRAPPER_CMD}\n"
    )
    recipe = _recipe_hash(base_recipe, "\n".join(requirements), dockerfile, _tree_digest(package_dir))
    if not force and _current_recipe(client, tag) == recipe:
        return "current"
    deps = algorithm_tools_tree(requirements)
    old = _image_id(client, tag)
    with tempfile.TemporaryDirectory(prefix=f"v6node-{name}-", dir=_scratch_dir()) as context:
        ctx = Path(context)
        # Hard links keep the build context cheap; copy when the tree is on another filesystem.
        try:
            shutil.copytree(deps, ctx / "deps", copy_function=os.link)
        except OSError:
            shutil.rmtree(ctx / "deps", ignore_errors=True)
            shutil.copytree(deps, ctx / "deps")
        shutil.copytree(package_dir, ctx / package, ignore=shutil.ignore_patterns("__pycache__"))
        (ctx / "Dockerfile").write_text(dockerfile)
        try:
            client.images.build(path=context, tag=tag, rm=True, forcerm=True, labels={RECIPE_LABEL: recipe})
        except docker.errors.BuildError as exc:
            output = "".join(str(chunk.get("stream") or chunk.get("error") or "") for chunk in exc.build_log)
            raise RuntimeError(f"building {tag} failed: {exc}\n{output[-3000:]}") from exc
    _drop_replaced(client, old, tag)
    return "built"


# --- test hosts and sidecars ------------------------------------------------------------------------
_SSHD_DOCKERFILE = """FROM {base}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssh-server \\
 && rm -rf /var/lib/apt/lists/* && mkdir -p /run/sshd /srv/one /srv/two \\
 && echo one > /srv/one/index.html && echo two > /srv/two/index.html \\
 && useradd -m -s /bin/sh tunnel && passwd -d tunnel
COPY sshd-host.sh /sshd-host.sh
CMD ["sh", "/sshd-host.sh"]
"""


def _build_sshd_host(client: docker.DockerClient, force: bool) -> str:
    """Debian's sshd; the user ``tunnel`` may log in with the key in $AUTHORIZED_KEY; web
    services on 127.0.0.1:8001 ("one") and 127.0.0.1:8002 ("two") only the tunnel reaches."""
    tag = image(SSHD_HOST)
    base = image(PYTHON_BASE)
    base_recipe = _current_recipe(client, base)
    if base_recipe is None:
        raise RuntimeError(f"{base} is missing: build {PYTHON_BASE} first")
    dockerfile = _SSHD_DOCKERFILE.format(base=base)
    script = (ALGORITHMS / "sshd-host.sh").read_text()
    recipe = _recipe_hash(base_recipe, dockerfile, script)
    if not force and _current_recipe(client, tag) == recipe:
        return "current"
    old = _image_id(client, tag)
    with tempfile.TemporaryDirectory(prefix="v6node-sshd-", dir=_scratch_dir()) as context:
        (Path(context) / "Dockerfile").write_text(dockerfile)
        (Path(context) / "sshd-host.sh").write_text(script)
        client.images.build(path=context, tag=tag, rm=True, forcerm=True, labels={RECIPE_LABEL: recipe})
    _drop_replaced(client, old, tag)
    return "built"


def sidecar_images() -> dict[str, str]:
    """The images the tests give the node (``images`` config key -> name)."""
    from v6node.adapters.docker.sidecar_images import CONFIG_KEYS, image_name

    return {CONFIG_KEYS[stage]: image_name(stage, f"{IMAGE_PREFIX}/", "1") for stage in CONFIG_KEYS}


def _build_sidecars(client: docker.DockerClient, force: bool) -> str:
    from v6node.adapters.docker.sidecar_images import build_sidecar_images

    built = build_sidecar_images(f"{IMAGE_PREFIX}/", "1", base=image(PYTHON_BASE), force=force)
    return "built" if any(item.action == "built" for item in built) else "current"


# --- entry points -----------------------------------------------------------------------------------
def _builder(name: str) -> Callable[[docker.DockerClient, bool], str]:
    if name in SHELL_IMAGES:
        return lambda client, force: _build_shell_image(client, SHELL_IMAGES[name], force)
    if name == PYTHON_BASE:
        return _build_python_base
    if name == V6_ALGO:
        return lambda client, force: build_v6_algorithm_image(client, V6_ALGO, V6_ALGO_PACKAGE, force=force)
    if name == SSHD_HOST:
        return _build_sshd_host
    if name == SIDECARS:
        return _build_sidecars
    raise ValueError(f"unknown test image {name!r}; known: {', '.join(ALL_IMAGES)}")


def ensure_images(names: Iterable[str] | None = None, force: bool = False) -> list[BuildResult]:
    """Build the named test images (all when None) unless current; those on python-base bring it."""
    wanted = list(ALL_IMAGES if names is None else names)
    for name in wanted:
        _builder(name)  # fail on an unknown name before building anything
    if any(name in ON_PYTHON_BASE for name in wanted) and PYTHON_BASE not in wanted:
        wanted.append(PYTHON_BASE)
    ordered = sorted(dict.fromkeys(wanted), key=lambda n: (n in ON_PYTHON_BASE, n != PYTHON_BASE))
    results: list[BuildResult] = []
    client = _client()
    try:
        with _build_lock():
            for name in ordered:
                started = time.monotonic()
                action = _builder(name)(client, force)
                results.append(BuildResult(name, image(name), action, time.monotonic() - started))
    finally:
        client.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.rig.images", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the test images that are not current")
    build.add_argument("--only", nargs="+", metavar="NAME", choices=ALL_IMAGES, help="only these images")
    build.add_argument("--force", action="store_true", help="rebuild even when current")
    commands.add_parser("list", help="the image names")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in ALL_IMAGES:
            print(f"{name}\t{image(name)}")
        return 0
    started = time.monotonic()
    for result in ensure_images(args.only, force=args.force):
        shown = "127.0.0.1:5999/v6node-{squid,ssh-tunnel,network-config}:1" if result.name == SIDECARS else result.image
        print(f"{result.action:8} {shown:45} {result.seconds:6.1f} s", flush=True)
    print(f"done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
