"""The two nodes under test, each started the way its operator starts it.

- ``ReferenceNode``: vantage6-node 4.15.2 in its container, started with the docker run
  that vantage6-cli 4.15.2's ``v6 node start`` makes (``vantage6/cli/node/start.py``):
  the same image command, mounts (log folder, data/vpn/ssh/squid volumes, the config file
  read-only, the Docker socket), environment, labels, container name, ``auto_remove``,
  ``tty``, on the default network. The CLI's own steps before that call (its imports, a
  pull attempt of the node image, creating the volumes) are done before the clock starts,
  so the reference's start-up is timed from the ``docker run`` alone. Stopped as ``v6 node
  stop`` does: ``docker stop`` (10 s), then its volumes are deleted.
- ``V6Node``: ``v6node start -c <file>`` on the host, as an operator runs it: from a venv
  of its own (``.rig/bench-venv``) where ``pip install`` put the project and its runtime
  dependencies only, not the editable install of the project venv with its test tools
  (some of which, such as ``rich``, httpx loads when they are present).

Both get a config as ``v6 node new`` writes it for the same server, log level INFO, no
databases, ``require_algorithm_pull: false`` (test images cannot be pulled). Both load
compiled bytecode, as installed packages do: pip compiles what it installs into the
bench venv, and the reference image is compiled when it is built.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

import docker
import docker.errors
import yaml

from benchmarks.vs_reference.measure import process_tree
from benchmarks.vs_reference.reference_image import BENCH_LABEL, BENCH_LABEL_VALUE, REFERENCE_IMAGE
from tests.rig.node_process import NodeProcess, node_config
from tests.rig.paths import REPO, RIG_DIR
from tests.rig.server import NodeCredentials, RealServer

# On everything the benchmark creates in Docker: the benchmark's label, and this run's, so
# that a run removes its own leftovers and never another run's.
BENCH_RUN_LABEL = "v6node.bench.run"
RUN_ID = uuid.uuid4().hex[:12]
BENCH_LABELS = {BENCH_LABEL: BENCH_LABEL_VALUE, BENCH_RUN_LABEL: RUN_ID}


BENCH_VENV = RIG_DIR / "bench-venv"


def operator_install() -> Path:
    """This checkout installed with pip into ``.rig/bench-venv`` (made once; the project is
    reinstalled every time, its dependencies only when missing); returns its ``v6node``."""
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    log = RIG_DIR / "bench-venv-pip.log"  # pip is chatty on some machines: shown when it fails
    for args in ([str(REPO)], ["--no-deps", "--force-reinstall", str(REPO)]):
        with log.open("w") as out:
            done = subprocess.run([*pip, *args], stdout=out, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise RuntimeError(f"pip install {' '.join(args)} failed:\n{log.read_text()[-3000:]}")
    return BENCH_VENV / "bin" / "v6node"


class NodeUnderTest(Protocol):
    kind: str
    name: str
    credentials: NodeCredentials

    def start(self) -> float:
        """Start the node; returns ``time.perf_counter()`` just before the start."""

    def pids(self) -> list[int]:
        """The node's processes (empty when it is not running)."""

    def stop(self) -> None: ...

    def remove_leftovers(self) -> list[str]:
        """Remove what the node left in Docker; returns what was removed."""

    def start_log(self) -> list[str]:
        """The first lines of the node's log."""


# Milliseconds since the node's Python process started: the start-up phase keeps the first
# lines of each node's log, where this shows what its start-up spends its time on.
LOG_FORMAT = "%(relativeCreated)7.0f ms %(name)s %(levelname)s %(message)s"
START_LOG_LINES = 80


def _base_config(server: RealServer, credentials: NodeCredentials, home: Path) -> dict[str, Any]:
    config = node_config(server, credentials, home)
    config["logging"]["level"] = "INFO"
    config["logging"]["format"] = LOG_FORMAT
    return config


class V6Node:
    kind = "v6node"

    def __init__(self, server: RealServer, credentials: NodeCredentials, home: Path, executable: Path) -> None:
        self.credentials = credentials
        self.executable = executable
        self.name = f"bench-v6n-{uuid.uuid4().hex[:8]}"
        self.home = home
        self.config_file = home / f"{self.name}.yaml"
        home.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(_base_config(server, credentials, home)))
        self.process: NodeProcess | None = None

    def start(self) -> float:
        self.process = NodeProcess(self.config_file, executable=self.executable)
        started = time.perf_counter()
        self.process.start(wait=False)
        return started

    def pids(self) -> list[int]:
        if self.process is None or not self.process.running:
            return []
        return process_tree(self.process.pid)

    def stop(self) -> None:
        if self.process is not None:
            code = self.process.stop()
            if code != 0 and not (code == CLEANUP_INCOMPLETE and only_engine_kept_networks(self.process.output)):
                raise RuntimeError(f"v6node exited with {code}:\n{self.process.output[-3000:]}")
            if code != 0:
                print(f"v6node exited {code}: {ENGINE_KEPT_NETWORK}", file=sys.stderr, flush=True)
            self.process = None

    def remove_leftovers(self) -> list[str]:
        return _remove_labelled(f"v6node.node={self.name}")

    def start_log(self) -> list[str]:
        lines = self.process.lines if self.process is not None else []
        return [line.rstrip("\n") for line in lines[:START_LOG_LINES]]


class ReferenceNode:
    kind = "reference"

    def __init__(self, server: RealServer, credentials: NodeCredentials, home: Path, client: docker.DockerClient) -> None:
        self.credentials = credentials
        self.name = f"bench-ref-{uuid.uuid4().hex[:8]}"
        self.client = client
        self.container_name = f"vantage6-{self.name}-user"
        self.log_dir = home / "log"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.config_file = home / f"{self.name}.yaml"
        config = _base_config(server, credentials, home)
        config.pop("proxy_check_image")  # v6node's key; the reference has no such check
        config.pop("directories")  # the dockerized reference uses /mnt/... whatever the file says
        config["images"] = {"node": REFERENCE_IMAGE}  # what `v6 node start` runs
        self.config_file.write_text(yaml.safe_dump(config))
        self.container = None

    @property
    def volume_names(self) -> list[str]:
        return [f"{self.container_name}-{suffix}" for suffix in ("vol", "vpn-vol", "ssh-vol", "squid-vol")]

    def start(self) -> float:
        data, vpn, ssh, squid = (
            self.client.volumes.create(name, labels=BENCH_LABELS).name for name in self.volume_names
        )
        mounts = [
            (str(self.log_dir), "/mnt/log", "rw"),
            (data, "/mnt/data", "rw"),
            (vpn, "/mnt/vpn", "rw"),
            (ssh, "/mnt/ssh", "rw"),
            (squid, "/mnt/squid", "rw"),
            (str(self.config_file), f"/mnt/config/{self.name}.yaml", "ro"),
            ("/var/run/docker.sock", "/var/run/docker.sock", "rw"),
        ]
        volumes = [f"{source}:{target}" if mode == "rw" else f"{source}:{target}:{mode}" for source, target, mode in mounts]
        env = {"DATA_VOLUME_NAME": data, "VPN_VOLUME_NAME": vpn, "PRIVATE_KEY": "/mnt/private_key.pem"}
        labels = {"vantage6-type": "node", "system": "False", "name": self.name, **BENCH_LABELS}
        started = time.perf_counter()
        self.container = self.client.containers.run(
            REFERENCE_IMAGE,
            command=f"vnode-local start -c /mnt/config/{self.name}.yaml -n {self.name}  --dockerized --user",
            volumes=volumes, detach=True, labels=labels, environment=env, name=self.container_name,
            auto_remove=True, tty=True, extra_hosts={},
        )
        return started

    def pids(self) -> list[int]:
        try:
            state = self.client.api.inspect_container(self.container_name)["State"]
        except docker.errors.NotFound:
            return []
        return process_tree(state["Pid"]) if state.get("Running") and state.get("Pid") else []

    def logs(self) -> str:
        """Its log file (``<instance type>_<scope>.log``: ``node_user.log``)."""
        return "".join(path.read_text(errors="replace") for path in sorted(self.log_dir.glob("*.log")))

    def start_log(self) -> list[str]:
        return self.logs().splitlines()[:START_LOG_LINES]

    def stop(self) -> None:
        if self.container is None:
            return
        with contextlib.suppress(docker.errors.NotFound):
            self.container.stop(timeout=10)
        deadline = time.monotonic() + 30  # auto_remove: gone shortly after it stopped
        while time.monotonic() < deadline:
            try:
                self.client.api.inspect_container(self.container_name)
            except docker.errors.NotFound:
                break
            time.sleep(0.2)
        self.container = None
        for name in self.volume_names:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                self.client.volumes.get(name).remove(force=True)

    def remove_leftovers(self) -> list[str]:
        """Its algorithm containers, its network and temporary volumes: all named after it."""
        removed = []
        prefix = f"vantage6-{self.name}-"
        for container in self.client.containers.list(all=True, filters={"label": f"node={self.name}"}):
            container.remove(force=True)
            removed.append(f"container {container.name}")
        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(self.container_name).remove(force=True)
            removed.append(f"container {self.container_name}")
        for network in self.client.networks.list(names=[f"{prefix}user-net"]):
            if network.name.startswith(prefix):
                with contextlib.suppress(docker.errors.APIError):
                    network.reload()
                    for attached in network.containers:
                        network.disconnect(attached, force=True)
                    network.remove()
                    removed.append(f"network {network.name}")
        for volume in self.client.volumes.list():
            if volume.name.startswith(prefix):
                with contextlib.suppress(docker.errors.APIError):
                    volume.remove(force=True)
                    removed.append(f"volume {volume.name}")
        return removed


def remove_run_leftovers() -> list[str]:
    """Whatever this run labelled and did not remove (an interrupted phase, a failed stop)."""
    return _remove_labelled(f"{BENCH_RUN_LABEL}={RUN_ID}")


CLEANUP_INCOMPLETE = 5  # v6node's exit code when its stop left something behind
STUCK_ENDPOINTS = "has active endpoints"
ENGINE_KEPT_NETWORK = (
    "the Docker engine refuses to remove a network for endpoints no container holds (an engine bug, "
    "moby/moby#42119; the network goes when the engine restarts, which a benchmark must not do)"
)


def only_engine_kept_networks(output: str) -> bool:
    """Whether all a stop could not remove are networks the engine keeps for phantom endpoints."""
    reports = [line.split("could not remove: ", 1)[1] for line in output.splitlines() if "could not remove: " in line]
    if not reports:
        return False
    items = [item for report in reports for item in report.split(". The next start")[0].split("; ")]
    return all(item.startswith("network ") and STUCK_ENDPOINTS in item for item in items)


def _remove_labelled(label: str) -> list[str]:
    client = docker.from_env()
    removed = []
    try:
        for container in client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True)
            removed.append(f"container {container.name}")
        for network in client.networks.list(filters={"label": label}):
            try:
                network.remove()
            except docker.errors.APIError as exc:
                if STUCK_ENDPOINTS not in str(exc):
                    raise
                removed.append(f"network {network.name} NOT removed: {ENGINE_KEPT_NETWORK}")
                continue
            removed.append(f"network {network.name}")
        for volume in client.volumes.list(filters={"label": label}):
            volume.remove(force=True)
            removed.append(f"volume {volume.name}")
    finally:
        client.close()
    return removed
