"""Many jobs at once through the ContainerRuntime port: one Docker engine versus the rig's three-host swarm.

Run with:  .venv/bin/python -m benchmarks.swarm_spread [--jobs 50] [--seconds 5]

Each job is the hardened spec an algorithm gets (dropped capabilities, read-only root,
pids and memory limits, the node's internal network) running ``sleep <seconds>`` in the
busybox test image; all are started at once and each is waited for, its logs read and
removed, as the node does. "One host" is the machine's engine (``DockerContainerRuntime``);
the swarm is the test rig (``tests/rig/swarm.py``: three dockerd in network namespaces of
their own on the same machine, so the same 2 cores). Wall time is from the first start to
the last removal; runs per host are read from the adapter's "runs on swarm host" lines.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import tempfile
import time
import uuid

import docker

from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.swarm_container_runtime import SwarmContainerRuntime
from v6node.domain.containers import ContainerSpec, managed_labels, network_name
from v6node.ports.container_runtime import ContainerRuntime

from tests.rig.images import ensure_images
from tests.rig.paths import image
from tests.rig.swarm import SWARM_IMAGES, running_swarm

IMAGE = image("sleep-algo")


class Placements(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.hosts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if "runs on swarm host" in record.msg:
            self.hosts[str(record.args[-1])] += 1  # type: ignore[index]


async def burst(runtime: ContainerRuntime, jobs: int, seconds: float) -> tuple[float, list[int]]:
    node = f"bench-{uuid.uuid4().hex[:8]}"
    labels = managed_labels(node)
    network = network_name(node)
    await runtime.ensure_network(network, labels)

    async def one(i: int) -> int:
        spec = ContainerSpec(
            name=f"vantage6-{node}-run-{i}", image=IMAGE, network=network, labels=labels,
            command=("sh", "-c", f"sleep {seconds}; echo done {i}"), cap_drop=("ALL",),
            security_opt=("no-new-privileges",), pids_limit=64, mem_limit=64 * 1024 * 1024,
            read_only_root=True, log_size=64 * 1024,
        )
        container = await runtime.run(spec)
        exit_ = await runtime.wait(container)
        assert f"done {i}" in await runtime.logs(container)
        await runtime.remove(container)
        return exit_.exit_code

    try:
        started = time.monotonic()
        codes = await asyncio.gather(*(one(i) for i in range(jobs)))
        return time.monotonic() - started, codes
    finally:
        await runtime.remove_labelled(labels)


async def measure(jobs: int, seconds: float) -> None:
    local = DockerContainerRuntime()
    try:
        wall, codes = await burst(local, jobs, seconds)
    finally:
        local.close()
    print(f"one engine : {jobs} jobs of {seconds:g} s in {wall:.1f} s wall, exit codes {set(codes)}")

    placements = Placements()
    logging.getLogger("v6node.adapters.docker.swarm_container_runtime").addHandler(placements)
    logging.getLogger("v6node.adapters.docker.swarm_container_runtime").setLevel(logging.INFO)
    with contextlib.closing(docker.from_env()) as source, running_swarm(
        [image(name) for name in SWARM_IMAGES], source
    ) as rig, tempfile.TemporaryDirectory() as volumes:
        swarm = SwarmContainerRuntime(
            rig.manager.url, proxy_address=rig.host_address, relay_image=image("echo-algo"), volumes_dir=volumes
        )
        try:
            wall, codes = await burst(swarm, jobs, seconds)
        finally:
            swarm.close()
    spread = dict(sorted(placements.hosts.items()))
    print(f"swarm (3)  : {jobs} jobs of {seconds:g} s in {wall:.1f} s wall, exit codes {set(codes)}, runs per host {spread}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    ensure_images(SWARM_IMAGES)
    asyncio.run(measure(args.jobs, args.seconds))


if __name__ == "__main__":
    main()
