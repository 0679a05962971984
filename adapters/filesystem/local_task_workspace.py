"""Task folders on the node's disk: ``<tasks dir>/task-<run id>/{input,output,token}``."""
from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

from v6node.domain.containers import task_folder_name

_FOLDER = re.compile(r"^task-(\d{9,})$")


class LocalTaskWorkspace:
    """Each run's folder is the only part of the disk its algorithm container gets to see."""

    def __init__(self, tasks_dir: str) -> None:
        self._root = Path(tasks_dir)

    def tasks_dir(self) -> str:
        return str(self._root)

    def folder(self, run_id: int) -> Path:
        return self._root / task_folder_name(run_id)

    async def prepare(self, run_id: int, input_data: bytes, token: str) -> None:
        await asyncio.to_thread(self._prepare, run_id, input_data, token)

    def _prepare(self, run_id: int, input_data: bytes, token: str) -> None:
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder = self.folder(run_id)
        folder.mkdir(exist_ok=True)
        # The algorithm may run as any user; it must be able to write its output.
        os.chmod(folder, 0o777)
        (folder / "input").write_bytes(input_data)
        (folder / "token").write_text(token, encoding="ascii")
        output = folder / "output"
        output.write_bytes(b"")
        os.chmod(output, 0o666)

    async def read_output(self, run_id: int, limit: int) -> bytes:
        return await asyncio.to_thread(self._read_output, run_id, limit)

    def _read_output(self, run_id: int, limit: int) -> bytes:
        path = self.folder(run_id) / "output"
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > limit:
                raise ValueError(f"the output file is {size} bytes, more than the limit of {limit} (max_output_size)")
            return handle.read(limit + 1)

    async def remove(self, run_id: int) -> None:
        await asyncio.to_thread(shutil.rmtree, self.folder(run_id), True)

    async def run_ids(self) -> list[int]:
        if not self._root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self._root.iterdir() if (m := _FOLDER.match(p.name)))
