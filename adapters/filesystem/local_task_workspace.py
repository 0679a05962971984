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

    async def add_file(self, run_id: int, name: str, data: bytes) -> None:
        await asyncio.to_thread(self._add_file, run_id, name, data)

    def _add_file(self, run_id: int, name: str, data: bytes) -> None:
        path = self._inside(run_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    async def copy_in(self, run_id: int, source: str, name: str) -> None:
        await asyncio.to_thread(self._copy_in, run_id, source, name)

    def _copy_in(self, run_id: int, source: str, name: str) -> None:
        target = self._inside(run_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(source):
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, target)

    def _inside(self, run_id: int, name: str) -> Path:
        folder = self.folder(run_id).resolve()
        path = (folder / name).resolve()
        if folder not in path.parents:
            raise ValueError(f"{name!r} is not inside the task folder of run {run_id}")
        return path

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
        return await asyncio.to_thread(self._run_ids)

    def _run_ids(self) -> list[int]:
        if not self._root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self._root.iterdir() if (m := _FOLDER.match(p.name)))

    async def runs_with_output(self) -> list[int]:
        return await asyncio.to_thread(self._runs_with_output)

    def _runs_with_output(self) -> list[int]:
        if not self._root.is_dir():
            return []
        found = []
        for path in self._root.iterdir():
            match = _FOLDER.match(path.name)
            output = path / "output"
            if match and output.is_file() and output.stat().st_size > 0:
                found.append(int(match.group(1)))
        return sorted(found)
