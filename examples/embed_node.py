"""Run a vantage6 node inside your own asyncio program and print what happens to its runs.

    python examples/embed_node.py alpha.yaml [--runs N]

``alpha.yaml`` is a vantage6 4.x node config (as ``v6node start`` reads it). The node logs in,
takes tasks like ``v6node start`` does, and this program prints each run's lifecycle
events; after N finished runs (default: never) it stops the node, which removes what it
made in Docker. Ctrl-C stops it too.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from v6node.app import EmbeddedNode, RunEvent, Stage, load_config


def describe(event: RunEvent) -> str:
    status = f": {event.status}" if event.status is not None else ""
    return f"run {event.run_id} of task {event.task_id} ({event.image}) {event.stage}{status}"


async def main(config_file: Path, runs: int | None) -> None:
    config = load_config(config_file, default_data_dir=str(Path.home() / ".local/share/vantage6/node" / config_file.stem))
    node = EmbeddedNode(config)
    events = node.events()  # subscribe before the start, so that no event is missed
    finished = 0
    async with node:  # returns once the node is online; leaving the block stops it
        print(f"node {config.name} is online at {config.api_base}", flush=True)
        async for event in events:
            print(describe(event), flush=True)
            if event.stage is Stage.FINISHED:
                finished += 1
                if runs is not None and finished >= runs:
                    break
    print(f"node {config.name} stopped after {finished} finished run(s)", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="the node's YAML config file")
    parser.add_argument("--runs", type=int, help="stop after this many finished runs")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(arguments.config, arguments.runs))
